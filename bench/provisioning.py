"""P1 provisioning: N AgentIdentities created until all are Ready, the operator against the raw API bound.

Called by ``bench.__main__``. Each round creates N agents in a fresh namespace with the same client and
concurrency, and a watch records when each one is Ready (Ready=True for its generation):
- operator: ``python -m agentid run`` (a separate process, started and warmed up before the clock starts) does
  the work: finalizer, ServiceAccount, key Secret, Role, RoleBinding, status, a Provisioned Event;
- baseline: a raw ``kubernetes.aio`` client does the least an ideal controller could: from each create response
  it POSTs the same ServiceAccount, key Secret, Role and RoleBinding (built by the same pure builders, keys
  generated the same way) and patches a Ready status, with the same bound on requests in flight (64 by default,
  the operator's ``--max-in-flight``) and no response deserialisation.
Rounds alternate (baseline, operator) ``repeat`` times; the ratio is operator time / baseline time.
Requests per agent and CPU seconds of each process come from the audit log and /proc.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psutil
from kubernetes.aio import client as aio_client

from agentid.api import v1alpha1
from agentid.api.v1alpha1 import AgentIdentity
from agentid.domain import desired, keys, naming
from agentid.domain.supervision import Access
from agentid.kube import resources
from agentid.kube.client import load_configuration
from bench import audit, report
from bench.environment import (
    BenchCluster,
    OperatorProcess,
    ReadyWatch,
    agent_manifest,
    create_agents,
    create_namespace,
    unique,
)

OPERATOR_AGENTS = ("agentid-operator", "kopf")
RAW_AGENT = "bench-raw"
MERGE_PATCH = "application/merge-patch+json"


class CpuMeter:
    """CPU seconds used by named processes between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        out = {}
        for name, process in self.processes.items():
            try:
                times = process.cpu_times()
                out[name] = times.user + times.system
            except psutil.NoSuchProcess:
                out[name] = self._before.get(name, 0.0)
        return out

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> dict[str, float]:
        after = self._now()
        return {name: round(after[name] - self._before.get(name, 0.0), 2) for name in after}


def _cluster_pids(cluster: BenchCluster) -> dict[str, int]:
    return {process.name: process.pid for process in cluster.local.processes} | {"bench": psutil.Process().pid}


async def operator_round(cluster: BenchCluster, n: int, concurrency: int) -> dict[str, Any]:
    namespace = unique("bench-p1-op")
    setup = await cluster.client(max_in_flight=concurrency)
    try:
        await create_namespace(setup, namespace)
        operator = OperatorProcess(cluster, [namespace], label=namespace, extra_args=[f"--max-in-flight={concurrency}"])
        try:
            operator.wait_live()

            async def create(names: list[str]) -> None:
                await create_agents(setup, namespace, names)

            timing, cpu, requests = await _measured(
                cluster, namespace, n=n, concurrency=concurrency, create=create, pids={"operator": operator.pid}
            )
        finally:
            operator.stop()
    finally:
        await setup.close()
    return {"kind": "operator", **timing, "cpu_seconds": cpu, **_per_agent(requests, n)}


async def baseline_round(cluster: BenchCluster, n: int, concurrency: int) -> dict[str, Any]:
    namespace = unique("bench-p1-raw")
    setup = await cluster.client(max_in_flight=concurrency)
    configuration = await load_configuration(str(cluster.kubeconfig))
    configuration.connection_pool_maxsize = concurrency
    api = aio_client.ApiClient(configuration)
    api.user_agent = f"{RAW_AGENT}/1"
    controller = RawController(api, concurrency)
    try:
        await create_namespace(setup, namespace)

        async def create(names: list[str]) -> None:
            await asyncio.gather(*(controller.provision(setup, namespace, name) for name in names))

        timing, cpu, requests = await _measured(
            cluster, namespace, n=n, concurrency=concurrency, create=create, pids={}
        )
    finally:
        await api.close()
        await setup.close()
    return {"kind": "baseline", **timing, "cpu_seconds": cpu, **_per_agent(requests, n)}


async def _measured(
    cluster: BenchCluster,
    namespace: str,
    *,
    n: int,
    concurrency: int,
    create: Callable[[list[str]], Awaitable[None]],
    pids: dict[str, int],
) -> tuple[dict[str, Any], dict[str, float], dict[str, int]]:
    """Warm up (connections, caches, the operator's first listing) with a batch that is not timed, then create N
    agents and wait until the watch has seen all of them Ready."""
    warmup = [f"warmup-{i:03d}" for i in range(min(n, concurrency))]
    names = [f"agent-{i:05d}" for i in range(n)]
    watcher = await cluster.client()
    try:
        async with ReadyWatch(watcher, namespace) as ready:
            await create(warmup)
            await ready.wait_ready(warmup, within=120)
            meter = CpuMeter(_cluster_pids(cluster) | pids)
            reader = audit.AuditReader(cluster.audit_log)
            mark = reader.mark()
            meter.start()
            started = time.monotonic()
            await create(names)
            await ready.wait_ready(names, within=max(120.0, n * 0.5))
            finished = max(ready.ready_at[name] for name in names)
            cpu = meter.stop()
    finally:
        await watcher.close()
    requests = audit.count_requests(reader.since(mark), (*OPERATOR_AGENTS, RAW_AGENT))
    seconds = finished - started
    return {"seconds": round(seconds, 3), "agents_per_second": round(n / seconds, 1)}, cpu, requests


