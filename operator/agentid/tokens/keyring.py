"""The issuer's signing keys, kept in a Secret in the service's namespace and rotated with overlap.

Called by the token service: once at start (load, or create the Secret), then periodically (re-read what other
replicas wrote, apply the rotation schedule of ``domain.issuer_keys``, write back with optimistic concurrency).
Signing and JWKS publication read the in-memory ring; the private keys never leave this object except into
the Secret.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from agentid.domain import claims, issuer_keys, keys, naming
from agentid.domain import clock as wall_clock
from agentid.domain.issuer_keys import IssuerKey, RotationPolicy
from agentid.kube import errors
from agentid.kube.client import KubeClient
from agentid.kube.resources import SECRETS
from agentid.tokens import verification
from agentid.tokens.settings import KEYRING_DATA_KEY, KEYRING_SECRET_TYPE

logger = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]
_WRITE_ATTEMPTS = 5


class IssuerKeyring:
    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        secret_name: str,
        policy: RotationPolicy,
        clock: Clock = wall_clock.now,
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._secret_name = secret_name
        self.policy = policy
        self._clock = clock
        self._ring: list[IssuerKey] = []
        self._lock = asyncio.Lock()

    # -- reading (hot path: no I/O) ---------------------------------------------------------------------------

    def signing_key(self) -> keys.SigningKey:
        return issuer_keys.signing_key(self._ring, self._clock()).key

    def published(self) -> list[IssuerKey]:
        return issuer_keys.published(self._ring, self._clock(), self.policy)

    def verification_key(self, key_id: str) -> keys.SigningKey | None:
        """A published key by ID; keys past their retention are gone, so their tokens no longer verify."""
        return next((entry.key for entry in self.published() if entry.key_id == key_id), None)

    def verify_issued(self, token: str, *, issuer: str, max_bytes: int) -> verification.Verified:
        """One of this service's own agent tokens (any audience): a published key, our issuer, valid times and the
        agent claims. Raises ``claims.Refused`` (no detail) otherwise."""
        header = verification.header_of(token, max_bytes)
        verified = verification.verify(
            token,
            self.verification_key(header["kid"]),
            issuer=issuer,
            audience=None,
            required=verification.AGENT_TOKEN_CLAIMS,
            max_bytes=max_bytes,
        )
        # The issuer knows its own clock: the skew allowance is for others' tokens, never for our own `exp`.
        if float(verified.claims["exp"]) <= self._clock().timestamp():
            raise claims.invalid_token()
        return verified

    def jwks(self) -> dict[str, Any]:
        return {"keys": [keys.public_only(entry.key.jwk) for entry in self.published()]}

    @property
    def algorithms(self) -> list[str]:
        return sorted({entry.key.jws_algorithm for entry in self.published()})

    # -- maintenance ------------------------------------------------------------------------------------------

    async def refresh(self, *, rotate: bool = False) -> None:
        """Read the Secret, apply the schedule (and a requested rotation), write back if anything changed."""
        async with self._lock:
            for _ in range(_WRITE_ATTEMPTS):
                secret = await self._client.get(SECRETS, self._secret_name, self._namespace)
                stored = _ring_of(secret) if secret is not None else []
                planned = issuer_keys.plan(stored, self._clock(), self.policy, keys.generate, rotate=rotate)
                try:
                    if secret is None:
                        await self._client.create(SECRETS, self._manifest(planned), self._namespace)
                    elif _changed(stored, planned):
                        await self._write(secret, planned)
                except errors.Conflict:
                    continue  # another replica wrote first: plan again on what it wrote
                if _changed(self._ring, planned):
                    logger.info("issuer keys: %s", ", ".join(repr(key) for key in planned))
                self._ring = planned
                return
            raise errors.Conflict(409, "Conflict", "the issuer keyring kept changing under us; will retry")

    async def run(self, interval: float) -> None:
        """Refresh forever; a failed refresh keeps the current ring (tokens keep flowing) and is retried."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except (errors.ApiError, issuer_keys.KeyringError, OSError) as error:
                logger.warning("issuer keyring refresh failed: %s", error)

    async def _write(self, secret: dict[str, Any], ring: list[IssuerKey]) -> None:
        version = (secret.get("metadata") or {}).get("resourceVersion")
        patch = {"metadata": {"resourceVersion": version}, "data": self._data(ring)}
        await self._client.patch(SECRETS, self._secret_name, patch, self._namespace)

    def _manifest(self, ring: list[IssuerKey]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": KEYRING_SECRET_TYPE,
            "metadata": {
                "name": self._secret_name,
                "namespace": self._namespace,
                "labels": {naming.MANAGED_BY_LABEL: naming.MANAGED_BY, naming.COMPONENT_LABEL: "token-issuer"},
            },
            "data": self._data(ring),
        }

    @staticmethod
    def _data(ring: list[IssuerKey]) -> dict[str, str]:
        return {KEYRING_DATA_KEY: base64.b64encode(issuer_keys.dump(ring)).decode()}


def _ring_of(secret: dict[str, Any]) -> list[IssuerKey]:
    """The keyring stored in the Secret; an unreadable one is an error (never silently replaced: tokens it
    signed would stop verifying)."""
    encoded = (secret.get("data") or {}).get(KEYRING_DATA_KEY)
    if not isinstance(encoded, str):
        raise issuer_keys.KeyringError("the issuer Secret has no keyring")
    try:
        return issuer_keys.load(base64.b64decode(encoded, validate=True))
    except ValueError as error:
        raise issuer_keys.KeyringError(f"the issuer Secret's keyring is unreadable: {error}") from None


def _changed(before: list[IssuerKey], after: list[IssuerKey]) -> bool:
    def shape(ring: list[IssuerKey]) -> list[tuple[str, dt.datetime, dt.datetime | None]]:
        return [(key.key_id, key.signs_from, key.signs_until) for key in ring]

    return shape(before) != shape(after)
