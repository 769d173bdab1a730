"""P4 footprint: the operator's memory at 0, 1000 and 5000 agents, and a restart at the largest size.

Called by ``bench.__main__``. The operator runs as its own process (``python -m agentid run``) so psutil measures
its resident set alone: current RSS once all agents are Ready and the process is quiet, and VmHWM (the peak).
Then it is stopped (SIGTERM) and started again: resume time is from the new process's start until its
``agentid_reconcile_total`` counter has counted one pass per agent; the API writes during the resume (and a quiet
period after it) are counted at the apiserver, from its audit log, for the operator's two clients (its own REST
client and Kopf's). The target is none at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from bench import audit, report
from bench.environment import (
    BenchCluster,
    BenchError,
    OperatorProcess,
    ReadyWatch,
    create_agents,
    create_namespace,
    unique,
)

OPERATOR_AGENTS = ("agentid-operator", "kopf")
QUIET_SECONDS = 5.0  # after the resume: anything still written would show up here
CREATE_BATCH = 500


async def _settled_rss(operator: OperatorProcess, seconds: float = 2.0) -> float:
    """RSS after the process has been idle a moment (allocations from the last burst have settled)."""
    await asyncio.sleep(seconds)
    return round(operator.rss_mb(), 1)


async def _grow(client: Any, namespace: str, start: int, stop: int) -> float:
    names = [f"agent-{i:05d}" for i in range(start, stop)]
    started = time.monotonic()
    async with ReadyWatch(client, namespace) as ready:
        for offset in range(0, len(names), CREATE_BATCH):
            await create_agents(client, namespace, names[offset : offset + CREATE_BATCH])
        await ready.wait_ready(names, within=max(120.0, len(names) * 0.5))
    return time.monotonic() - started


async def _resume(operator: OperatorProcess, agents: int, within: float) -> float | None:
    """Seconds until the restarted operator has reconciled every agent once (None: not within ``within``)."""
    started = time.monotonic()
    while (await operator.metric("agentid_reconcile_total") or 0) < agents:
        if not operator.alive():
            raise BenchError(f"the restarted operator exited:\n{operator.tail()}")
        if time.monotonic() - started > within:
            return None
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def run_once(cluster: BenchCluster, scale: Sequence[int], resume_timeout: float) -> dict[str, Any]:
    namespace = unique("bench-p4")
    client = await cluster.client()
    try:
        await create_namespace(client, namespace)
        operator = OperatorProcess(cluster, [namespace], label=namespace)
        points: list[dict[str, Any]] = []
        try:
            operator.wait_live()
            points.append({"agents": 0, "rss_mb": await _settled_rss(operator), "peak_rss_mb": None})
            count = 0
            for target in sorted(scale):
                seconds = await _grow(client, namespace, count, target)
                count = target
                points.append(
                    {
                        "agents": count,
                        "rss_mb": await _settled_rss(operator),
                        "peak_rss_mb": round(operator.peak_rss_mb(), 1),
                        "provisioning_seconds": round(seconds, 1),
                    }
                )
        finally:
            shutdown = operator.stop()
        reader = audit.AuditReader(cluster.audit_log)
        mark = reader.mark()
        started = time.monotonic()
        restarted = OperatorProcess(cluster, [namespace], label=f"{namespace}-restart")
        try:
            resume = await _resume(restarted, count, within=resume_timeout)
            resumed_at = time.monotonic() - started if resume is not None else None
            rss_after = round(restarted.rss_mb(), 1)
            peak_after = round(restarted.peak_rss_mb(), 1)
            await asyncio.sleep(QUIET_SECONDS)
            requests = audit.count_requests(reader.since(mark), OPERATOR_AGENTS)
        finally:
            restarted.stop()
    finally:
        await client.close()
    return {
        "points": points,
        "restart": {
            "agents": count,
            "shutdown_seconds": round(shutdown, 2),
            "resume_seconds": round(resumed_at, 2) if resumed_at is not None else None,
            "resume_timeout_seconds": resume_timeout,
            "rss_mb_after_resume": rss_after,
            "peak_rss_mb_during_resume": peak_after,
            "writes": audit.writes(requests),
            "requests": requests,
        },
    }


async def run(cluster: BenchCluster, *, scale: Sequence[int], repeat: int, resume_timeout: float) -> dict[str, Any]:
    rounds = [await run_once(cluster, scale, resume_timeout) for _ in range(repeat)]
    table = report.Table(
        "P4 footprint (operator process)",
        ["round", "agents", "RSS MB", "peak RSS MB", "provisioning s", "resume s", "writes on resume"],
    )
    for number, result in enumerate(rounds, 1):
        for point in result["points"]:
            table.add(
                number,
                point["agents"],
                point["rss_mb"],
                point["peak_rss_mb"],
                point.get("provisioning_seconds"),
                "",
                "",
            )
        restart = result["restart"]
        table.add(
            number,
            f"{restart['agents']} (restarted)",
            restart["rss_mb_after_resume"],
            restart["peak_rss_mb_during_resume"],
            "",
            restart["resume_seconds"] if restart["resume_seconds"] is not None else f"> {resume_timeout:.0f}",
            restart["writes"],
        )
    print(table.render(), flush=True)
    largest = max(scale)
    summary = {
        "rss_mb": {
            str(agents): report.spread([p["rss_mb"] for r in rounds for p in r["points"] if p["agents"] == agents])
            for agents in (0, *sorted(scale))
        },
        f"resume_seconds_{largest}": report.spread(
            [r["restart"]["resume_seconds"] for r in rounds if r["restart"]["resume_seconds"] is not None]
        ),
        "resumed": [r["restart"]["resume_seconds"] is not None for r in rounds],
        "writes_on_resume": [r["restart"]["writes"] for r in rounds],
    }
    return {"benchmark": "P4", "scale": list(scale), "repeat": repeat, "summary": summary, "rounds": rounds}
