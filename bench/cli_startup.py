"""``python -m bench.cli_startup``: how long the ``agentid`` command takes to start, per command (no cluster).

Runs each command ``--runs`` times as a fresh process (what a shell does) and prints median, min and max wall
time. The target is under ~0.3 s for ``--help`` and simple commands (the parsers import only the standard
library; tests/unit/test_cli_startup.py guards the cause). ``hyperfine`` gives the same numbers where installed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = (
    ("--help",),
    ("list", "--help"),
    ("version",),
    ("completion", "bash"),
    ("explain-token", "not-a-token"),  # imports the token parsing path, no cluster
    ("crds",),  # imports the API models (pydantic)
)


def measure(executable: str, command: tuple[str, ...], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([executable, *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--agentid", default=shutil.which("agentid") or "agentid", help="the agentid executable")
    args = parser.parse_args(argv)
    print(f"{'command':<28} {'median':>8} {'min':>8} {'max':>8}   ({args.runs} runs, {args.agentid})")
    for command in COMMANDS:
        times = measure(args.agentid, command, args.runs)
        median, low, high = statistics.median(times), min(times), max(times)
        print(f"{' '.join(command):<28} {median * 1000:>6.0f}ms {low * 1000:>6.0f}ms {high * 1000:>6.0f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
