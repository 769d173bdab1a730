"""Entry point of the ``agentid`` command: one sub-command module per concern, wired here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agentid import __version__
from agentid.cli import agents, dev, run, tokens


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentid", description="Every AI agent gets its own Kubernetes identity.")
    parser.add_argument("--version", action="version", version=f"agentid {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    dev.register(subparsers)
    run.register(subparsers)
    tokens.register(subparsers)
    agents.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
