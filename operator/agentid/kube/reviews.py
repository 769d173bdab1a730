"""SubjectAccessReview: may this user (or group) do this verb on this resource in this namespace?

Called by the admission webhook (requester and owner ceilings) and the reconciler (owner ceiling, via
``agentid.reconcile.ceiling``). Checks run concurrently with a bound; the first denial is reported with the
attribute that failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentid.api.v1alpha1 import AgentIdentitySpec, PolicyRule
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


def owner_subject(spec: AgentIdentitySpec) -> Subject:
    """The agent's accountable owner as a SubjectAccessReview subject (a group owner: any member)."""
    if spec.owner.kind == "Group":
        return Subject(groups=(spec.owner.name, "system:authenticated"))
    return Subject(user=spec.owner.name, groups=("system:authenticated",))


def rule_attempts(rule: PolicyRule, namespace: str) -> list[Attempt]:
    """Every (verb, group, resource, name) one of the agent's rules grants."""
    return [
        Attempt(
            verb,
            group,
            resource,
            namespace,
            name,
            f"{verb} {_where(group, resource)}" + (f" named {name}" * bool(name)),
        )
        for group in rule.api_groups
        for resource in rule.resources
        for verb in rule.verbs
        for name in rule.resource_names or [""]
    ]


def cluster_role_attempts(rules: Iterable[Mapping[str, Any]], namespace: str) -> list[Attempt]:
    """What binding a ClusterRole in ``namespace`` grants (a RoleBinding never grants non-resource URLs)."""
    return [
        Attempt(verb, group, resource, namespace, name, f"{verb} {_where(group, resource)}")
        for rule in rules
        if not rule.get("nonResourceURLs")
        for group in rule.get("apiGroups") or [""]
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
        for name in rule.get("resourceNames") or [""]
    ]


def bind_attempt(cluster_role: str, namespace: str) -> Attempt:
    return Attempt("bind", "rbac.authorization.k8s.io", "clusterroles", namespace, cluster_role, f"bind {cluster_role}")


def _where(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource
