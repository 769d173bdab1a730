"""Revoked token IDs (RFC 7009), shared by every token-service replica through the Kubernetes API.

Called by the ``/revoke`` handler (``revoke``: one ConfigMap per revoked ``jti`` in the service's namespace) and by
introspection (``is_revoked``: an in-memory set fed by a label-selected watch of those ConfigMaps, so a revocation
written by any replica is seen by all within the watch latency). Why ConfigMaps: the apiserver is already the one
store every replica trusts and watches, a create is atomic and idempotent (409 = already revoked), and nothing
here is secret (a ``jti`` is an identifier, not a credential); no home-made replication. Each ConfigMap carries
the token's expiry; once past it the token is dead anyway and ``run_cleanup`` (any replica) deletes it, so the
set stays as small as the tokens that are both revoked and unexpired.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agentid.domain import clock as wall_clock
from agentid.domain import naming
from agentid.kube import errors, watch
from agentid.kube.client import KubeClient
from agentid.kube.resources import CONFIG_MAPS

logger = logging.getLogger(__name__)
COMPONENT = "revoked-token"
SELECTOR = f"{naming.COMPONENT_LABEL}={COMPONENT}"
JTI_KEY = "jti"
EXPIRES_KEY = "expiresAt"


def object_name(jti: str) -> str:
    """A valid, fixed-length object name for any ``jti`` (which the issuer chose, but may contain anything)."""
    return "agentid-revoked-" + hashlib.sha256(jti.encode()).hexdigest()[:40]


class RevocationStore:
    def __init__(
        self, client: KubeClient, *, namespace: str, clock: Callable[[], dt.datetime] = wall_clock.now
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._clock = clock
        self._revoked: dict[str, tuple[str, int]] = {}  # object name → (jti, exp)
        self._jtis: set[str] = set()
        self.synced = asyncio.Event()

    def is_revoked(self, jti: Any) -> bool:
        return isinstance(jti, str) and jti in self._jtis

    async def revoke(self, jti: str, expires: int) -> None:
        """Record the revocation (idempotent) and apply it here at once (the watch confirms it for the others)."""
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": object_name(jti),
                "namespace": self._namespace,
                "labels": {naming.MANAGED_BY_LABEL: naming.MANAGED_BY, naming.COMPONENT_LABEL: COMPONENT},
            },
            "data": {JTI_KEY: jti, EXPIRES_KEY: str(expires)},
        }
        with contextlib.suppress(errors.Conflict):  # already revoked (RFC 7009 §2.2: revoking twice is fine)
            await self._client.create(CONFIG_MAPS, body, self._namespace)
        self.upsert(body)

    # -- fed by the watch -------------------------------------------------------------------------------------

    async def run(self) -> None:
        selector = watch.Selector(namespace=self._namespace, label_selector=SELECTOR)
        await watch.feed(watch.informer(self._client, CONFIG_MAPS, selector, project=watch.unchanged), self)

    def replace(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        self._revoked = {}
        for body in bodies:
            self._remember(body)
        self._jtis = {jti for jti, _ in self._revoked.values()}

    def upsert(self, body: Mapping[str, Any]) -> None:
        self._remember(body)
        self._jtis = {jti for jti, _ in self._revoked.values()}

    def remove(self, body: Mapping[str, Any]) -> None:
        self._revoked.pop(str((body.get("metadata") or {}).get("name")), None)
        self._jtis = {jti for jti, _ in self._revoked.values()}

    def _remember(self, body: Mapping[str, Any]) -> None:
        data = body.get("data") or {}
        name = (body.get("metadata") or {}).get("name")
        jti, expires = data.get(JTI_KEY), data.get(EXPIRES_KEY)
        if isinstance(name, str) and isinstance(jti, str) and isinstance(expires, str) and expires.isdigit():
            self._revoked[name] = (jti, int(expires))

    # -- cleanup ----------------------------------------------------------------------------------------------

    async def run_cleanup(self, interval: float) -> None:
        """Delete the records of tokens past their expiry (any replica may; a 404 means another did)."""
        while True:
            await asyncio.sleep(interval)
            now = self._clock().timestamp()
            for name in [name for name, (_, exp) in self._revoked.items() if exp < now]:
                try:
                    await self._client.delete(CONFIG_MAPS, name, self._namespace)
                except errors.ApiError as error:
                    logger.warning("could not delete an expired revocation record: %s", error.status)
