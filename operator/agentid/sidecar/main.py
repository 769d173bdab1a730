"""Runs the token sidecar until SIGTERM/SIGINT: the token loop and its health endpoint on one event loop.

Called by ``agentid token-agent``; returns the process exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from aiohttp import web

from agentid.client.aio import AsyncAgentClient
from agentid.client.credentials import Credentials
from agentid.sidecar import health
from agentid.sidecar.agent import Timing, TokenAgent

logger = logging.getLogger(__name__)


async def run(
    credentials: Credentials,
    *,
    tokens_dir: Path,
    audiences: tuple[str, ...],
    timing: Timing,
    health_at: tuple[str, int],
) -> int:
    client = AsyncAgentClient(credentials, refresh_fraction=timing.refresh_fraction)
    agent = TokenAgent(client, tokens_dir=tokens_dir, audiences=audiences, timing=timing)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(agent.run(), name="token-agent")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    runner = await _serve_health(agent, task, health_at)
    logger.info("token sidecar started for %d audience(s); health on port %d", len(audiences), health_at[1])
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await runner.cleanup()
        await client.close()
    return 0


async def _serve_health(agent: TokenAgent, task: asyncio.Task[None], where: tuple[str, int]) -> web.AppRunner:
    return await health.serve(health.build_app(agent, task), *where)
