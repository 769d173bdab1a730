"""AgentPolicy evaluation: which policies govern a namespace, their strictest combination, and an ordered chain
of small checks, each with a reason constant and a path-qualified message.

Called by the admission webhook (a violation rejects the write) and by the reconciler (the same checks shrink
an existing agent's grant when a policy tightens: never silently wider). Pure: namespaces' labels, policies and
the clock come in as values.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from agentid.api.durations import parse as parse_duration
from agentid.api.v1alpha1 import (
    DEFAULT_FORBIDDEN_RESOURCES,
    DEFAULT_FORBIDDEN_VERBS,
    AgentIdentitySpec,
    AgentPolicy,
    LabelSelector,
    PolicyRule,
    SupervisionMode,
)
from agentid.domain import reasons
from agentid.domain.supervision import MODES_BY_ACCESS, Access, ClusterRoleInfo, Withheld, effective_access

# From most to least access: a mode a policy does not allow is lowered to the next allowed one.


@dataclass(frozen=True)
class Violation:
    path: str
    message: str
    reason: str = reasons.POLICY_VIOLATION

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        if requirement.operator == "In" and value not in requirement.values:
            return False
        if requirement.operator == "NotIn" and present and value in requirement.values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def _intersect(lists: Iterable[Sequence[str] | None]) -> frozenset[str] | None:
    result: frozenset[str] | None = None
    for values in lists:
        if values is not None:
            result = frozenset(values) if result is None else result & frozenset(values)
    return result


def _minimum(durations: Iterable[str | None]) -> dt.timedelta | None:
    parsed = [parse_duration(value) for value in durations if value is not None]
    return min(parsed) if parsed else None


@dataclass(frozen=True)
class EffectivePolicy:
    """The strictest combination of every policy selecting a namespace (``names`` says which ones)."""

    names: tuple[str, ...] = ()
    allowed_api_groups: frozenset[str] | None = None
    allowed_resources: frozenset[str] | None = None
    allowed_verbs: frozenset[str] | None = None
    forbidden_resources: frozenset[str] = frozenset()
    forbidden_verbs: frozenset[str] = frozenset()
    grantable_cluster_roles: frozenset[str] | None = None
    max_token_ttl: dt.timedelta | None = None
    max_lifetime: dt.timedelta | None = None
    owner_patterns: tuple[tuple[str, ...], ...] = ()  # the owner must match one pattern of every tuple
    allowed_modes: frozenset[SupervisionMode] | None = None
    owner_ceiling: bool = False

    @property
    def governed(self) -> bool:
        return bool(self.names)

    @property
    def label(self) -> str:
        return ", ".join(self.names)


BASELINE_NAME = "agentid-baseline"
# What applies where no AgentPolicy selects a namespace: the defaults of an empty AgentPolicy. Without it, an
# agent could be handed `get secrets` and read the private keys of the other agents in its namespace.
BASELINE = EffectivePolicy(
    names=(BASELINE_NAME,),
    forbidden_resources=frozenset(DEFAULT_FORBIDDEN_RESOURCES),
    forbidden_verbs=frozenset(DEFAULT_FORBIDDEN_VERBS),
)
NO_POLICY = EffectivePolicy()  # nothing at all: for tests of the checks themselves


def effective_policy(policies: Iterable[AgentPolicy], namespace_labels: Mapping[str, str]) -> EffectivePolicy:
    selected = sorted(
        (policy for policy in policies if selects(policy.spec.namespace_selector, namespace_labels)),
        key=lambda policy: policy.name,
    )
    if not selected:
        return BASELINE
    specs = [policy.spec for policy in selected]
    modes = _intersect(
        None if spec.allowed_supervision_modes is None else [mode.value for mode in spec.allowed_supervision_modes]
        for spec in specs
    )
    return EffectivePolicy(
        names=tuple(policy.name for policy in selected),
        allowed_api_groups=_intersect(spec.allowed_api_groups for spec in specs),
        allowed_resources=_intersect(spec.allowed_resources for spec in specs),
        allowed_verbs=_intersect(spec.allowed_verbs for spec in specs),
        forbidden_resources=frozenset().union(*(spec.forbidden_resources for spec in specs)),
        forbidden_verbs=frozenset().union(*(spec.forbidden_verbs for spec in specs)),
        grantable_cluster_roles=_intersect(spec.grantable_cluster_roles for spec in specs),
        max_token_ttl=_minimum(spec.max_token_ttl for spec in specs),
        max_lifetime=_minimum(spec.max_lifetime for spec in specs),
        owner_patterns=tuple(tuple(spec.allowed_owners) for spec in specs if spec.allowed_owners is not None),
        allowed_modes=frozenset(SupervisionMode(mode) for mode in modes) if modes is not None else None,
        owner_ceiling=any(spec.owner_ceiling for spec in specs),
    )


# -- the ordered chain of checks ---------------------------------------------------------------------------------

ClusterRoles = Mapping[str, ClusterRoleInfo | None]
Check = Callable[[AgentIdentitySpec, EffectivePolicy, dt.datetime, ClusterRoles], list[Violation]]


def _sorted(values: Iterable[str]) -> str:
    return ", ".join(sorted(values)) or "none"


def check_owner(
    spec: AgentIdentitySpec, policy: EffectivePolicy, now: dt.datetime, cluster_roles: ClusterRoles
) -> list[Violation]:
    for patterns in policy.owner_patterns:
        if not any(fnmatch.fnmatchcase(spec.owner.name, pattern) for pattern in patterns):
            message = f"owner {spec.owner.name!r} matches none of the allowed owners ({', '.join(patterns)})"
            return [Violation("spec.owner.name", f"{message} [policy {policy.label}]")]
    return []


def check_supervision(
    spec: AgentIdentitySpec, policy: EffectivePolicy, now: dt.datetime, cluster_roles: ClusterRoles
) -> list[Violation]:
    mode = spec.supervision.mode
    if policy.allowed_modes is not None and mode not in policy.allowed_modes:
        allowed = _sorted(m.value for m in policy.allowed_modes)
        return [
            Violation(
                "spec.supervision.mode", f"{mode.value} is not allowed (allowed: {allowed}) [policy {policy.label}]"
            )
        ]
    return []


def check_lifetime(
    spec: AgentIdentitySpec, policy: EffectivePolicy, now: dt.datetime, cluster_roles: ClusterRoles
) -> list[Violation]:
    if policy.max_lifetime is None:
        return []
    if spec.expires_at is None:
        message = f"required: agents here may live at most {policy.max_lifetime}"
    elif spec.expires_at - now > policy.max_lifetime:
        message = f"{spec.expires_at.isoformat()} is more than {policy.max_lifetime} away"
    else:
        return []
    return [Violation("spec.expiresAt", f"{message} [policy {policy.label}]")]


def check_token_ttl(
    spec: AgentIdentitySpec, policy: EffectivePolicy, now: dt.datetime, cluster_roles: ClusterRoles
) -> list[Violation]:
    if policy.max_token_ttl is not None and spec.credentials.ttl > policy.max_token_ttl:
        message = f"{spec.credentials.token_ttl} exceeds the maximum {policy.max_token_ttl} [policy {policy.label}]"
        return [Violation("spec.credentials.tokenTTL", message)]
    return []


def rule_violations(rule: PolicyRule, policy: EffectivePolicy) -> list[str]:
    """What in one rule a policy does not allow, as short phrases."""
    problems = []
    if policy.allowed_api_groups is not None:
        problems += [f"API group {g!r} is not allowed" for g in rule.api_groups if g not in policy.allowed_api_groups]
    for resource in rule.resources:
        if resource in policy.forbidden_resources:
            problems.append(f"resource {resource!r} is forbidden")
        elif policy.allowed_resources is not None and resource not in policy.allowed_resources:
            problems.append(f"resource {resource!r} is not allowed")
    for verb in rule.verbs:
        if verb in policy.forbidden_verbs:
            problems.append(f"verb {verb!r} is forbidden")
        elif policy.allowed_verbs is not None and verb not in policy.allowed_verbs:
            problems.append(f"verb {verb!r} is not allowed")
    return problems


def check_rules(
    spec: AgentIdentitySpec, policy: EffectivePolicy, now: dt.datetime, cluster_roles: ClusterRoles
) -> list[Violation]:
    violations = []
    for index, rule in enumerate(spec.permissions):
        problems = rule_violations(rule, policy)
        if problems:
            violations.append(Violation(f"spec.permissions[{index}]", f"{'; '.join(problems)} [policy {policy.label}]"))
    return violations


def cluster_role_problems(info: ClusterRoleInfo, policy: EffectivePolicy) -> list[str]:
    """What a ClusterRole grants that the policy forbids (a ClusterRole listed as grantable is trusted as is)."""
    if policy.grantable_cluster_roles is not None:
        return []
    problems = [
        f"it grants {resource!r}, which is forbidden"
        for resource in sorted(info.resources)
        if resource in policy.forbidden_resources or resource == "*"
    ]
    problems += [
        f"it grants the verb {verb!r}, which is forbidden"
        for verb in sorted(info.verbs)
        if verb in policy.forbidden_verbs or verb == "*"
    ]
    return problems


def check_cluster_roles(
    spec: AgentIdentitySpec, policy: EffectivePolicy, now: dt.datetime, cluster_roles: ClusterRoles
) -> list[Violation]:
    grantable = policy.grantable_cluster_roles
    violations = []
    for index, name in enumerate(spec.cluster_role_refs):
        path = f"spec.clusterRoleRefs[{index}]"
        if grantable is not None and name not in grantable:
            message = f"ClusterRole {name!r} is not grantable (grantable: {_sorted(grantable)})"
            violations.append(Violation(path, f"{message} [policy {policy.label}]"))
            continue
        info = cluster_roles.get(name)
        problems = cluster_role_problems(info, policy) if info is not None else []
        if problems:
            message = f"ClusterRole {name!r}: {'; '.join(problems)} (list it in grantableClusterRoles to allow it)"
            violations.append(Violation(path, f"{message} [policy {policy.label}]"))
    return violations


CHECKS: tuple[Check, ...] = (
    check_owner,
    check_supervision,
    check_lifetime,
    check_token_ttl,
    check_rules,
    check_cluster_roles,
)


def violations(
    spec: AgentIdentitySpec, policy: EffectivePolicy, now: dt.datetime, cluster_roles: ClusterRoles | None = None
) -> list[Violation]:
    """Every violation, in the order of the checks (the first one is what admission reports first)."""
    if not policy.governed:
        return []
    roles = cluster_roles or {}
    return [violation for check in CHECKS for violation in check(spec, policy, now, roles)]


# -- reconcile time: shrink, never widen -------------------------------------------------------------------------


def allowed_mode(spec: AgentIdentitySpec, policy: EffectivePolicy) -> SupervisionMode:
    """The spec's mode, or the nearest mode with less access that the policy allows (Suspended at worst)."""
    requested = spec.supervision.mode
    if policy.allowed_modes is None or requested in policy.allowed_modes:
        return requested
    lower = MODES_BY_ACCESS[MODES_BY_ACCESS.index(requested) + 1 :]
    return next((mode for mode in lower if mode in policy.allowed_modes), SupervisionMode.SUSPENDED)


