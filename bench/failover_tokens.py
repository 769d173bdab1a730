"""P5, token-service part: one of two replicas killed (-9) under steady exchange load; 1 vs 2 replicas.

Called by ``bench.__main__``. Agents are provisioned by the operator (then stopped); each gets a ServiceAccount
token for the issuer's audience. Every replica is ``TokenService`` in its own process (``bench.tokenservice``, as
in P3), serving the one issuer on its own port: keys, replay Leases and revocations are shared through the
apiserver, so any replica can answer any request. Every exchange is warm (TokenReview cache filled first).

(c) failover: ``Balancer`` stands in for the Service in front of two replicas: a TCP proxy that sends each new
connection to the next replica round robin and drops a replica whose connection is refused (as the Service drops
an endpoint once the Pod is gone). ``clients`` clients exchange back to back over keep-alive connections through
it; after a steady while one replica gets SIGKILL, and the load goes on. Every request's start, end and outcome is
kept: failures are split into those in flight at the kill and those started after it (target: none).

(d) scale: ``clients`` clients against 1 replica (pinned to CPU 0, load generator and control plane on the other
cores), then against 2 replicas pinned to CPU 0 and CPU 1, the clients split evenly between their addresses
(client ``i`` to replica ``i mod 2``, one keep-alive connection each; no proxy in the path). On a machine with two
cores the second replica shares its core with the load generator: its CPU share is reported with each replica's,
and so is the throughput per CPU-second the replicas used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import psutil

from agentid.devcluster.ports import free_port
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
from bench.exchange import exchange_form, pinned, process_cpu_seconds

FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
FAILURES = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    ok: bool
    error: str = ""


class Balancer:
    """A TCP load balancer for local replicas: round robin per connection; a refused backend is dropped for good."""

    def __init__(self, backends: Sequence[int]) -> None:
        self.backends = list(backends)
        self.dropped: list[int] = []
        self.open: dict[int, int] = dict.fromkeys(self.backends, 0)  # connections open to each backend now
        self.opened: dict[int, int] = dict.fromkeys(self.backends, 0)  # connections ever made to each backend
        self.port = free_port()
        self._turn = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = await self._connect()
        if backend is None:
            writer.close()
            return
        port, upstream_reader, upstream_writer = backend
        self.open[port] += 1
        self.opened[port] += 1
        pumps = [
            asyncio.create_task(self._pump(source, sink, (writer, upstream_writer)))
            for source, sink in ((reader, upstream_writer), (upstream_reader, writer))
        ]
        self._pumps.update(pumps)
        for task in pumps:
            task.add_done_callback(self._pumps.discard)
        closed = asyncio.gather(*pumps, return_exceptions=True)
        closed.add_done_callback(lambda _: self.open.__setitem__(port, self.open[port] - 1))

    async def _connect(self) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        while self.backends:
            self._turn = (self._turn + 1) % len(self.backends)
            port = self.backends[self._turn]
            try:
                return (port, *await asyncio.open_connection("127.0.0.1", port))
            except OSError:  # refused: nothing listens there any more
                if port in self.backends:  # clients reconnecting at once all find it gone: drop it once
                    self.backends.remove(port)  # the endpoint is gone: no new connection goes there
                    self.dropped.append(port)
        return None

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, both: tuple[asyncio.StreamWriter, ...]
    ) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            for writer in both:  # one side gone (a killed replica resets): the other side is closed too
                writer.close()


class Exchanges:
    """``clients`` clients sending exchanges back to back to ``urls``, every outcome kept."""

    def __init__(self, urls: Sequence[str], bodies: Sequence[bytes], session: aiohttp.ClientSession) -> None:
        self.urls = [f"{url}/token" for url in urls]
        self.bodies = bodies
        self.session = session
        self.outcomes: list[Outcome] = []

    async def one(self, url: str, body: bytes) -> Outcome:
        started = time.perf_counter()
        try:
            async with self.session.post(url, data=body, headers=FORM_HEADERS) as response:
                await response.read()
                status = response.status
        except FAILURES as error:
            return Outcome(started, time.perf_counter(), ok=False, error=type(error).__name__)
        return Outcome(started, time.perf_counter(), ok=status == 200, error="" if status == 200 else str(status))

    async def client(self, index: int, deadline: float) -> None:
        """One client, one replica (client ``i`` to replica ``i mod n``): a keep-alive connection each."""
        url, turn = self.urls[index % len(self.urls)], index
        while time.perf_counter() < deadline:
            self.outcomes.append(await self.one(url, self.bodies[turn % len(self.bodies)]))
            turn += 1

    async def run(self, clients: int, duration: float) -> float:
        started = time.perf_counter()
        await asyncio.gather(*(self.client(i, started + duration) for i in range(clients)))
        return time.perf_counter() - started

    async def warm(self, within: float = 60.0) -> None:
        """Until every replica has answered every token once (agent watch synced, TokenReview cache filled)."""
        deadline = time.monotonic() + within
        for url in self.urls:
            for body in self.bodies:
                while not (outcome := await self.one(url, body)).ok:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the token service keeps refusing exchanges: {outcome.error}")
                    await asyncio.sleep(0.05)


def _session(cluster: BenchCluster, clients: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=cluster.ssl_context(), limit=clients))


def _replicas(cluster: BenchCluster, label: str, cpus: Sequence[Sequence[int] | None]) -> list[TokenServiceProcess]:
    """Started one after the other (the first one creates the issuer Secret if the run has none yet)."""
    replicas: list[TokenServiceProcess] = []
    try:
        for index, replica_cpus in enumerate(cpus):
            port = cluster.endpoint.port if index == 0 else free_port()
            replica = TokenServiceProcess(cluster, label=f"{label}-{index}", cpus=replica_cpus, port=port)
            replicas.append(replica)
            replica.wait_ready(cluster.ssl_context())
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return replicas


async def failover(cluster: BenchCluster, bodies: list[bytes], *, clients: int, duration: float) -> dict[str, Any]:
    """(c): two replicas behind the Balancer; the second one killed after 40% of ``duration``."""
    replicas = _replicas(cluster, unique("p5c"), [None, None])
    balancer = Balancer([replica.port for replica in replicas])
    try:
        await balancer.start()
        async with _session(cluster, clients) as session:
            warm = Exchanges([replica.url for replica in replicas], bodies, session)
            await warm.warm()
            load = Exchanges([f"https://127.0.0.1:{balancer.port}"], bodies, session)
            running = asyncio.create_task(load.run(clients, duration))
            await asyncio.sleep(duration * 0.4)
            victim = replicas[1].port
            open_at_kill, opened_before = balancer.open[victim], balancer.opened[victim]
            killed_at = time.perf_counter()
            replicas[1].kill()
            elapsed = await running
    finally:
        await balancer.stop()
        for replica in replicas:
            replica.stop()
    summary = _failover_summary(load.outcomes, killed_at, elapsed)
    # A dying process still completes TCP handshakes for a few milliseconds: those connections die with it too.
    late = balancer.opened[victim] - opened_before
    return summary | {
        "connections_open_at_kill": open_at_kill,
        "connections_made_while_dying": late,
        "connections_to_killed_replica": open_at_kill + late,
        "backends_dropped": len(balancer.dropped),
    }


def _failover_summary(outcomes: list[Outcome], killed_at: float, elapsed: float) -> dict[str, Any]:
    """Failures in flight at the kill, and after it: a request sent on a keep-alive connection to the killed
    replica before the client saw that connection close fails too (as it would through a Service)."""
    in_flight = [o for o in outcomes if o.started <= killed_at < o.ended]
    before = [o for o in outcomes if o.ended <= killed_at]
    after = [o for o in outcomes if o.started > killed_at]
    started = min((o.started for o in outcomes), default=killed_at)
    ended = max((o.ended for o in outcomes), default=killed_at)
    errors: dict[str, int] = {}
    for outcome in outcomes:
        if not outcome.ok:
            errors[outcome.error] = errors.get(outcome.error, 0) + 1
    return {
        "exchanges": len(outcomes),
        "failed": sum(not o.ok for o in outcomes),
        "in_flight_at_kill": len(in_flight),
        "failed_in_flight_at_kill": sum(not o.ok for o in in_flight),
        "failed_started_after_kill": sum(not o.ok for o in after),
        "last_failure_after_kill_ms": round(
            max((o.started - killed_at for o in after if not o.ok), default=0) * 1000, 1
        ),
        "succeeded_after_kill": sum(o.ok for o in after),
        "errors": errors,
        "tokens_per_second_before": round(sum(o.ok for o in before) / max(killed_at - started, 1e-9), 1),
        "tokens_per_second_after": round(sum(o.ok for o in after) / max(ended - killed_at, 1e-9), 1),
        "latency_after_kill": report.latency_summary([o.ended - o.started for o in after if o.ok]),
        "seconds": round(elapsed, 2),
    }


async def scale(cluster: BenchCluster, bodies: list[bytes], *, clients: int, duration: float) -> list[dict[str, Any]]:
    """(d): 1 replica on CPU 0 (everything else on the other cores), then 2 replicas on CPU 0 and CPU 1."""
    cores = os.cpu_count() or 1
    others = list(range(1, cores)) or [0]
    rows = []
    for count in (1, 2):
        replica_cpus: list[Sequence[int] | None] = [[index % cores] for index in range(count)]
        replicas = _replicas(cluster, unique(f"p5d{count}"), replica_cpus)
        bench = psutil.Process()
        # With one replica the load generator keeps off its core; with two, it has no core of its own left.
        generator_cpus = others if count == 1 else list(range(cores))
        try:
            with pinned([*cluster.control_plane_pids(), bench.pid], generator_cpus):
                async with _session(cluster, clients) as session:
                    load = Exchanges([replica.url for replica in replicas], bodies, session)
                    await load.warm()
                    load.outcomes = []
                    replica_before = [replica.cpu_seconds() for replica in replicas]
                    bench_before = process_cpu_seconds(bench)
                    elapsed = await load.run(clients, duration)
                    replica_cpu = [
                        (replica.cpu_seconds() - before) / elapsed
                        for replica, before in zip(replicas, replica_before, strict=True)
                    ]
                    client_cpu = (process_cpu_seconds(bench) - bench_before) / elapsed
        finally:
            for replica in replicas:
                replica.stop()
        ok = sum(o.ok for o in load.outcomes)
        rows.append(
            {
                "replicas": count,
                "clients": clients,
                "tokens_per_second": round(ok / elapsed, 1),
                "tokens_per_replica_cpu_second": round(ok / elapsed / max(sum(replica_cpu), 1e-9), 1),
                **report.latency_summary([o.ended - o.started for o in load.outcomes if o.ok]),
                "failed": sum(not o.ok for o in load.outcomes),
                "replica_cpu_percent": [round(100 * share, 1) for share in replica_cpu],
                "client_cpu_percent": round(100 * client_cpu, 1),
                "load_average": round(os.getloadavg()[0], 2),
            }
        )
    return rows


async def run(cluster: BenchCluster, *, clients: int, duration: float, agents: int, repeat: int) -> dict[str, Any]:
    namespace = unique("bench-p5t")
    names = [f"agent-{i:03d}" for i in range(agents)]
    client = await cluster.client()
    try:
        await create_namespace(client, namespace)
        with running_operator(cluster, [namespace], label=namespace):
            await provision(client, namespace, names)
        tokens = [
            await service_account_token(client, namespace, name, audience=cluster.endpoint.issuer) for name in names
        ]
    finally:
        await client.close()
    bodies = [exchange_form(token) for token in tokens]

    failovers: list[dict[str, Any]] = []
    scaling: list[dict[str, Any]] = []
    for attempt in range(1, repeat + 1):
        failovers.append({"round": attempt, **await failover(cluster, bodies, clients=clients, duration=duration)})
        rows = await scale(cluster, bodies, clients=clients, duration=duration)
        scaling.extend({"round": attempt, **row} for row in rows)
        with contextlib.suppress(ZeroDivisionError):
            one, two = rows
            ratio = two["tokens_per_second"] / one["tokens_per_second"]
            per_cpu = two["tokens_per_replica_cpu_second"] / one["tokens_per_replica_cpu_second"]
            failovers[-1] |= {"ratio_2_vs_1": round(ratio, 2), "ratio_per_replica_cpu": round(per_cpu, 2)}

    _print(failovers, scaling)
    return {
        "benchmark": "P5-tokens",
        "clients": clients,
        "duration_seconds": duration,
        "agents": agents,
        "repeat": repeat,
        "summary": {
            "failed_started_after_kill": report.spread([f["failed_started_after_kill"] for f in failovers]),
            "failed_in_flight_at_kill": report.spread([f["failed_in_flight_at_kill"] for f in failovers]),
            "ratio_2_vs_1": report.spread([f["ratio_2_vs_1"] for f in failovers if "ratio_2_vs_1" in f]),
            "ratio_per_replica_cpu": report.spread(
                [f["ratio_per_replica_cpu"] for f in failovers if "ratio_per_replica_cpu" in f]
            ),
            **{
                f"replicas-{count}": report.spread(
                    [row["tokens_per_second"] for row in scaling if row["replicas"] == count]
                )
                for count in (1, 2)
            },
        },
        "failover": failovers,
        "scale": scaling,
    }


def _print(failovers: list[dict[str, Any]], scaling: list[dict[str, Any]]) -> None:
    killed = report.Table(
        "P5 (c) one of two token-service replicas killed -9 under load",
        [
            "round",
            "exchanges",
            "in flight at kill",
            "conns to killed (late)",
            "failed (in flight)",
            "failed (after)",
            "last failure ms",
            "ok after",
            "tokens/s after",
        ],
    )
    for row in failovers:
        killed.add(
            row["round"],
            row["exchanges"],
            row["in_flight_at_kill"],
            f"{row['connections_to_killed_replica']} ({row['connections_made_while_dying']})",
            row["failed_in_flight_at_kill"],
            row["failed_started_after_kill"],
            row["last_failure_after_kill_ms"],
            row["succeeded_after_kill"],
            row["tokens_per_second_after"],
        )
    print(killed.render(), flush=True)
    scaled = report.Table(
        "P5 (d) token service, 1 vs 2 replicas pinned to distinct cores",
        ["round", "replicas", "tokens/s", "per replica CPU-s", "p50 ms", "p99 ms", "replica CPU %", "client CPU %"],
    )
    for row in scaling:
        scaled.add(
            row["round"],
            row["replicas"],
            row["tokens_per_second"],
            row["tokens_per_replica_cpu_second"],
            row["p50_ms"],
            row["p99_ms"],
            " + ".join(str(share) for share in row["replica_cpu_percent"]),
            row["client_cpu_percent"],
        )
    print(scaled.render(), flush=True)
