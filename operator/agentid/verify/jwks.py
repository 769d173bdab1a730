"""The issuer's signing keys, found through discovery and cached.

Called by ``JWTVerifier`` for every token: the hot path is a dict lookup. The first use reads the issuer's
RFC 8414 metadata (``/.well-known/oauth-authorization-server``, then the OpenID configuration), insists that its
``issuer`` is exactly the configured one, and fetches ``jwks_uri``. Keys are refetched when older than
``max_age`` and when a token names an unknown ``kid`` (the issuer rotated) — at most once per
``min_refetch_interval``, so a stream of forged kids cannot turn the tool into a JWKS flood. A failed refresh
keeps the keys already known.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt

from agentid.verify.errors import IssuerUnavailable

logger = logging.getLogger(__name__)
DISCOVERY_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})
MAX_DOCUMENT_BYTES = 256 * 1024


class JWKSCache:
    def __init__(
        self,
        issuer: str,
        *,
        http: httpx.AsyncClient,
        max_age: float = 300.0,
        min_refetch_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._http = http
        self._max_age = max_age
        self._min_refetch_interval = min_refetch_interval
        self._clock = clock
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # JWKS downloads (tests and benchmarks read it)

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The published key with this ``kid``, or None once a (rate-limited) refetch has not found it either.

        Raises ``IssuerUnavailable`` while no key of the issuer could be fetched at all."""
        if self._fetched_at is None or self._clock() - self._fetched_at >= self._max_age:
            await self._refresh()
        found = self._keys.get(kid)
        if found is None and self._clock() - (self._fetched_at or 0.0) >= self._min_refetch_interval:
            await self._refresh()
            found = self._keys.get(kid)
        if not self._keys:
            raise IssuerUnavailable(f"no keys known for issuer {self.issuer}")
        return found

    async def _refresh(self) -> None:
        before = self._fetched_at
        async with self._lock:
            if self._fetched_at != before:  # another request refreshed while this one waited
                return
            try:
                if self._jwks_uri is None:
                    self._jwks_uri = await self._discover()
                self._keys = _parse_jwks(await self._get_json(self._jwks_uri))
                self.fetches += 1
            except (httpx.HTTPError, ValueError) as error:
                logger.warning("could not refresh the keys of %s: %s", self.issuer, error)
            finally:
                self._fetched_at = self._clock()

    async def _discover(self) -> str:
        for path in DISCOVERY_PATHS:
            try:
                document = await self._get_json(self.issuer + path)
            except httpx.HTTPStatusError:
                continue
            if document.get("issuer") != self.issuer:
                raise ValueError(f"discovery at {path} names issuer {document.get('issuer')!r}, not {self.issuer!r}")
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise ValueError("discovery has no usable jwks_uri")
            return jwks_uri
        raise ValueError("the issuer publishes no discovery document")

    async def _get_json(self, url: str) -> dict[str, Any]:
        response = await self._http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url} answered with an oversized document")
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError(f"{url} did not answer with a JSON object")
        return document


def _parse_jwks(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    """Public signing keys by ``kid``; anything else (private members, encryption keys, no kid) is skipped."""
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise ValueError("the JWKS has no keys array")
    parsed: dict[str, jwt.PyJWK] = {}
    for entry in keys:
        if not isinstance(entry, dict) or PRIVATE_MEMBERS & set(entry) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            parsed[kid] = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
    return parsed
