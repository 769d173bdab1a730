"""The owner ceiling at reconcile time: an agent under an ``ownerCeiling`` policy never holds what its owner does not.

Called by the reconciler's gather step (reads only: SubjectAccessReviews as the owner) for agents whose governing
policy sets ``ownerCeiling``. Each granted rule is checked attribute by attribute; each ClusterRole with ``bind`` on
it, else with every rule it holds (as admission does). What the owner does not hold is withheld (reason
``OwnerCeiling``, naming the first missing permission) and given back when the owner holds it again.

Cost (docs/benchmarks.md): one SAR per distinct (owner, namespace, verb, group, resource, name), answers cached in a
bounded LRU (``MAX_ENTRIES``) for ``TTL`` seconds. The cache is dropped whenever an RBAC object not written by
agentid changes (``invalidate``, driven by the RBAC watch in ``agentid.reconcile.references``), and the agents under
an owner ceiling are re-planned then: an owner who loses a right loses it for their agents within seconds.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Mapping

from agentid.api.v1alpha1 import AgentIdentitySpec
from agentid.domain import reasons
from agentid.domain.supervision import Access, ClusterRoleInfo, Withheld
from agentid.kube import reviews
from agentid.kube.client import KubeClient
from agentid.kube.reviews import Attempt, Subject

MAX_ENTRIES = 20_000
TTL = 300.0
CONCURRENCY = 16


class OwnerCeiling:
    def __init__(self, client: KubeClient, *, max_entries: int = MAX_ENTRIES, ttl: float = TTL) -> None:
        self.client = client
        self.max_entries = max_entries
        self.ttl = ttl
        self.reviews = 0  # SubjectAccessReviews sent (metrics, benchmarks)
        self._answers: collections.OrderedDict[tuple[Subject, Attempt], tuple[bool, float]] = collections.OrderedDict()
        self._gate = asyncio.Semaphore(CONCURRENCY)

    def invalidate(self) -> None:
        """RBAC changed somewhere: every cached answer may be wrong now."""
        self._answers.clear()

    async def restrict(
        self, spec: AgentIdentitySpec, namespace: str, access: Access, roles: Mapping[str, ClusterRoleInfo | None]
    ) -> Access:
        """``access`` minus what the owner does not hold in ``namespace``."""
        subject = reviews.owner_subject(spec)
        owner = spec.owner.name
        rules, cluster_roles, withheld = [], [], []
        for rule in access.rules:
            missing = await self._first_denied(subject, reviews.rule_attempts(rule, namespace))
            if missing is None:
                rules.append(rule)
            else:
                withheld.append(_withheld(owner, f"'{missing.what}' in namespace {namespace}"))
        for name in access.cluster_roles:
            info = roles.get(name)
            if await self._first_denied(subject, [reviews.bind_attempt(name, namespace)]) is None:
                cluster_roles.append(name)
                continue
            inner = reviews.cluster_role_attempts(info.rules if info is not None else (), namespace)
            missing = await self._first_denied(subject, inner)
            if missing is None and inner:
                cluster_roles.append(name)
            else:
                what = f"'{missing.what}'" if missing is not None else "any of its permissions"
                withheld.append(_withheld(owner, f"ClusterRole {name!r} (no 'bind' on it, and not {what})"))
        if not withheld:
            return access
        return Access(rules=tuple(rules), cluster_roles=tuple(cluster_roles), withheld=(*access.withheld, *withheld))

    async def _first_denied(self, subject: Subject, attempts: list[Attempt]) -> Attempt | None:
        answers = await asyncio.gather(*(self._allowed(subject, attempt) for attempt in attempts))
        return next((attempt for attempt, ok in zip(attempts, answers, strict=True) if not ok), None)

    async def _allowed(self, subject: Subject, attempt: Attempt) -> bool:
        key = (subject, attempt)
        cached = self._answers.get(key)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            self._answers.move_to_end(key)
            return cached[0]
        async with self._gate:
            self.reviews += 1
            allowed = await reviews.allowed(self.client, subject, attempt)
        self._answers[key] = (allowed, now + self.ttl)
        self._answers.move_to_end(key)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)
        return allowed


def _withheld(owner: str, what: str) -> Withheld:
    return Withheld(reasons.OWNER_CEILING, f"the owner {owner} does not hold {what} (owner ceiling)", problem=True)
