"""P3 token exchange: RFC 8693 exchanges per second and their latency, against pure pyjwt signing.

Called by ``bench.__main__``. Agents are provisioned by the operator (then stopped, so it costs nothing while
measured); each gets a ServiceAccount token for the token service's audience. The token service runs in its own
process pinned to one core (CPU 0); the load generator (this process), kube-apiserver, etcd and the controller
manager are pinned to the other cores while measuring. For each TokenReview cache state and client concurrency,
``c`` clients send exchanges over HTTPS keep-alive for ``duration`` seconds, round-robin over the agents' tokens:
- warm: the default cache (10 s); every token was exchanged once just before, so no TokenReview is sent;
- cold: the cache is off (``review_cache_seconds=0``), so every exchange waits for a TokenReview.
The baseline is the ceiling of the same core: ``jwt.encode`` of the same claims with the same kind of issuer key
(ES256), in a loop. CPU use of the service and of the load generator is reported, so a saturated client shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import psutil

from agentid.api.v1alpha1 import AgentIdentity, KeyAlgorithm
from agentid.domain import claims, keys
from agentid.kube import resources
from bench import report
from bench.environment import (
    BenchCluster,
    TokenServiceProcess,
    create_namespace,
    provision,
    running_operator,
    service_account_token,
    unique,
)

SERVICE_CPU = 0


@contextlib.contextmanager
def pinned(pids: Sequence[int], cpus: Sequence[int]) -> Iterator[None]:
    """Pin processes to ``cpus`` for a while (and give them every CPU back afterwards)."""
    everything = list(range(os.cpu_count() or 1))
    processes = [psutil.Process(pid) for pid in pids]
    for process in processes:
        process.cpu_affinity(list(cpus))
    try:
        yield
    finally:
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.cpu_affinity(everything)


class Load:
    """``concurrency`` clients sending exchanges back to back for ``duration`` seconds."""

    def __init__(self, url: str, bodies: Sequence[bytes], session: aiohttp.ClientSession) -> None:
        self.url = url
        self.bodies = bodies
        self.session = session
        self.latencies: list[float] = []
        self.errors: dict[int, int] = {}

    async def one(self, body: bytes) -> float:
        started = time.perf_counter()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with self.session.post(self.url, data=body, headers=headers) as response:
            await response.read()
            status = response.status
        elapsed = time.perf_counter() - started
        if status != 200:
            self.errors[status] = self.errors.get(status, 0) + 1
        return elapsed

    async def client(self, index: int, deadline: float) -> None:
        turn = index
        while time.perf_counter() < deadline:
            self.latencies.append(await self.one(self.bodies[turn % len(self.bodies)]))
            turn += 1

    async def run(self, concurrency: int, duration: float) -> float:
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(*(self.client(i, deadline) for i in range(concurrency)))
        return time.perf_counter() - started


def exchange_form(subject_token: str) -> bytes:
    return urlencode(
        {
            "grant_type": claims.GRANT_TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": claims.TOKEN_TYPE_JWT,
        }
    ).encode()


async def _measure_service(
    cluster: BenchCluster, bodies: list[bytes], *, cache: str, levels: Sequence[int], duration: float
) -> list[dict[str, Any]]:
    cores = os.cpu_count() or 1
    service_cpus = [SERVICE_CPU]
    other_cpus = [cpu for cpu in range(cores) if cpu != SERVICE_CPU] or service_cpus
    service = TokenServiceProcess(
        cluster, label=f"p3-{cache}", review_cache_seconds=10.0 if cache == "warm" else 0.0, cpus=service_cpus
    )
    rows = []
    try:
        context = cluster.ssl_context()
        service.wait_ready(context)
        bench = psutil.Process()
        with pinned([*cluster.control_plane_pids(), bench.pid], other_cpus):
            connector = aiohttp.TCPConnector(ssl=context, limit=max(levels))
            async with aiohttp.ClientSession(connector=connector) as session:
                load = Load(f"{service.endpoint.issuer}/token", bodies, session)
                # Until the service's agent watch has every agent (and, warm, its cache every token).
                await until_all_succeed(load)
                for concurrency in levels:
                    if cache == "warm":
                        await until_all_succeed(load)
                    load.latencies, load.errors = [], {}
                    service_before, bench_before = service.cpu_seconds(), process_cpu_seconds(bench)
                    elapsed = await load.run(concurrency, duration)
                    service_cpu = (service.cpu_seconds() - service_before) / elapsed
                    client_cpu = (process_cpu_seconds(bench) - bench_before) / elapsed
                    ok = len(load.latencies) - sum(load.errors.values())
                    rows.append(
                        {
                            "cache": cache,
                            "concurrency": concurrency,
                            "tokens_per_second": round(ok / elapsed, 1),
                            # per core: what the service's CPU yields, whatever else the machine runs
                            "tokens_per_cpu_second": round(ok / elapsed / service_cpu, 1) if service_cpu else None,
                            **report.latency_summary(load.latencies),
                            "errors": dict(load.errors),
                            "service_cpu_percent": round(100 * service_cpu, 1),
                            "client_cpu_percent": round(100 * client_cpu, 1),
                        }
                    )
    finally:
        service.stop()
    return rows


async def until_all_succeed(load: Load, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    for body in load.bodies:
        while True:
            load.errors = {}
            await load.one(body)
            if not load.errors:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the token service keeps refusing exchanges: {load.errors}")
            await asyncio.sleep(0.05)


def process_cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def signing_baseline(agent: AgentIdentity, issuer: str, duration: float) -> dict[str, Any]:
    """jwt.encode of the claims an exchange issues, with an ES256 key like the issuer's, on CPU 0 alone."""
    key = keys.generate(KeyAlgorithm.ES256)
    headers = {"kid": key.key_id, "typ": "JWT"}
    latencies = []
    bench = psutil.Process()
    with pinned([bench.pid], [SERVICE_CPU]):
        started = time.perf_counter()
        deadline = started + duration
        while time.perf_counter() < deadline:
            now = dt.datetime.now(dt.UTC)
            payload = claims.build_claims(
                agent,
                issuer=issuer,
                audience=sorted(agent.spec.credentials.audiences),
                issued_at=now,
                lifetime=dt.timedelta(minutes=15),
                jti=str(uuid.uuid4()),
            )
            begin = time.perf_counter()
            jwt.encode(payload, key.private_key, algorithm=key.jws_algorithm, headers=headers)
            latencies.append(time.perf_counter() - begin)
        elapsed = time.perf_counter() - started
    return {"tokens_per_second": round(len(latencies) / elapsed, 1), **report.latency_summary(latencies)}


