"""``agentid token-agent``: the token sidecar (``agentid.sidecar``), injected into agent Pods as a native sidecar.

Configured by the environment Pod injection writes (``agentid.client.environment``); flags override it for use
outside a Pod. Kept light on purpose: ``agentid.cli.main`` runs it without importing the operator's modules, so
the sidecar's memory holds no Kopf and no Kubernetes client.
"""

from __future__ import annotations

import argparse
import os

COMMAND = "token-agent"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = subparsers.add_parser(
        COMMAND, help="keep fresh agent tokens in files, one per audience (the Pod's token sidecar)"
    )
    agent.add_argument("--audience", action="append", default=[], help="keep a token for it (repeatable; "
                       "default: $AGENTID_AUDIENCES)")  # fmt: skip
    agent.add_argument("--tokens-dir", help="folder of the token files (default: $AGENTID_TOKENS_DIR)")
    agent.add_argument("--health-host", default="0.0.0.0", help="health endpoint address")  # noqa: S104
    agent.add_argument("--health-port", type=int, help="health endpoint port (default: $AGENTID_HEALTH_PORT, 9494)")
    agent.add_argument("--poll-interval", type=float, default=0.5,
                       help="seconds between checks that the agent may still hold tokens")  # fmt: skip
    agent.add_argument("--token-lifetime", type=int, metavar="SECONDS",
                       help="ask for tokens shorter than the agent's tokenTTL")  # fmt: skip
    agent.add_argument("--verbose", action="store_true", help="debug logging (never shows tokens)")
    agent.set_defaults(func=token_agent_command)


def token_agent_command(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - this command's imports stay out of every other command's way
    import logging  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from dataclasses import replace  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from agentid.client import environment  # noqa: PLC0415
    from agentid.client.credentials import Credentials  # noqa: PLC0415
    from agentid.client.errors import ConfigurationError  # noqa: PLC0415
    from agentid.sidecar.agent import Timing  # noqa: PLC0415
    from agentid.sidecar.main import run  # noqa: PLC0415

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    audiences = tuple(args.audience) or tuple(environment.parse_audiences(os.environ.get(environment.AUDIENCES, "")))
    tokens_dir = args.tokens_dir or os.environ.get(environment.TOKENS_DIR)
    port = args.health_port or int(os.environ.get(environment.HEALTH_PORT) or environment.DEFAULT_HEALTH_PORT)
    try:
        if not tokens_dir:
            raise ConfigurationError(f"no tokens folder: set {environment.TOKENS_DIR} or --tokens-dir")
        # the sidecar exchanges the Pod's own credential: it never reads the token files it writes
        credentials = replace(Credentials.from_environment(), tokens_dir=None)
        return asyncio.run(
            run(
                credentials,
                tokens_dir=Path(tokens_dir),
                audiences=audiences,
                timing=Timing(poll_interval=args.poll_interval, lifetime=args.token_lifetime),
                health_at=(args.health_host, port),
            )
        )
    except ConfigurationError as error:
        print(f"agentid token-agent: {error}", file=sys.stderr)
        return 2
