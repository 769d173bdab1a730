"""Bounds on what an HTTP client can make our servers hold: body size announced up front, and time to send it.

Used by both servers agentid runs (the token service and the admission webhook). A client announcing a body
larger than the limit gets 413 before a byte of it is read; a client that stops sending gets 408 after
``read_timeout`` instead of holding a connection and a buffer open for minutes. aiohttp's ``client_max_size``
still caps bodies sent without a length (chunked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_READ_TIMEOUT = 10.0  # seconds for the whole body: admission and token requests are a few KiB


def bounded_bodies(max_bytes: int, read_timeout: float = DEFAULT_READ_TIMEOUT) -> Middleware:
    """A middleware that refuses oversized bodies at once and reads every body within ``read_timeout``."""

    @web.middleware
    async def bounded(request: web.Request, handler: Handler) -> web.StreamResponse:
        announced = request.content_length
        if announced is not None and announced > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=announced)
        if request.body_exists:
            # A small body usually came with the headers: no timer to arm and cancel for it (per request, it shows).
            deadline = None if request.content.is_eof() else read_timeout
            try:
                async with asyncio.timeout(deadline):
                    await request.read()  # aiohttp keeps it: the handler's own read() returns it at once
            except TimeoutError:
                raise web.HTTPRequestTimeout(text="the request body did not arrive in time") from None
        return await handler(request)

    return bounded
