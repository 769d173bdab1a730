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
from agentid.domain import admitted, attribution, naming, policy, projections
from agentid.domain.supervision import Access, ClusterRoleInfo
from agentid.kube import resources
from agentid.kube.client import KubeClient
from agentid.kube.reviews import Attempt, Subject, first_denied

# Distinct (verb, group, resource, name) combinations one write may ask us to verify. Counted from the sizes of
# the lists *before* anything is expanded: the schema allows lists whose product runs to millions.
MAX_ATTEMPTS = 1024


class Denied(Exception):
    """The write is refused; the message is what the user sees (kubectl prints it)."""


@dataclass(frozen=True)
class ClusterRoleView:
    info: ClusterRoleInfo | None
    rules: tuple[Mapping[str, Any], ...] = ()

    @property
    def uid(self) -> str | None:
        return self.info.uid if self.info is not None else None


def _cluster_role_refs(body: Mapping[str, Any]) -> list[str]:
    refs = (body.get("spec") or {}).get("clusterRoleRefs") or []
    return [str(ref) for ref in refs] if isinstance(refs, list) else []


def _first_error(error: pydantic.ValidationError) -> str:
    first = error.errors()[0]
    return f"spec.{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"


def attempt_count(rules: Iterable[PolicyRule]) -> int:
    """How many attempts ``_attempts`` would expand ``rules`` into, computed without expanding them."""
    return sum(
        len(rule.api_groups) * len(rule.resources) * len(rule.verbs) * max(1, len(rule.resource_names))
        for rule in rules
    )


def _bound_work(spec: AgentIdentitySpec, previous: AgentIdentitySpec | None) -> None:
    """Refuse, before any expansion, a write whose permissions would take too much work to verify."""
    count = attempt_count(spec.permissions)
    if count > MAX_ATTEMPTS:
        raise Denied(
            f"spec.permissions: the rules expand to {count} distinct (verb, API group, resource, name) "
            f"combinations; at most {MAX_ATTEMPTS} can be verified: split the agent or list fewer names per rule"
        )
    if previous is not None and attempt_count(previous.permissions) > MAX_ATTEMPTS:
        raise Denied(
            "spec.permissions: the stored rules exceed the verification limit "
            f"({MAX_ATTEMPTS} combinations); only a write that brings them within it is admitted"
        )


