"""Supervision mode -> the access an agent actually holds. The one place that owns these semantics (api.md).

Called by the reconciler (what to grant), the webhook (to explain), and the CLI (describe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentid.api.v1alpha1 import READ_VERBS, AgentIdentitySpec, PolicyRule, SupervisionMode
from agentid.domain import admitted as admitted_roles
from agentid.domain import reasons


@dataclass(frozen=True)
class ClusterRoleInfo:
    """What the reconciler knows about a referenced ClusterRole (from the cluster): whether it only reads, and
    which resources and verbs its rules name (so policies can refuse ClusterRoles that grant forbidden ones)."""

    name: str
    read_only: bool
    resources: frozenset[str] = frozenset()
    verbs: frozenset[str] = frozenset()
    uid: str = ""
    rules: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)  # as served: for the owner ceiling


@dataclass(frozen=True)
class Withheld:
    """Something declared but not granted, and why. ``problem``: the spec cannot be honoured (Ready=False);
    otherwise it is the supervision mode working as intended."""

    reason: str
    message: str
    problem: bool = False


@dataclass(frozen=True)
class Access:
    """The effective grant: rules for the agent's Role and ClusterRoles bound in its namespace."""

    rules: tuple[PolicyRule, ...] = ()
    cluster_roles: tuple[str, ...] = ()
    withheld: tuple[Withheld, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.rules and not self.cluster_roles

    @property
    def problems(self) -> tuple[Withheld, ...]:
        return tuple(item for item in self.withheld if item.problem)


NO_ACCESS = Access()
# The one ordering of the modes, most access first: a policy lowers a mode along it, the token service takes the
# most restrictive of what spec and status say.
MODES_BY_ACCESS = (SupervisionMode.AUTONOMOUS, SupervisionMode.SUPERVISED, SupervisionMode.SUSPENDED)


def most_restrictive(modes: Sequence[SupervisionMode]) -> SupervisionMode:
    return max(modes, key=MODES_BY_ACCESS.index)


def read_only(rule: PolicyRule) -> PolicyRule | None:
    """The read verbs of a rule, or None if it has none."""
    verbs = [verb for verb in rule.verbs if verb in READ_VERBS]
    return rule.model_copy(update={"verbs": verbs}) if verbs else None


def effective_access(
    spec: AgentIdentitySpec,
    cluster_roles: Mapping[str, ClusterRoleInfo | None],
    admitted: admitted_roles.Proof | None = None,
) -> Access:
    """Apply the supervision mode to the declared permissions and ClusterRole refs.

    ``cluster_roles`` maps each referenced name to what the cluster says (None: it does not exist). A missing
    ClusterRole is never bound (binding a name that does not exist yet would grant whatever appears later), nor
    is one that admission never checked for this agent (``admitted``: the proof admission stamped).
    """
    mode = spec.supervision.mode
    if mode is SupervisionMode.SUSPENDED:
        return NO_ACCESS
    withheld: list[Withheld] = []
    rules: Sequence[PolicyRule] = spec.permissions
    if mode is SupervisionMode.SUPERVISED:
        rules = [narrowed for rule in spec.permissions if (narrowed := read_only(rule)) is not None]
    granted_roles: list[str] = []
    for name in dict.fromkeys(spec.cluster_role_refs):  # de-duplicated, order kept
        info = cluster_roles.get(name)
        if info is None:
            missing = f"ClusterRole {name!r} does not exist"
            withheld.append(Withheld(reasons.CLUSTER_ROLE_NOT_FOUND, missing, problem=True))
        elif not admitted_roles.admitted(admitted, name, info.uid):
            message = (
                f"ClusterRole {name!r} was created or re-created after admission checked this agent: change the "
                "agent's spec outside supervision and revocation (e.g. its displayName) to have it checked again"
            )
            withheld.append(Withheld(reasons.CLUSTER_ROLE_NOT_ADMITTED, message, problem=True))
        elif mode is SupervisionMode.SUPERVISED and not info.read_only:
            withheld.append(
                Withheld(
                    reasons.CLUSTER_ROLE_NOT_READ_ONLY,
                    f"ClusterRole {name!r} is not read-only; withheld while Supervised",
                )
            )
        else:
            granted_roles.append(name)
    return Access(rules=tuple(rules), cluster_roles=tuple(granted_roles), withheld=tuple(withheld))


def is_read_only(rules: Sequence[Mapping[str, object]]) -> bool:
    """True if a ClusterRole's rules only read (get/list/watch), including non-resource URLs."""
    for rule in rules:
        verbs = rule.get("verbs") or []
        if not isinstance(verbs, list) or any(verb not in READ_VERBS for verb in verbs):
            return False
    return True