async def run(
    cluster: BenchCluster, *, levels: Sequence[int], duration: float, agents: int, repeat: int
) -> dict[str, Any]:
    namespace = unique("bench-p3")
    names = [f"agent-{i:03d}" for i in range(agents)]
    client = await cluster.client()
    try:
        await create_namespace(client, namespace)
        with running_operator(cluster, [namespace], label=namespace):
            await provision(client, namespace, names)
        issuer = cluster.endpoint.issuer
        tokens = [await service_account_token(client, namespace, name, audience=issuer) for name in names]
        body = await client.get(resources.AGENT_IDENTITIES, names[0], namespace)
    finally:
        await client.close()
    assert body is not None
    agent = AgentIdentity.from_body(body)
    bodies = [exchange_form(token) for token in tokens]

    rows: list[dict[str, Any]] = []
    baselines = []
    for attempt in range(1, repeat + 1):
        for cache in ("warm", "cold"):
            for row in await _measure_service(cluster, bodies, cache=cache, levels=levels, duration=duration):
                rows.append({"round": attempt, **row})
        baselines.append({"round": attempt, **signing_baseline(agent, issuer, duration)})

    table = report.Table(
        "P3 token exchange (service pinned to one core)",
        [
            "cache",
            "conc",
            "round",
            "tokens/s",
            "per CPU-s",
            "p50 ms",
            "p99 ms",
            "errors",
            "service CPU %",
            "client CPU %",
        ],
    )
    for row in rows:
        table.add(
            row["cache"],
            row["concurrency"],
            row["round"],
            row["tokens_per_second"],
            row["tokens_per_cpu_second"],
            row["p50_ms"],
            row["p99_ms"],
            sum(row["errors"].values()),
            row["service_cpu_percent"],
            row["client_cpu_percent"],
        )
    for baseline in baselines:
        table.add(
            "pyjwt sign",
            1,
            baseline["round"],
            baseline["tokens_per_second"],
            "-",
            baseline["p50_ms"],
            baseline["p99_ms"],
            0,
            "-",
            "-",
        )
    print(table.render(), flush=True)
    summary = {
        f"{cache}-c{level}": report.spread(
            [row["tokens_per_second"] for row in rows if row["cache"] == cache and row["concurrency"] == level]
        )
        for cache in ("warm", "cold")
        for level in levels
    }
    summary["pyjwt-sign"] = report.spread([baseline["tokens_per_second"] for baseline in baselines])
    return {
        "benchmark": "P3",
        "duration_seconds": duration,
        "agents": agents,
        "repeat": repeat,
        "summary": summary,
        "rows": rows,
        "baseline": baselines,
    }
