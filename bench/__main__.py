"""``python -m bench [p1 p2 p3 p4 ...]`` (``make bench BENCH_ARGS=...``): start a local control plane, run the
chosen benchmarks on it, print their tables and write their JSON to bench/results/.

Sizes are parameters; ``--smoke`` shrinks everything to seconds (the test suite runs it so the suite never rots;
it asserts that the benchmarks run, never how fast).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from agentid.domain.shards import ElectionTimings
from bench import (
    exchange,
    failover,
    failover_tokens,
    footprint,
    guardrails,
    provisioning,
    report,
    revocation,
    sidecar,
    signals,
    tools,
)
from bench.environment import BenchCluster

BENCHMARKS = ("p1", "p2", "p2s", "p3", "p4", "p5", "p6", "p7", "p8")


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("benchmarks", nargs="*", metavar="{p1,p2,p2s,p3,p4,p5,p6,p7,p8}", help="which to run (default: all)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: proves the suite runs, measures nothing")
    p.add_argument("--repeat", type=int, default=1, help="rounds per measurement (report median and spread)")
    p.add_argument("--results", type=Path, default=report.RESULTS, help="where JSON results go")
    p.add_argument("--workdir", type=Path, help="keep the control plane's folder here (logs, audit log)")
    g1 = p.add_argument_group("P1 provisioning")
    g1.add_argument("--n", type=_sizes, default=[100, 1000], help="agents per round, comma separated (100,1000)")
    g1.add_argument("--concurrency", type=int, default=64, help="requests in flight, operator and baseline (64)")
    g2 = p.add_argument_group("P2 revocation")
    g2.add_argument("--agents", type=int, default=50, help="agents suspended and again agents revoked (50)")
    g2.add_argument("--probe-interval", type=float, default=0.005, help="pause between probes of one path (s)")
    g2s = p.add_argument_group("P2 extended (p2s): Shared Signals receiver, cascade, transmitter fan-out")
    g2s.add_argument("--signal-agents", type=int, default=20, help="agents suspended and again revoked (20)")
    g2s.add_argument("--receivers", type=int, default=1000, help="poll streams the transmitter fans out to (1000)")
    g2s.add_argument("--events", type=int, default=20, help="events fanned out to every stream (20)")
    g3 = p.add_argument_group("P3 token exchange")
    g3.add_argument("--levels", type=_sizes, default=[1, 8, 32], help="client concurrency levels (1,8,32)")
    g3.add_argument("--duration", type=float, default=5.0, help="seconds per level and cache state (5)")
    g3.add_argument("--exchange-agents", type=int, default=20, help="agents whose tokens are exchanged (20)")
    g4 = p.add_argument_group("P4 footprint")
    g4.add_argument("--scale", type=_sizes, default=[1000, 5000], help="agent counts to measure RSS at (1000,5000)")
    g4.add_argument("--resume-timeout", type=float, default=600.0, help="give up waiting for a resume after (600 s)")
    g5 = p.add_argument_group("P5 failover (the operator's leader, then a token-service replica, killed)")
    g5.add_argument("--failover-agents", type=int, default=300, help="agents in the burst the leader dies in (300)")
    g5.add_argument("--failover-clients", type=int, default=32, help="clients exchanging back to back (32)")
    g5.add_argument("--failover-duration", type=float, default=10.0, help="seconds of load per measurement (10)")
    g6 = p.add_argument_group("P6 tool-side verification")
    g6.add_argument("--requests", type=int, default=20000, help="calls per measurement (20000)")
    g7 = p.add_argument_group("P7 token sidecar")
    g7.add_argument("--sidecars", type=int, default=10, help="agents with a sidecar, suspended and resumed (10)")
    g7.add_argument("--sidecar-rounds", type=int, default=5, help="suspend/resume rounds per agent (5)")
    g7.add_argument("--refresh-window", type=float, default=30.0, help="seconds to measure refresh cost (30)")
    g7.add_argument("--refresh-lifetime", type=int, default=4, help="token lifetime while measuring it (4 s)")
    g8 = p.add_argument_group("P8 guardrail latency")
    g8.add_argument("--rounds", type=int, default=10, help="changes per scenario: policy, relabel, owner (10)")
    return p


def smoke(args: argparse.Namespace) -> None:
    args.n = [5]
    args.concurrency = 16
    args.agents = 3
    args.signal_agents = 2
    args.receivers = 10
    args.events = 4
    args.levels = [1, 4]
    args.duration = 0.5
    args.exchange_agents = 3
    args.scale = [5, 10]
    args.failover_clients = 4
    args.failover_duration = 2.0
    args.requests = 50
    args.sidecars = 1
    args.sidecar_rounds = 1
    args.refresh_window = 3.0
    args.refresh_lifetime = 2
    args.rounds = 1
    args.failover_agents = 9
    args.repeat = 1


async def main(args: argparse.Namespace) -> dict[str, Any]:
    chosen = args.benchmarks or list(BENCHMARKS)
    machine = report.machine()
    print(json.dumps(machine), flush=True)
    cluster = BenchCluster(workdir=args.workdir)
    started = time.monotonic()
    cluster.start()
    results: dict[str, Any] = {}
    try:
        for name in chosen:
            if name == "p1":
                result = await provisioning.run(cluster, sizes=args.n, concurrency=args.concurrency, repeat=args.repeat)
            elif name == "p2":
                result = await revocation.run(
                    cluster, agents=args.agents, probe_interval=args.probe_interval, repeat=args.repeat
                )
            elif name == "p2s":
                result = await signals.run(
                    cluster,
                    agents=args.signal_agents,
                    repeat=args.repeat,
                    receivers=args.receivers,
                    events=args.events,
                )
            elif name == "p3":
                result = await exchange.run(
                    cluster,
                    levels=args.levels,
                    duration=args.duration,
                    agents=args.exchange_agents,
                    repeat=args.repeat,
                )
            elif name == "p5":
                operator_part = await failover.run(
                    cluster,
                    agents=args.failover_agents,
                    repeat=args.repeat,
                    timings=ElectionTimings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)
                    if args.smoke
                    else None,
                )
                tokens_part = await failover_tokens.run(
                    cluster,
                    clients=args.failover_clients,
                    duration=args.failover_duration,
                    agents=args.exchange_agents,
                    repeat=args.repeat,
                )
                result = {"operator": operator_part, "tokens": tokens_part}
            elif name == "p6":
                result = await tools.run(cluster, requests=args.requests, repeat=args.repeat)
            elif name == "p7":
                result = await sidecar.run(
                    cluster,
                    agents=args.sidecars,
                    rounds=args.sidecar_rounds,
                    refresh_window=args.refresh_window,
                    refresh_lifetime=args.refresh_lifetime,
                    repeat=args.repeat,
                )
            elif name == "p8":
                result = await guardrails.run(cluster, rounds=args.rounds, probe_interval=args.probe_interval)
            else:
                result = await footprint.run(
                    cluster, scale=args.scale, repeat=args.repeat, resume_timeout=args.resume_timeout
                )
            result |= {"machine": machine, "smoke": args.smoke}
            path = report.write(name, result, directory=args.results)
            print(f"{name}: results in {path}", flush=True)
            results[name] = result
    finally:
        cluster.stop()
    print(f"done in {time.monotonic() - started:.0f}s", flush=True)
    return results


def run(argv: list[str] | None = None) -> int:
    command = parser()
    args = command.parse_args(argv)
    unknown = [name for name in args.benchmarks if name not in BENCHMARKS]
    if unknown:
        command.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if args.smoke:
        smoke(args)
    asyncio.run(main(args))
    return 0


if __name__ == "__main__":
    sys.exit(run())
