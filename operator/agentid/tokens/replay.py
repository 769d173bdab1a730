"""Single use of RFC 7523 assertions across every token-service replica, recorded in the Kubernetes API.

Called by the exchange for each assertion it accepts. An assertion's (issuer, ``jti``) is claimed by creating a
Lease named by its hash in the service's namespace: the apiserver's create is atomic, so exactly one replica
wins and every other gets 409 — a replay, wherever it is sent. Each Lease lasts as long as its assertion could
still verify (``leaseDurationSeconds``), and a sweeper deletes the expired ones. The apiserver is chosen over a
store the chart would deploy because it is already the shared, highly available state every replica reaches,
and assertions are rare (an agent presents one to get a token, not per request). A replica's own memory answers
a repeat without a round trip. If the apiserver cannot answer, the claim fails closed (the caller sees 503).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from agentid.kube import errors
from agentid.kube.client import KubeClient
from agentid.kube.resources import LEASES
from agentid.tokens.verification import LEEWAY, ReplayGuard

logger = logging.getLogger(__name__)
COMPONENT_LABEL = "agentid.dev/component"
COMPONENT = "assertion-replay-guard"
SELECTOR = f"{COMPONENT_LABEL}={COMPONENT}"
HOLDER = "agentid-token-service"


def lease_name(issuer: str, jti: str) -> str:
    return "agentid-jti-" + hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()[:40]


def _micro_time(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expired(lease: Mapping[str, Any], now: float) -> bool:
    spec = lease.get("spec") or {}
    try:
        renewed = dt.datetime.strptime(str(spec["renewTime"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        return renewed.timestamp() + int(spec["leaseDurationSeconds"]) < now
    except (KeyError, ValueError, TypeError):
        return True  # not ours to keep: a malformed claim protects nothing


class SharedReplayGuard:
    def __init__(self, client: KubeClient, *, namespace: str, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._namespace = namespace
        self._clock = clock
        self._local = ReplayGuard(clock=clock)

    async def first_use(self, issuer: str, jti: str, exp: float) -> bool:
        """True exactly once per (issuer, jti) across all replicas while the assertion can still verify."""
        if not self._local.first_use(issuer, jti, exp):
            return False
        now = self._clock()
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease_name(issuer, jti), "labels": {COMPONENT_LABEL: COMPONENT}},
            "spec": {
                "holderIdentity": HOLDER,
                "leaseDurationSeconds": max(1, math.ceil(exp - now + LEEWAY)),
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
            },
        }
        try:
            await self._client.create(LEASES, lease, self._namespace)
        except errors.Conflict:
            return False
        return True

    async def sweep_forever(self, interval: float = 60.0) -> None:
        """Delete claims whose assertions have expired (cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except errors.ApiError as error:
                logger.warning("assertion claims not swept this time: %s %s", error.status, error.reason)

    async def sweep(self) -> int:
        now = self._clock()
        stale = [
            lease
            for lease in await self._client.list(LEASES, self._namespace, label_selector=SELECTOR)
            if expired(lease, now)
        ]
        for lease in stale:
            metadata = lease.get("metadata") or {}
            await self._client.delete(LEASES, str(metadata.get("name")), self._namespace, uid=metadata.get("uid"))
        return len(stale)