def _permitted(value: str, allowed: frozenset[str] | None, forbidden: frozenset[str] = frozenset()) -> bool:
    return value not in forbidden and (allowed is None or value in allowed)


def _narrow(rule: PolicyRule, policy: EffectivePolicy) -> PolicyRule | None:
    groups = [g for g in rule.api_groups if _permitted(g, policy.allowed_api_groups)]
    resources = [r for r in rule.resources if _permitted(r, policy.allowed_resources, policy.forbidden_resources)]
    verbs = [v for v in rule.verbs if _permitted(v, policy.allowed_verbs, policy.forbidden_verbs)]
    if not groups or not resources or not verbs:
        return None
    return rule.model_copy(update={"api_groups": groups, "resources": resources, "verbs": verbs})


def constrain(
    access: Access, spec: AgentIdentitySpec, policy: EffectivePolicy, now: dt.datetime, cluster_roles: ClusterRoles
) -> Access:
    """The part of ``access`` the policy allows; every cut is recorded as a PolicyViolation problem."""
    if not policy.governed:
        return access
    found = violations(spec, policy, now, cluster_roles)
    withheld = list(access.withheld) + [Withheld(reasons.POLICY_VIOLATION, str(v), problem=True) for v in found]
    disqualifying = [v for v in found if v.path in ("spec.owner.name", "spec.expiresAt")]
    if disqualifying:
        return Access(withheld=tuple(withheld))
    rules = tuple(narrowed for rule in access.rules if (narrowed := _narrow(rule, policy)) is not None)
    roles = tuple(
        name
        for name in access.cluster_roles
        if _permitted(name, policy.grantable_cluster_roles)
        and not ((info := cluster_roles.get(name)) is not None and cluster_role_problems(info, policy))
    )
    return Access(rules=rules, cluster_roles=roles, withheld=tuple(withheld))


def governed_access(
    spec: AgentIdentitySpec,
    policy: EffectivePolicy,
    cluster_roles: Mapping[str, ClusterRoleInfo | None],
    now: dt.datetime,
    admitted: Mapping[str, str] | None = None,
) -> Access:
    """Supervision first (lowered to a mode the policy allows), then the policy's ceilings. ``admitted`` is the
    ClusterRole proof admission stamped (``domain.admitted``); None where there is none to honour."""
    mode = allowed_mode(spec, policy)
    supervised_spec = (
        spec
        if mode is spec.supervision.mode
        else spec.model_copy(update={"supervision": spec.supervision.model_copy(update={"mode": mode})})
    )
    return constrain(effective_access(supervised_spec, cluster_roles, admitted), spec, policy, now, cluster_roles)


def token_ttl(spec: AgentIdentitySpec, policy: EffectivePolicy) -> dt.timedelta:
    """The token lifetime in force: the spec's tokenTTL, cut to a policy's maximum."""
    ttl = spec.credentials.ttl
    return min(ttl, policy.max_token_ttl) if policy.max_token_ttl is not None else ttl
