"""The token sidecar's health endpoint (kubelet probes): ``/healthz`` while the loop runs, ``/readyz`` while it
holds a token for every audience (so a suspended agent's Pod turns NotReady and leaves its Services). Answers are
the sidecar's state and token expiry times, never a token."""

from __future__ import annotations

import asyncio

from aiohttp import web

from agentid.sidecar.agent import TokenAgent


def build_app(agent: TokenAgent, running: asyncio.Task[None]) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        if running.done():
            return web.Response(status=503, text="the token loop stopped")
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response(agent.status(), status=200 if agent.ready else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
