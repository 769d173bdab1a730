"""P5 failover: the operator's leader is lost in the middle of a provisioning burst.

Called by ``bench.__main__``. Two operator processes run exactly as the chart runs its replicas: leader election on
a Lease with the default timings, both serving the admission webhook, which the API server reaches through a
stand-in for the webhook Service (``bench.serviceproxy``: round robin over live endpoints, a dead one removed
about a second after its process goes, never a retry). A writer creates agents at a steady rate through admission;
a third of the way in, the leader is stopped — ``kill -9`` (a crash: the follower must wait for the Lease to
expire) and, in a second round, SIGTERM (a drain or rollout: the leader releases the Lease). Measured from the stop:
(a) until the Lease names the other replica, and until the first agent becomes Ready after that (reconciling has
resumed); until every agent of the burst is Ready; (b) agent writes answered by admission (created, or refused
with the webhook's own answer) against those failed because no webhook answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentid.devcluster.ports import free_port
from agentid.domain import shards
from agentid.kube import errors, resources
from agentid.kube.client import KubeClient
from agentid.webhooks.configuration import webhook_configurations
from bench import report
from bench.environment import (
    TOKEN_NAMESPACE,
    BenchCluster,
    BenchError,
    OperatorProcess,
    ReadyWatch,
    agent_manifest,
    create_namespace,
    unique,
)
from bench.serviceproxy import Endpoint, ServiceProxy

STOPS = {"kill": signal.SIGKILL, "term": signal.SIGTERM}
CREATE_INTERVAL = 0.05  # one agent write every 50 ms through admission, before, during and after the failover


@dataclass
class Writes:
    """What admission answered for each agent write of the burst."""

    created: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # the webhook answered: no
    unanswered: list[str] = field(default_factory=list)  # no webhook answered (failurePolicy Fail refused it)
    a_third_done: asyncio.Event = field(default_factory=asyncio.Event)


async def _writer(client: KubeClient, namespace: str, names: Sequence[str], writes: Writes) -> None:
    for name in names:
        started = time.monotonic()
        try:
            await client.create(resources.AGENT_IDENTITIES, agent_manifest(name, namespace), namespace)
            writes.created.append(name)
        except errors.ApiError as error:
            (writes.unanswered if "failed calling webhook" in str(error) else writes.refused).append(name)
        if len(writes.created) + len(writes.refused) + len(writes.unanswered) >= len(names) // 3:
            writes.a_third_done.set()
        await asyncio.sleep(max(0.0, CREATE_INTERVAL - (time.monotonic() - started)))


async def _holder(client: KubeClient, lease_name: str) -> str | None:
    lease = await client.get(resources.LEASES, lease_name, TOKEN_NAMESPACE)
    return None if lease is None else (lease.get("spec") or {}).get("holderIdentity") or None


async def _until_holder(client: KubeClient, lease_name: str, wanted: Any, within: float) -> tuple[str, float]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        holder = await _holder(client, lease_name)
        if holder is not None and wanted(holder):
            return holder, time.monotonic()
        await asyncio.sleep(0.05)
    raise BenchError(f"no Lease holder as wanted within {within}s (last: {await _holder(client, lease_name)})")


async def _round(
    cluster: BenchCluster, client: KubeClient, *, agents: int, stop: str, timings: shards.ElectionTimings
) -> dict[str, Any]:
    namespace = unique(f"p5-{stop}")
    await create_namespace(client, namespace)
    serving = cluster.local.ca.serving(f"p5-webhook-{namespace}", "127.0.0.1")
    ports = [free_port() for _ in range(2)]
    lease_name = shards.lease_names(f"p5-{namespace}", 1)[0]  # a Lease of its own: no holder left by a round before
    replicas = [
        OperatorProcess(
            cluster,
            [namespace],
            label=f"p5-{stop}-{index}",
            extra_args=[
                "--leader-election",
                f"--leader-election-namespace={TOKEN_NAMESPACE}",
                f"--leader-election-name=p5-{namespace}",
                f"--lease-duration={timings.lease_duration}",
                f"--renew-deadline={timings.renew_deadline}",
                f"--retry-period={timings.retry_period}",
                f"--webhook-port={port}",
                f"--webhook-cert={serving.cert}",
                f"--webhook-key={serving.key}",
            ],
            env={"POD_NAME": f"p5-{stop}-{index}"},
        )
        for index, port in enumerate(ports)
    ]
    configurations: list[dict[str, Any]] = []
    try:
        for replica in replicas:
            replica.wait_live()
        endpoints = [Endpoint(port=port, alive=replica.alive) for port, replica in zip(ports, replicas, strict=True)]
        async with ServiceProxy(endpoints) as service:
            configurations = webhook_configurations(
                base_url=f"https://127.0.0.1:{service.port}",
                ca_bundle=cluster.local.ca.pem,
                namespace_selector={"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                name=f"p5-{namespace}",
                include_policies=False,
            )
            for configuration in configurations:
                cluster.kubectl("apply", "-f", "-", input_text=json.dumps(configuration))
            leader, _ = await _until_holder(client, lease_name, lambda holder: True, within=60)
            by_name = {f"p5-{stop}-{index}": replica for index, replica in enumerate(replicas)}
            names = [f"agent-{index:04d}" for index in range(agents)]
            writes = Writes()
            async with ReadyWatch(client, namespace) as ready:
                writer = asyncio.create_task(_writer(client, namespace, names, writes))
                await writes.a_third_done.wait()
                stopped = time.monotonic()
                by_name[leader].signal(STOPS[stop])
                successor, taken_over = await _until_holder(
                    client, lease_name, lambda holder: holder != leader, within=120
                )
                await writer
                await ready.wait_ready(writes.created, within=300)
                resumed = min((at for at in ready.ready_at.values() if at >= taken_over), default=None)
                all_ready = max(ready.ready_at[name] for name in writes.created)
    finally:
        for configuration in configurations:
            kind, name = configuration["kind"], configuration["metadata"]["name"]
            with contextlib.suppress(BenchError):
                cluster.kubectl("delete", kind, name, "--ignore-not-found")
        for replica in replicas:
            replica.stop()
    return {
        "stop": stop,
        "agents": agents,
        "leader": leader,
        "successor": successor,
        "lease_taken_over_s": round(taken_over - stopped, 3),
        "reconciling_resumed_s": None if resumed is None else round(resumed - stopped, 3),
        "all_ready_s": round(all_ready - stopped, 3),
        "writes_created": len(writes.created),
        "writes_refused_by_webhook": len(writes.refused),
        "writes_unanswered": len(writes.unanswered),
        "connections_refused_by_service": service.refused,
        # the API server keeps its webhook connections open: how many went to the leader and to the other replica
        "webhook_connections_to_leader": next(
            e.connections for e, r in zip(endpoints, replicas, strict=True) if r is by_name[leader]
        ),
        "webhook_connections_to_successor": next(
            e.connections for e, r in zip(endpoints, replicas, strict=True) if r is by_name[successor]
        ),
    }


async def run(
    cluster: BenchCluster, *, agents: int, repeat: int, timings: shards.ElectionTimings | None = None
) -> dict[str, Any]:
    """``timings``: the Lease timings of both replicas (default: the chart's, client-go's 15/10/2 s)."""
    timings = timings or shards.ElectionTimings()
    client = await cluster.client()
    rounds: list[dict[str, Any]] = []
    try:
        for _ in range(repeat):
            for stop in STOPS:
                rounds.append(await _round(cluster, client, agents=agents, stop=stop, timings=timings))
    finally:
        await client.close()
    table = report.Table(
        f"P5 operator failover (leader stopped a third into a burst; 2 replicas, Lease {timings.lease_duration:g} s)",
        [
            "stop",
            "agents",
            "Lease taken over s",
            "reconciling resumed s",
            "all Ready s",
            "writes answered",
            "unanswered",
        ],
    )
    for result in rounds:
        table.add(
            result["stop"],
            result["agents"],
            result["lease_taken_over_s"],
            result["reconciling_resumed_s"],
            result["all_ready_s"],
            result["writes_created"] + result["writes_refused_by_webhook"],
            result["writes_unanswered"],
        )
    print(table.render(), flush=True)
    return {"rounds": rounds, "create_interval_s": CREATE_INTERVAL, "lease_timings": dataclasses.asdict(timings)}
