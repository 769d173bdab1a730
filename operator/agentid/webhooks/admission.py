"""Admission of AgentIdentity and AgentPolicy writes: the guardrails of a privilege broker.

Called by the Kopf admission handlers (``agentid.handlers.registrations``). An AgentIdentity write is refused
when it un-revokes, breaks a policy ceiling, or would grant access that the requesting user (or, under a
policy's owner ceiling, the accountable owner) does not hold — checked with SubjectAccessReviews, because
Kubernetes itself only checks the operator's rights. The spec is parsed by the same model the reconciler
uses, and the grant is computed by the same supervision and policy functions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic

from agentid import audit, metrics
from agentid.api.v1alpha1 import AgentIdentity, AgentIdentitySpec, AgentPolicy, PolicyRule, SupervisionMode
from agentid.domain import attribution, naming, policy, projections
from agentid.domain.supervision import Access, ClusterRoleInfo
from agentid.kube import resources
from agentid.kube.client import KubeClient
from agentid.kube.reviews import Attempt, Subject, first_denied

MAX_ATTEMPTS = 1024


class Denied(Exception):
    """The write is refused; the message is what the user sees (kubectl prints it)."""


@dataclass(frozen=True)
class ClusterRoleView:
    info: ClusterRoleInfo | None
    rules: tuple[Mapping[str, Any], ...] = ()


def _first_error(error: pydantic.ValidationError) -> str:
    first = error.errors()[0]
    return f"spec.{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"


def _attempts(rules: Iterable[PolicyRule], namespace: str) -> list[Attempt]:
    attempts = []
    for rule in rules:
        for group in rule.api_groups:
            for resource in rule.resources:
                for verb in rule.verbs:
                    for name in rule.resource_names or [""]:
                        where = f"{resource}.{group}" if group else resource
                        what = f"{verb} {where}" + (f" named {name}" if name else "")
                        attempts.append(Attempt(verb, group, resource, namespace, name, what))
    return attempts


def _cluster_role_attempts(rules: Iterable[Mapping[str, Any]], namespace: str) -> list[Attempt]:
    attempts = []
    for rule in rules:
        if rule.get("nonResourceURLs"):
            continue  # a RoleBinding never grants non-resource URLs
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    for name in rule.get("resourceNames") or [""]:
                        where = f"{resource}.{group}" if group else resource
                        attempts.append(Attempt(verb, group, resource, namespace, name, f"{verb} {where}"))
    return attempts


class AgentAdmission:
    def __init__(self, client: KubeClient, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.client = client
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    # -- mutation: attribution ------------------------------------------------------------------------------

    def annotations(
        self, *, body: Mapping[str, Any], old: Mapping[str, Any] | None, userinfo: Mapping[str, Any]
    ) -> dict[str, str]:
        return attribution.stamped_annotations(
            old=old, new=body, userinfo=userinfo, now=self.clock().replace(microsecond=0)
        )

    @staticmethod
    def finalizers(*, body: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[str] | None:
        """On creation, the operator's finalizer goes on with the object itself (saving the operator a write
        per agent, and closing the window in which a new agent could be deleted without cleanup)."""
        current = list((body.get("metadata") or {}).get("finalizers") or [])
        if old is not None or naming.FINALIZER in current:
            return None
        return [*current, naming.FINALIZER]

    # -- validation -----------------------------------------------------------------------------------------

    async def validate(
        self,
        *,
        body: Mapping[str, Any],
        old: Mapping[str, Any] | None,
        userinfo: Mapping[str, Any],
        warnings: list[str],
    ) -> None:
        metadata = body.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            return
        try:
            agent = AgentIdentity.from_body(body)
        except pydantic.ValidationError as error:
            raise Denied(_first_error(error)) from None
        previous = AgentIdentity.from_body(old) if old is not None else None
        if previous is not None and previous.spec == agent.spec:
            return  # metadata-only writes (finalizers, labels) pass: nothing is granted or changed
        try:
            await self._check(agent, previous, userinfo, warnings)
        except Denied as denied:
            metrics.ADMISSION_REVIEWS.labels(allowed="false").inc()
            audit.record(
                "AdmissionDenied",
                namespace=agent.namespace,
                name=agent.name,
                owner=f"{agent.spec.owner.kind}:{agent.spec.owner.name}",
                actor=str(userinfo.get("username")),
                actor_groups=list(userinfo.get("groups") or []),
                reason="Denied",
                message=str(denied),
            )
            raise
        metrics.ADMISSION_REVIEWS.labels(allowed="true").inc()

    async def _check(
        self, agent: AgentIdentity, previous: AgentIdentity | None, userinfo: Mapping[str, Any], warnings: list[str]
    ) -> None:
        spec, now = agent.spec, self.clock()
        refused = transition_error(previous, agent)
        if refused is not None:
            raise Denied(refused)
        governing = await self._policy(agent.namespace)
        names = [*spec.cluster_role_refs, *(previous.spec.cluster_role_refs if previous else [])]
        roles = await self._cluster_roles(names)
        infos = {name: view.info for name, view in roles.items()}
        granted = policy.governed_access(spec, governing, infos, now) if not spec.revoked else Access()
        before = (
            policy.governed_access(previous.spec, governing, infos, now)
            if previous is not None and not previous.spec.revoked
            else Access()
        )
        added = _new_grants(granted, before)
        widening = bool(added.rules or added.cluster_roles)
        if widening or not _only_restricts(previous, agent):
            found = policy.violations(spec, governing, now, infos)
            if found:
                raise Denied("; ".join(str(violation) for violation in found[:3]))
        # else: suspending, supervising or revoking never needs permission from a policy (the kill switch)
        if spec.supervision.mode is SupervisionMode.AUTONOMOUS and spec.expires_at is None and not spec.revoked:
            warnings.append("this agent is Autonomous and has no expiresAt: consider an expiry date")
        requester = Subject.from_userinfo(userinfo)
        who = requester.user or "the requester"
        await self._require(
            requester,
            added,
            roles,
            agent.namespace,
            lambda what: f"{who} may not grant {what}: they do not hold it themselves",
        )
        owner_changed = previous is not None and previous.spec.owner != spec.owner
        if governing.owner_ceiling and (widening or owner_changed):
            ceiling = f"owner ceiling, policy {governing.label}"
            await self._require(
                _owner_subject(spec),
                granted,
                roles,
                agent.namespace,
                lambda what: f"the owner {spec.owner.name} does not hold {what} ({ceiling})",
            )

    async def _require(
        self,
        subject: Subject,
        access: Access,
        roles: Mapping[str, ClusterRoleView],
        namespace: str,
        message: Callable[[str], str],
    ) -> None:
        attempts = _attempts(access.rules, namespace)
        if len(attempts) > MAX_ATTEMPTS:
            raise Denied(
                f"spec.permissions: too many distinct permissions to verify ({len(attempts)} > {MAX_ATTEMPTS})"
            )
        denied = await first_denied(self.client, subject, attempts)
        if denied is not None:
            raise Denied(message(f"'{denied.what}' in namespace {namespace}"))
        for name in access.cluster_roles:
            bind = Attempt("bind", "rbac.authorization.k8s.io", "clusterroles", namespace, name, f"bind {name}")
            if await first_denied(self.client, subject, [bind]) is None:
                continue
            inner = await first_denied(self.client, subject, _cluster_role_attempts(roles[name].rules, namespace))
            if inner is not None:
                raise Denied(message(f"ClusterRole {name!r} (no 'bind' on it, and no '{inner.what}')"))

    async def _policy(self, namespace: str) -> policy.EffectivePolicy:
        """Live reads: admission must agree with the policies as they are now, not as a cache last saw them."""
        namespace_body = await self.client.get(resources.NAMESPACES, namespace)
        labels = ((namespace_body or {}).get("metadata") or {}).get("labels") or {}
        policies = [AgentPolicy.from_body(body) for body in await self.client.list(resources.AGENT_POLICIES)]
        return policy.effective_policy(policies, labels)

    async def _cluster_roles(self, names: Sequence[str]) -> dict[str, ClusterRoleView]:
        views = {}
        for name in dict.fromkeys(names):
            body = await self.client.get(resources.CLUSTER_ROLES, name)
            views[name] = (
                ClusterRoleView(projections.cluster_role_info(body), tuple(body.get("rules") or []))
                if body is not None
                else ClusterRoleView(None)
            )
        return views


def transition_error(previous: AgentIdentity | None, agent: AgentIdentity) -> str | None:
    """Transitions no write may make, whatever the schema says (defence in depth behind the CEL rule)."""
    if previous is not None and previous.spec.revoked and not agent.spec.revoked:
        return "spec.revoked: revoked is terminal: once true it can never be set back to false"
    if previous is not None and previous.status.phase.terminal and previous.spec.revoked != agent.spec.revoked:
        return "spec.revoked: the agent is already revoked or expired"
    return None


def _new_grants(granted: Access, before: Access) -> Access:
    """Only what this write adds: unchanged grants were checked when they were given."""
    old_atoms = {(a.verb, a.group, a.resource, a.name) for a in _attempts(before.rules, "")}
    rules = []
    for rule in granted.rules:
        fresh = [a for a in _attempts([rule], "") if (a.verb, a.group, a.resource, a.name) not in old_atoms]
        if fresh:
            rules.append(rule)
    roles = tuple(name for name in granted.cluster_roles if name not in before.cluster_roles)
    return Access(rules=tuple(rules), cluster_roles=roles)


def _only_restricts(previous: AgentIdentity | None, agent: AgentIdentity) -> bool:
    """True for updates that only change supervision or revocation (what a human must always be able to do)."""
    if previous is None:
        return False
    unchanged = previous.spec.model_copy(
        update={
            "supervision": agent.spec.supervision,
            "revoked": agent.spec.revoked,
            "revocation_reason": agent.spec.revocation_reason,
        }
    )
    return unchanged == agent.spec


def _owner_subject(spec: AgentIdentitySpec) -> Subject:
    if spec.owner.kind == "Group":
        return Subject(groups=(spec.owner.name, "system:authenticated"))
    return Subject(user=spec.owner.name, groups=("system:authenticated",))


def validate_policy(body: Mapping[str, Any]) -> None:
    """AgentPolicy writes: the schema does the heavy lifting; here, what it cannot express."""
    try:
        parsed = AgentPolicy.from_body(body)
    except pydantic.ValidationError as error:
        raise Denied(_first_error(error)) from None
    allowed = parsed.spec.allowed_supervision_modes
    if allowed is not None and not allowed:
        raise Denied("spec.allowedSupervisionModes: an empty list would forbid every agent; list at least one mode")
