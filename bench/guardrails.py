"""P8 guardrail latency: from a guardrail change to an existing agent's write being denied at the apiserver.

Called by ``bench.__main__``. The operator runs as a process with an hour-long resync, so every latency measured
is the event path (a policy, namespace or RBAC change reaching the agent's pass). Three scenarios, ``rounds``
times each, each on one Ready agent whose ServiceAccount token writes ConfigMaps:
- policy: an AgentPolicy allowing only read verbs is created for the agent's namespace (deleted between rounds);
- relabel: the namespace gets the label a read-only policy selects (removed between rounds);
- owner: under an ``ownerCeiling`` policy, the owner's RoleBinding that holds the write is deleted (recreated).
A latency is the time from the change to the first server-side dry-run ConfigMap create answered 403 (probed
back to back, ``probe_interval`` apart): an upper bound, resolution about one probe round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from agentid.api import v1alpha1
from agentid.kube import errors, resources
from agentid.kube.client import KubeClient
from bench import report
from bench.environment import (
    BenchCluster,
    create_namespace,
    provision,
    running_operator,
    service_account_token,
    unique,
)

SCENARIOS = ("policy", "relabel", "owner")
WRITER = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create"]}
TIMEOUT = 60.0
RBAC = "rbac.authorization.k8s.io"
READ_ONLY = {"allowedVerbs": ["get", "list", "watch"]}
OWNER = "bench-owner@example.com"


def _policy(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.POLICY_KIND,
        "metadata": {"name": name},
        "spec": {"namespaceSelector": {"matchLabels": labels}, **spec},
    }


class Probe:
    def __init__(self, session: aiohttp.ClientSession, server: str, namespace: str, token: str) -> None:
        self.session = session
        self.url = f"{server}/api/v1/namespaces/{namespace}/configmaps?dryRun=All"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def status(self) -> int:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "probe-"}}
        async with self.session.post(self.url, json=body, headers=self.headers) as response:
            await response.read()
            return response.status

    async def until(self, wanted: Callable[[int], bool], started: float, interval: float) -> float | None:
        while time.perf_counter() - started < TIMEOUT:
            if wanted(await self.status()):
                return time.perf_counter() - started
            await asyncio.sleep(interval)
        return None


async def _measure(
    probe: Probe, change: Callable[[], Awaitable[Any]], undo: Callable[[], Awaitable[Any]], interval: float
) -> float | None:
    if await probe.until(lambda status: status == 201, time.perf_counter(), interval) is None:
        raise RuntimeError("the agent cannot write before the change")
    started = time.perf_counter()
    await change()
    latency = await probe.until(lambda status: status == 403, started, interval)
    await undo()
    return latency


async def run(cluster: BenchCluster, *, rounds: int, probe_interval: float) -> dict[str, Any]:
    guarded_ns, owner_ns = unique("bench-p8"), unique("bench-p8-owner")
    label = f"agentid.dev/{guarded_ns}"
    client = await cluster.client()
    samples: dict[str, list[float]] = {scenario: [] for scenario in SCENARIOS}
    unclosed = dict.fromkeys(SCENARIOS, 0)
    policies: list[str] = []
    try:
        for namespace in (guarded_ns, owner_ns):
            await create_namespace(client, namespace)
        await _owner_rights(client, owner_ns)
        standing = (
            _policy(unique("bench-p8-relabel"), {label: "restricted"}, **READ_ONLY),
            _policy(unique("bench-p8-ceiling"), {"kubernetes.io/metadata.name": owner_ns}, ownerCeiling=True),
        )
        for body in standing:
            await client.create(resources.AGENT_POLICIES, body)
            policies.append(body["metadata"]["name"])
        args = ["--resync-seconds=3600"]
        with running_operator(cluster, [guarded_ns, owner_ns], label=guarded_ns, extra_args=args):
            await provision(client, guarded_ns, ["guarded"], permissions=[WRITER])
            await provision(client, owner_ns, ["owned"], permissions=[WRITER], owner={"kind": "User", "name": OWNER})
            context = cluster.ssl_context()
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
                server = str(client.configuration.host)
                probes = {
                    "policy": Probe(
                        session, server, guarded_ns, await service_account_token(client, guarded_ns, "guarded")
                    ),
                    "owner": Probe(session, server, owner_ns, await service_account_token(client, owner_ns, "owned")),
                }
                probes["relabel"] = probes["policy"]
                scenarios = _scenarios(client, guarded_ns, owner_ns, label, policies)
                for _ in range(rounds):
                    for scenario in SCENARIOS:
                        change, undo = scenarios[scenario]
                        latency = await _measure(probes[scenario], change, undo, probe_interval)
                        if latency is None:
                            unclosed[scenario] += 1
                        else:
                            samples[scenario].append(latency)
    finally:
        for name in policies:
            with contextlib.suppress(errors.ApiError):
                await client.request("DELETE", resources.AGENT_POLICIES.path(None, name))
        await client.close()

    table = report.Table(
        f"P8 guardrail latency to 403 ({rounds} rounds, resync 1 h)",
        ["scenario", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "not closed"],
    )
    summary: dict[str, Any] = {}
    for scenario in SCENARIOS:
        stats = report.latency_summary(samples[scenario]) | {"not_closed": unclosed[scenario]}
        summary[scenario] = stats
        table.add(scenario, *(stats[key] for key in ("n", "p50_ms", "p95_ms", "p99_ms", "max_ms", "not_closed")))
    print(table.render(), flush=True)
    return {
        "benchmark": "P8",
        "rounds": rounds,
        "probe_interval_seconds": probe_interval,
        "summary": summary,
        "samples_ms": {scenario: [round(s * 1000, 2) for s in values] for scenario, values in samples.items()},
    }


def _owner_binding(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "bench-owner", "namespace": namespace},
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "bench-owner"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": OWNER}],
    }


async def _owner_rights(client: KubeClient, namespace: str) -> None:
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update"]}
    role = {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": {"name": "bench-owner"}, "rules": [rule]}
    await client.create(resources.ROLES, role, namespace)
    await client.create(resources.ROLE_BINDINGS, _owner_binding(namespace), namespace)


Change = Callable[[], Awaitable[Any]]


def _scenarios(
    client: KubeClient, guarded_ns: str, owner_ns: str, label: str, policies: list[str]
) -> dict[str, tuple[Change, Change]]:
    async def add_policy() -> None:
        body = _policy(unique("bench-p5-policy"), {"kubernetes.io/metadata.name": guarded_ns}, **READ_ONLY)
        policies.append(body["metadata"]["name"])
        await client.create(resources.AGENT_POLICIES, body)

    async def remove_policy() -> None:
        await client.request("DELETE", resources.AGENT_POLICIES.path(None, policies.pop()))

    async def relabel() -> None:
        await client.patch(resources.NAMESPACES, guarded_ns, {"metadata": {"labels": {label: "restricted"}}})

    async def unlabel() -> None:
        await client.patch(resources.NAMESPACES, guarded_ns, {"metadata": {"labels": {label: None}}})

    async def revoke_owner() -> None:
        await client.request("DELETE", resources.ROLE_BINDINGS.path(owner_ns, "bench-owner"))

    async def restore_owner() -> None:
        await client.create(resources.ROLE_BINDINGS, _owner_binding(owner_ns), owner_ns)

    return {
        "policy": (add_policy, remove_policy),
        "relabel": (relabel, unlabel),
        "owner": (revoke_owner, restore_owner),
    }
