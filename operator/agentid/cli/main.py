"""Entry point of the ``agentid`` command: one sub-command module per concern, wired here.

``agentid token-agent`` (the Pod sidecar) is dispatched without importing the other commands' modules, so the
sidecar's process holds no Kopf and no Kubernetes client.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agentid import __version__
from agentid.cli import tokenagent


def build_parser() -> argparse.ArgumentParser:
    from agentid.cli import agents, dev, run, tokens  # noqa: PLC0415 - see the module docstring

    parser = _parser()
    subparsers = parser.add_subparsers(dest="command", required=True)
    dev.register(subparsers)
    run.register(subparsers)
    tokens.register(subparsers)
    agents.register(subparsers)
    tokenagent.register(subparsers)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentid", description="Every AI agent gets its own Kubernetes identity.")
    parser.add_argument("--version", action="version", version=f"agentid {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == [tokenagent.COMMAND]:
        parser = _parser()
        tokenagent.register(parser.add_subparsers(dest="command", required=True))
    else:
        parser = build_parser()
    args = parser.parse_args(arguments)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