def _per_agent(requests: dict[str, int], n: int) -> dict[str, Any]:
    return {
        "writes_per_agent": round(audit.writes(requests) / n, 2),
        "reads_per_agent": round(audit.reads(requests) / n, 2),
        "requests": requests,
    }


class RawController:
    """The least an ideal controller could do per agent, on a raw kubernetes.aio client."""

    def __init__(self, api: aio_client.ApiClient, concurrency: int) -> None:
        self.core = aio_client.CoreV1Api(api)
        self.rbac = aio_client.RbacAuthorizationV1Api(api)
        self.custom = aio_client.CustomObjectsApi(api)
        self.in_flight = asyncio.Semaphore(concurrency)

    async def _send(self, call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> None:
        async with self.in_flight:
            response = await call(*args, **kwargs)
            payload = await response.read()
            if response.status >= 300:
                raise RuntimeError(f"baseline request failed: {response.status} {payload[:300]!r}")

    async def provision(self, creator: Any, namespace: str, name: str) -> None:
        body = await creator.create(resources.AGENT_IDENTITIES, agent_manifest(name, namespace), namespace)
        agent = AgentIdentity.from_body(body)
        signing_key = keys.generate(agent.spec.credentials.key_algorithm)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        access = Access(rules=tuple(agent.spec.permissions))
        secret = desired.key_secret(
            agent,
            private_pem=signing_key.private_pem(),
            key_id=signing_key.key_id,
            algorithm=agent.spec.credentials.key_algorithm.value,
            created_at=now.isoformat(),
        )
        agent_id = naming.agent_id("cluster.local", namespace, name)
        sa = desired.service_account(agent, agent_id)
        role, binding = desired.role(agent, access), desired.role_binding(agent)
        await asyncio.gather(
            self._send(self.core.create_namespaced_service_account_without_preload_content, namespace, sa),
            self._send(self.core.create_namespaced_secret_without_preload_content, namespace, secret),
            self._send(self.rbac.create_namespaced_role_without_preload_content, namespace, role),
            self._send(self.rbac.create_namespaced_role_binding_without_preload_content, namespace, binding),
        )
        status = _ready_status(agent, agent_id, signing_key, now)
        await self._send(
            self.custom.patch_namespaced_custom_object_status_without_preload_content,
            v1alpha1.GROUP,
            v1alpha1.VERSION,
            namespace,
            v1alpha1.PLURAL,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )


def _ready_status(agent: AgentIdentity, agent_id: str, key: keys.SigningKey, now: dt.datetime) -> dict[str, Any]:
    stamp = now.isoformat().replace("+00:00", "Z")
    generation = agent.metadata.generation

    def condition(type_: str, reason: str) -> dict[str, Any]:
        return {
            "type": type_,
            "status": "True" if type_ != "Revoked" else "False",
            "reason": reason,
            "message": reason,
            "observedGeneration": generation,
            "lastTransitionTime": stamp,
        }

    return {
        "observedGeneration": generation,
        "phase": "Active",
        "agentID": agent_id,
        "serviceAccountName": naming.service_account(agent.name),
        "supervision": "Autonomous",
        "keys": [
            {
                "keyID": key.key_id,
                "algorithm": key.algorithm.value,
                "state": "Active",
                "createdAt": stamp,
                "jwk": keys.public_only(key.jwk),
            }
        ],
        "conditions": [
            condition("Revoked", "NotRevoked"),
            condition("CredentialsReady", "KeyActive"),
            condition("AccessReady", "Granted"),
            condition("Ready", "Provisioned"),
        ],
    }


async def run(cluster: BenchCluster, *, sizes: Sequence[int], concurrency: int, repeat: int) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    table = report.Table(
        "P1 provisioning (until all Ready)",
        ["N", "round", "baseline s", "operator s", "ratio", "baseline ag/s", "operator ag/s", "op writes/agent"],
    )
    summary = []
    for n in sizes:
        ratios, op_rates, raw_rates = [], [], []
        for attempt in range(1, repeat + 1):
            raw = await baseline_round(cluster, n, concurrency)
            op = await operator_round(cluster, n, concurrency)
            ratio = op["seconds"] / raw["seconds"]
            ratios.append(ratio)
            op_rates.append(op["agents_per_second"])
            raw_rates.append(raw["agents_per_second"])
            rounds.append({"n": n, "round": attempt, "baseline": raw, "operator": op, "ratio": round(ratio, 3)})
            table.add(
                n,
                attempt,
                raw["seconds"],
                op["seconds"],
                round(ratio, 2),
                raw["agents_per_second"],
                op["agents_per_second"],
                op["writes_per_agent"],
            )
        summary.append(
            {
                "n": n,
                "ratio": report.spread(ratios),
                "operator_agents_per_second": report.spread(op_rates),
                "baseline_agents_per_second": report.spread(raw_rates),
            }
        )
    print(table.render(), flush=True)
    return {"benchmark": "P1", "concurrency": concurrency, "repeat": repeat, "summary": summary, "rounds": rounds}
