"""P7 the token sidecar (``agentid token-agent``): suspension → token files removed, revocation → removed,
resume → back, the CPU a refresh costs, and the sidecar's memory.

Called by ``bench.__main__``. The operator, the token service and one sidecar per agent run as processes; each
sidecar is configured as Pod injection configures it (environment) and fed a TokenRequest-minted ServiceAccount
token, like the kubelet's projected one. A latency is from sending the spec patch to the moment the benchmark
sees the token file gone (or back), polled every millisecond. Refresh overhead: two sidecars side by side for the
same window, one refreshing short-lived tokens, one idle (polling only); the difference in CPU per refresh.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from agentid.client import environment as env
from agentid.devcluster.ports import free_port
from agentid.kube import resources
from agentid.kube.client import KubeClient
from bench import report
from bench.environment import (
    KUBE_AUDIENCE,
    BenchCluster,
    BenchError,
    Child,
    TokenServiceProcess,
    create_namespace,
    provision,
    running_operator,
    service_account_token,
    unique,
)

POLL = 0.001
TARGET_RSS_MB = 40


class SidecarProcess(Child):
    """``python -m agentid token-agent`` with the environment Pod injection writes."""

    def __init__(
        self, cluster: BenchCluster, folder: Path, *, agent: str, namespace: str, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.tokens_dir = folder / "tokens"
        self.tokens_dir.mkdir(parents=True)
        issuer = cluster.endpoint.issuer
        environment = {
            env.AGENT: f"{namespace}/{agent}",
            env.TOKEN_URL: f"{issuer}/token",
            env.INTROSPECTION_URL: f"{issuer}/introspect",
            env.CA_FILE: cluster.endpoint.ca,
            env.SA_TOKEN_FILE: str(folder / "token"),
            env.TOKENS_DIR: str(self.tokens_dir),
            env.AUDIENCES: KUBE_AUDIENCE,
        }
        argv = [
            sys.executable,
            "-m",
            "agentid",
            "token-agent",
            "--health-host=127.0.0.1",
            f"--health-port={free_port()}",
            *extra_args,
        ]
        super().__init__(f"sidecar-{agent}", argv, folder / "sidecar.log", env=environment)

    @property
    def token_file(self) -> Path:
        return self.tokens_dir / env.token_file_name(KUBE_AUDIENCE)


async def _until(check: Any, *, within: float, what: str, process: Child) -> float:
    """Seconds until ``check()`` holds, polled every millisecond."""
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > within:
            raise BenchError(f"not within {within}s: {what}\n{process.tail()}")
        await asyncio.sleep(POLL)
    return time.perf_counter() - started


async def _patch_and_time(
    client: KubeClient, namespace: str, name: str, spec: dict[str, Any], sidecar: SidecarProcess, *, gone: bool
) -> float:
    started = time.perf_counter()
    await client.patch(resources.AGENT_IDENTITIES, name, {"spec": spec}, namespace)
    what = "token file removed" if gone else "token file back"
    await _until(lambda: sidecar.token_file.exists() != gone, within=60, what=what, process=sidecar)
    return time.perf_counter() - started


async def run(
    cluster: BenchCluster, *, agents: int, rounds: int, refresh_window: float, refresh_lifetime: int, repeat: int
) -> dict[str, Any]:
    namespace = unique("bench-p7")
    client = await cluster.client()
    service = TokenServiceProcess(cluster, label="p7")
    samples: dict[str, list[float]] = {"suspend_removed": [], "resume_back": [], "revoke_removed": []}
    sidecars: list[SidecarProcess] = []
    overhead: list[dict[str, float]] = []
    try:
        await create_namespace(client, namespace)
        service.wait_ready(cluster.ssl_context())
        with running_operator(cluster, [namespace], label=namespace):
            names = [f"p5-{index}" for index in range(agents)] + ["p5-refresh", "p5-idle"]
            await provision(client, namespace, names)
            for name in names:
                folder = cluster.workdir / namespace / name
                folder.mkdir(parents=True)
                token = await service_account_token(
                    client, namespace, name, audience=cluster.endpoint.issuer, seconds=3600
                )
                (folder / "token").write_text(token)
                extra = (f"--token-lifetime={refresh_lifetime}",) if name == "p5-refresh" else ()
                sidecars.append(SidecarProcess(cluster, folder, agent=name, namespace=namespace, extra_args=extra))
            for sidecar in sidecars:
                await _until(sidecar.token_file.exists, within=60, what="first token file", process=sidecar)
            *measured, refreshing, idle = sidecars
            for _ in range(repeat):
                overhead.append(await _refresh_overhead(refreshing, idle, refresh_window))
            for _ in range(rounds):
                for name, sidecar in zip(names, measured, strict=False):
                    suspend = {"supervision": {"mode": "Suspended", "reason": "benchmark"}}
                    samples["suspend_removed"].append(
                        await _patch_and_time(client, namespace, name, suspend, sidecar, gone=True)
                    )
                    resume = {"supervision": {"mode": "Autonomous", "reason": "benchmark"}}
                    samples["resume_back"].append(
                        await _patch_and_time(client, namespace, name, resume, sidecar, gone=False)
                    )
            rss = [sidecar.rss_mb() for sidecar in sidecars]
            peak = [sidecar.peak_rss_mb() for sidecar in sidecars]
            for name, sidecar in zip(names, measured, strict=False):
                revoke = {"revoked": True, "revocationReason": "benchmark"}
                samples["revoke_removed"].append(
                    await _patch_and_time(client, namespace, name, revoke, sidecar, gone=True)
                )
    finally:
        for sidecar in sidecars:
            sidecar.stop()
        service.stop()
        await client.close()
    result = {
        "benchmark": "p5",
        "agents": agents,
        "rounds": rounds,
        "poll_interval_s": 0.5,
        "latency": {key: report.latency_summary(values) for key, values in samples.items()},
        "refresh": overhead,
        "rss_mb": {"max": round(max(rss), 1), "peak_max": round(max(peak), 1), "target": TARGET_RSS_MB},
    }
    _print(result)
    return result


async def _refresh_overhead(refreshing: SidecarProcess, idle: SidecarProcess, window: float) -> dict[str, float]:
    """CPU of a refreshing sidecar minus an idle one over the same window, per refresh (both poll alike)."""
    cpu_refreshing, cpu_idle = refreshing.cpu_seconds(), idle.cpu_seconds()
    refreshes = 0
    seen = refreshing.token_file.stat().st_ino
    started = time.perf_counter()
    while time.perf_counter() - started < window:
        await asyncio.sleep(0.01)
        try:
            current = refreshing.token_file.stat().st_ino  # a refresh renames a new file over the old one
        except FileNotFoundError:
            continue
        if current != seen:
            refreshes, seen = refreshes + 1, current
    elapsed = time.perf_counter() - started
    spent_refreshing = refreshing.cpu_seconds() - cpu_refreshing
    spent_idle = idle.cpu_seconds() - cpu_idle
    return {
        "window_s": round(elapsed, 1),
        "refreshes": refreshes,
        "cpu_ms_per_refresh": round((spent_refreshing - spent_idle) * 1000 / max(refreshes, 1), 2),
        "idle_cpu_percent": round(spent_idle / elapsed * 100, 2),
    }


def _print(result: dict[str, Any]) -> None:
    table = report.Table("P7 token sidecar (ms from the spec patch)", ["event", "n", "p50", "p95", "p99", "max"])
    for key, summary in result["latency"].items():
        table.add(key, summary["n"], summary["p50_ms"], summary["p95_ms"], summary["p99_ms"], summary["max_ms"])
    print(table.render(), flush=True)
    for measured in result["refresh"]:
        print(f"refresh: {measured}", flush=True)
    print(f"sidecar RSS (MB): {result['rss_mb']}", flush=True)