def _declared(spec: AgentIdentitySpec | None) -> Access:
    """Everything a spec asks for, whatever its mode: the ceilings apply to this, not to today's grant (a
    Suspended agent's rules are granted the moment somebody resumes it)."""
    if spec is None or spec.revoked:
        return Access()  # revoked is terminal: nothing will ever be granted again
    return Access(rules=tuple(spec.permissions), cluster_roles=tuple(dict.fromkeys(spec.cluster_role_refs)))


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

    async def annotations(
        self, *, body: Mapping[str, Any], old: Mapping[str, Any] | None, userinfo: Mapping[str, Any]
    ) -> dict[str, str]:
        """Attribution, and the proof of which ClusterRoles admission saw (both overwrite what a client sent)."""
        stamped = attribution.stamped_annotations(
            old=old, new=body, userinfo=userinfo, now=self.clock().replace(microsecond=0)
        )
        proof = await self._proof(body, old)
        if proof is not None:
            stamped[admitted.ANNOTATION] = admitted.encode(proof)
        return stamped

    async def _proof(self, body: Mapping[str, Any], old: Mapping[str, Any] | None) -> dict[str, str] | None:
        """A write that may add access stamps what the ClusterRoles are now; a metadata-only or kill-switch
        write keeps the old proof (or none): it checks nothing, so it must not vouch for anything."""
        if old is not None and only_kill_switch_changes(old.get("spec") or {}, body.get("spec") or {}):
            return admitted.parse(((old.get("metadata") or {}).get("annotations")) or {})
        refs = _cluster_role_refs(body)
        views = await self._cluster_roles(refs)
        return admitted.stamp(refs, {name: view.uid for name, view in views.items()})

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
            if admitted.parse(agent.metadata.annotations) != admitted.parse(previous.metadata.annotations):
                raise Denied(f"metadata.annotations[{admitted.ANNOTATION}]: written by admission only")
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
        _bound_work(spec, previous.spec if previous is not None else None)
        governing = await self._policy(agent.namespace)
        names = [*spec.cluster_role_refs, *(previous.spec.cluster_role_refs if previous else [])]
        roles = await self._cluster_roles(names)
        proof = self._checked_proof(agent, previous, roles)
        infos = {name: view.info for name, view in roles.items()}
        granted = policy.governed_access(spec, governing, infos, now) if not spec.revoked else Access()
        before = (
            policy.governed_access(previous.spec, governing, infos, now)
            if previous is not None and not previous.spec.revoked
            else Access()
        )
        grown = _new_grants(granted, before)
        widening = bool(grown.rules or grown.cluster_roles)
        # The requester's ceiling covers what the spec declares that it did not before, whatever the mode (rules
        # added while Suspended), what the write brings to life (a resume), and every ClusterRole whose identity
        # changed since admission last saw it (deleted and re-created, or created since).
        declared = _declared(spec)
        new = _new_grants(declared, _declared(previous.spec if previous is not None else None))
        old_proof = admitted.parse(previous.metadata.annotations) if previous is not None else None
        recheck = [name for name in admitted.rechecked(old_proof, proof or {}) if name in declared.cluster_roles]
        added = Access(
            rules=(*new.rules, *(rule for rule in grown.rules if rule not in new.rules)),
            cluster_roles=tuple(dict.fromkeys([*new.cluster_roles, *grown.cluster_roles, *recheck])),
        )
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
        if governing.owner_ceiling and (widening or owner_changed or added.rules or added.cluster_roles):
            ceiling = f"owner ceiling, policy {governing.label}"
            await self._require(
                _owner_subject(spec),
                declared,
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
        denied = await first_denied(self.client, subject, _attempts(access.rules, namespace))
        if denied is not None:
            raise Denied(message(f"'{denied.what}' in namespace {namespace}"))
        for name in access.cluster_roles:
            bind = Attempt("bind", "rbac.authorization.k8s.io", "clusterroles", namespace, name, f"bind {name}")
            if await first_denied(self.client, subject, [bind]) is None:
                continue
            view = roles[name]
            if view.info is None:
                # Not there yet: whatever is created under this name later would be bound unchecked.
                raise Denied(message(f"ClusterRole {name!r}, which does not exist (only 'bind' on it admits that)"))
            inner = await first_denied(self.client, subject, _cluster_role_attempts(view.rules, namespace))
            if inner is not None:
                raise Denied(message(f"ClusterRole {name!r} (no 'bind' on it, and no '{inner.what}')"))

    @staticmethod
    def _checked_proof(
        agent: AgentIdentity, previous: AgentIdentity | None, roles: Mapping[str, ClusterRoleView]
    ) -> dict[str, str] | None:
        """The proof the mutating webhook stamped on this write, which must be what admission sees now."""
        if previous is not None and _only_restricts(previous, agent):
            expected = admitted.parse(previous.metadata.annotations)
        else:
            refs = list(dict.fromkeys(agent.spec.cluster_role_refs))
            expected = admitted.stamp(refs, {name: roles[name].uid for name in refs})
        if admitted.parse(agent.metadata.annotations) != expected:
            raise Denied(
                f"metadata.annotations[{admitted.ANNOTATION}]: does not match the ClusterRoles as they are now "
                "(one was created or deleted during this write, or the mutating webhook did not run): retry"
            )
        return expected

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


# The spec fields a kill-switch write changes (and, with them, nothing else): see ``webhooks.configuration``.
KILL_SWITCH_FIELDS = ("supervision", "revoked", "revocationReason")


def only_kill_switch_changes(old_spec: Mapping[str, Any], new_spec: Mapping[str, Any]) -> bool:
    """True if two raw specs differ in nothing but supervision and revocation."""

    def rest(spec: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in spec.items() if key not in KILL_SWITCH_FIELDS}

    return rest(old_spec) == rest(new_spec)


def _only_restricts(previous: AgentIdentity | None, agent: AgentIdentity) -> bool:
    """True for updates that only change supervision or revocation (what a human must always be able to do)."""
    if previous is None:
        return False
    before, after = (spec.model_dump(by_alias=True, mode="json") for spec in (previous.spec, agent.spec))
    return only_kill_switch_changes(before, after)


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
