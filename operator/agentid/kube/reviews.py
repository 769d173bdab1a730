"""SubjectAccessReview: may this user (or group) do this verb on this resource in this namespace?

Called by the admission webhook for the requester ceiling and the owner ceiling. Checks run concurrently with
a bound; the first denial is reported with the attribute that failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentid.kube import resources
from agentid.kube.client import KubeClient

CONCURRENCY = 16


@dataclass(frozen=True)
class Subject:
    """Who the review is about: a user (with groups, uid, extra, as authenticated) or only groups."""

    user: str = ""
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, Sequence[str]] | None = None

    @classmethod
    def from_userinfo(cls, userinfo: Mapping[str, Any]) -> Subject:
        extra = userinfo.get("extra") or {}
        return cls(
            user=str(userinfo.get("username") or ""),
            groups=tuple(str(group) for group in userinfo.get("groups") or []),
            uid=str(userinfo.get("uid") or ""),
            extra={str(key): [str(v) for v in values] for key, values in extra.items()},
        )


@dataclass(frozen=True)
class Attempt:
    """One resource attribute set to check (``what`` says it in words for the denial message)."""

    verb: str
    group: str
    resource: str
    namespace: str
    name: str = ""
    what: str = ""

    def attributes(self) -> dict[str, str]:
        resource, _, subresource = self.resource.partition("/")
        attributes = {"verb": self.verb, "group": self.group, "resource": resource, "namespace": self.namespace}
        if subresource:
            attributes["subresource"] = subresource
        if self.name:
            attributes["name"] = self.name
        return attributes


async def allowed(client: KubeClient, subject: Subject, attempt: Attempt) -> bool:
    spec: dict[str, Any] = {"resourceAttributes": attempt.attributes()}
    if subject.user:
        spec["user"] = subject.user
    if subject.groups:
        spec["groups"] = list(subject.groups)
    if subject.uid:
        spec["uid"] = subject.uid
    if subject.extra:
        spec["extra"] = {key: list(values) for key, values in subject.extra.items()}
    status = await client.create_review(resources.SUBJECT_ACCESS_REVIEWS, spec)
    return bool(status.get("allowed")) and not status.get("denied")


async def first_denied(client: KubeClient, subject: Subject, attempts: Iterable[Attempt]) -> Attempt | None:
    """The first attempt (in the given order) the subject may not perform, or None if all are allowed."""
    ordered = list(attempts)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def check(attempt: Attempt) -> bool:
        async with gate:
            return await allowed(client, subject, attempt)

    results = await asyncio.gather(*(check(attempt) for attempt in ordered))
    return next((attempt for attempt, ok in zip(ordered, results, strict=True) if not ok), None)
