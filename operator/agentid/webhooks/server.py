"""The admission webhook's HTTPS server: Kopf's webhook-server protocol, served with agentid's bounds.

Kopf calls the server with its admission function and expects an async iterator of client configurations
(``kopf.WebhookServerProtocol``); the configurations themselves come from the chart, so only serving matters.
Compared with ``kopf.WebhookServer`` this one refuses an announced oversized body with 413 before reading it,
gives up on a stalled body after a timeout (408), and reloads the certificate files in place when they change
(cert-manager renews them in the mounted Secret), without closing the listening socket.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import kopf
from aiohttp import web

from agentid import httpbounds, servingcerts

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 3 * 1024 * 1024  # the apiserver sends objects up to its 1.5 MiB etcd limit, twice on UPDATE


@dataclass(frozen=True)
class AdmissionServer:
    port: int
    certfile: str
    keyfile: str
    addr: str = "0.0.0.0"  # noqa: S104 - a Pod serves its Service
    max_body_bytes: int = MAX_BODY_BYTES
    read_timeout: float = httpbounds.DEFAULT_READ_TIMEOUT
    reload_interval: float = servingcerts.RELOAD_INTERVAL

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        context = servingcerts.server_context(self.certfile, self.keyfile)
        app = web.Application(
            client_max_size=self.max_body_bytes,
            middlewares=[httpbounds.bounded_bodies(self.max_body_bytes, self.read_timeout)],
        )

        async def review(request: web.Request) -> web.Response:
            try:
                data = json.loads(await request.text())
            except (UnicodeDecodeError, ValueError):
                raise web.HTTPBadRequest(text="the body is not a JSON admission review") from None
            if not isinstance(data, dict):
                raise web.HTTPBadRequest(text="the body is not a JSON admission review")
            try:
                review_request = cast(Any, data)  # Kopf's request type is a TypedDict it does not export
                response = await fn(review_request, webhook=request.match_info["id"], headers=dict(request.headers))
            except Exception as error:  # noqa: BLE001 - Kopf's request-shape errors are not public: a bad review
                raise web.HTTPBadRequest(text=f"not an admission review Kopf can serve: {error}") from None
            return web.json_response(response)

        app.router.add_post("/{id:.*}", review)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.addr, self.port, ssl_context=context).start()
            logger.info("admission webhook listening on %s:%s", self.addr, self.port)
            yield kopf.WebhookClientConfig(url=f"https://{self.addr}:{self.port}")
            await servingcerts.reload_forever(context, self.certfile, self.keyfile, self.reload_interval)
        finally:
            await runner.cleanup()
