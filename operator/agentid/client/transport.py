"""HTTP to the token service: form POSTs answered with JSON. Sync on the standard library (urllib), async on
aiohttp's client (already a dependency of agentid; its server side is never imported here).

Called by ``agentid.client.sync`` and ``agentid.client.aio``. Returns the parsed body or raises
``TokenServiceUnavailable`` / ``TokenRefused``; request bodies (which carry tokens) are never logged or echoed.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from agentid.client import errors

FORM = "application/x-www-form-urlencoded"
TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 256 * 1024
Form = Sequence[tuple[str, str]]


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Trust the token service's CA (the injected file), or the system's trust store without one."""
    return ssl.create_default_context(cafile=ca_file)


def _answer(status: int, payload: bytes) -> dict[str, Any]:
    if status >= 500:
        raise errors.TokenServiceUnavailable(f"the token service answered {status}")
    try:
        body = json.loads(payload) if payload else {}
    except ValueError:
        raise errors.TokenServiceUnavailable(f"the token service answered {status} without JSON") from None
    if not isinstance(body, dict):
        raise errors.TokenServiceUnavailable(f"the token service answered {status} with unexpected JSON")
    if status != 200:
        raise errors.refusal(status, body)
    return body


def post(
    url: str, form: Form, context: ssl.SSLContext, *, timeout: float = TIMEOUT, headers: Mapping[str, str] = {}
) -> dict[str, Any]:
    data = urllib.parse.urlencode(list(form)).encode()
    request = urllib.request.Request(  # noqa: S310 - the token service URL the Pod was given
        url, data=data, headers={"Content-Type": FORM, "Accept": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            return _answer(int(response.status), response.read(MAX_RESPONSE_BYTES))
    except urllib.error.HTTPError as error:
        return _answer(int(error.code), error.read(MAX_RESPONSE_BYTES))
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise errors.TokenServiceUnavailable(f"cannot reach the token service: {type(reason).__name__}") from None


class AsyncTransport:
    """One aiohttp session (keep-alive) for the client's lifetime; ``close()`` it."""

    def __init__(self, context: ssl.SSLContext, *, timeout: float = TIMEOUT) -> None:
        self._context = context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, form: Form, headers: Mapping[str, str] = {}) -> dict[str, Any]:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._context, limit=8)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, trust_env=False)
        data = urllib.parse.urlencode(list(form))
        try:
            async with self._session.post(
                url, data=data, headers={"Content-Type": FORM, "Accept": "application/json", **headers}
            ) as response:
                payload = await response.content.read(MAX_RESPONSE_BYTES)
                return _answer(response.status, payload)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise errors.TokenServiceUnavailable(f"cannot reach the token service: {type(error).__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
