"""One reconciliation pass as pure functions: terminal state, object plan, status, Events, next wake-up.

Called by ``agentid.reconcile.agents`` with what it gathered from the cluster. Nothing here does I/O or reads a
clock: ``now`` and observations come in, decisions come out, so every rule of api.md is unit-tested here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentid.api.durations import format_duration
from agentid.api.v1alpha1 import (
    AgentIdentity,
    AgentIdentityStatus,
    Attribution,
    KeyStatus,
    Phase,
    SupervisionMode,
)
from agentid.domain import desired, naming, reasons
from agentid.domain.conditions import Status, find, set_condition
from agentid.domain.keyring import KeyAction, ObservedKey, earliest_retirement, next_rotation
from agentid.domain.supervision import Access

Manifest = dict[str, Any]
# Deletion order: access paths first (RBAC applies within a second), then the keys, then the identity itself.
DELETE_ORDER = ("RoleBinding", "Role", "Secret", "ServiceAccount")


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    name: str
    uid: str | None = None


@dataclass(frozen=True)
class Observed:
    """The agent's objects as the cluster holds them (public parts only), keyed by (kind, name): only objects it
    owns (``ownership.owns``); ``strangers`` are objects labelled as its own that it does not own."""

    objects: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    key: ObservedKey | None = None
    strangers: frozenset[tuple[str, str]] = frozenset()

    def get(self, kind: str, name: str) -> Mapping[str, Any] | None:
        return self.objects.get((kind, name))


@dataclass(frozen=True)
class ObjectPlan:
    applies: tuple[Manifest, ...] = ()
    deletes: tuple[ObjectRef, ...] = ()
    repaired: tuple[str, ...] = ()  # "RoleBinding x (deleted)", for the DriftRepaired Event

    @property
    def empty(self) -> bool:
        return not self.applies and not self.deletes


def without_applies_to(plan: ObjectPlan, names: Collection[tuple[str, str]]) -> ObjectPlan:
    """The plan minus writes to names a stranger holds (agentid never writes what it does not own)."""
    if not names:
        return plan
    kept = tuple(m for m in plan.applies if (m["kind"], m["metadata"]["name"]) not in names)
    dropped = {f"{m['kind']} {m['metadata']['name']} " for m in plan.applies if m not in kept}
    return ObjectPlan(
        applies=kept,
        deletes=plan.deletes,
        repaired=tuple(r for r in plan.repaired if not any(r.startswith(prefix) for prefix in dropped)),
    )


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str
    action: str


def terminal_phase(agent: AgentIdentity, now: dt.datetime) -> Phase | None:
    """Revoked and Expired are terminal: once recorded in status they stay, whatever the spec says later."""
    if agent.status.phase.terminal:
        return agent.status.phase
    if agent.spec.revoked:
        return Phase.REVOKED
    if agent.spec.expires_at is not None and agent.spec.expires_at <= now:
        return Phase.EXPIRED
    return None


def contains(observed: Any, wanted: Any) -> bool:
    """Desired ⊆ observed: maps by subset, lists and scalars by equality (server-side apply semantics)."""
    if isinstance(wanted, Mapping):
        return isinstance(observed, Mapping) and all(
            key in observed and contains(observed[key], value) for key, value in wanted.items()
        )
    return bool(observed == wanted)


def _describe(kind: str, name: str, how: str) -> str:
    return f"{kind} {name} ({how})"


def plan_objects(
    agent: AgentIdentity,
    observed: Observed,
    *,
    access: Access,
    agent_id: str,
    terminal: bool,
    published: Sequence[KeyStatus] = (),
) -> ObjectPlan:
    """What to apply and delete so the cluster holds exactly the agent's declared access (and the
    ServiceAccount mirrors the ``published`` keys)."""
    wanted: list[Manifest] = [] if terminal else [desired.service_account(agent, agent_id, published)]
    if not terminal:
        wanted += desired.access_objects(agent, access)
    wanted_keys = {(manifest["kind"], manifest["metadata"]["name"]) for manifest in wanted}
    provisioned_before = agent.status.phase is not Phase.PENDING
    spec_unchanged = agent.status.observed_generation == agent.metadata.generation

    applies: list[Manifest] = []
    repaired: list[str] = []
    for manifest in wanted:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        current = observed.get(kind, name)
        if current is not None and contains(current, manifest):
            continue
        applies.append(manifest)
        if provisioned_before and spec_unchanged:
            repaired.append(_describe(kind, name, "missing" if current is None else "modified"))

    deletes = [
        ObjectRef(kind, name, str(body.get("metadata", {}).get("uid") or "") or None)
        for (kind, name), body in observed.objects.items()
        if (kind, name) not in wanted_keys and (kind != "Secret" or terminal)
    ]
    deletes.sort(key=lambda ref: (DELETE_ORDER.index(ref.kind) if ref.kind in DELETE_ORDER else 0, ref.name))
    return ObjectPlan(applies=tuple(applies), deletes=tuple(deletes), repaired=tuple(repaired))


def removal(observed: Observed, unlisted: tuple[ObjectRef, ...] = ()) -> ObjectPlan:
    """Revocation, expiry and deletion, the one rule: everything the agent owns goes, in ``DELETE_ORDER`` (access
    first, then keys, then the identity), also its own objects the watch no longer shows (``unlisted``, looked up
    by name). ``observed`` holds only owned objects, so nothing of a stranger's is ever named here. The spec plays
    no part: an agent whose spec this version cannot parse is removed all the same."""
    owned = (
        ObjectRef(kind, name, str(body.get("metadata", {}).get("uid") or "") or None)
        for (kind, name), body in observed.objects.items()
    )
    refs = {(ref.kind, ref.name): ref for ref in (*owned, *unlisted)}
    ordered = sorted(refs.values(), key=lambda ref: (DELETE_ORDER.index(ref.kind), ref.name))
    return ObjectPlan(deletes=tuple(ordered))


@dataclass(frozen=True)
class Outcome:
    """What the pass produced, for status and Events."""

    phase: Phase
    access: Access
    keys: tuple[KeyStatus, ...]
    key: ObservedKey | None
    service_account_uid: str | None
    key_action: KeyAction = KeyAction.KEEP
    repaired: tuple[str, ...] = ()
    revoked_key_ids: tuple[str, ...] = ()
    created_by: Attribution | None = None
    last_changed_by: Attribution | None = None
    supervision: SupervisionMode | None = None  # in force, if a policy holds it below the spec's mode
    token_ttl: dt.timedelta | None = None  # in force, if a policy caps it below the spec's tokenTTL


def phase_for(agent: AgentIdentity, access: Access, terminal: Phase | None) -> Phase:
    if terminal is not None:
        return terminal
    if agent.spec.supervision.mode is SupervisionMode.SUSPENDED:
        return Phase.SUSPENDED  # nothing is granted: problems with the grant are moot until it resumes
    if access.problems:
        return Phase.FAILED
    return {
        SupervisionMode.AUTONOMOUS: Phase.ACTIVE,
        SupervisionMode.SUPERVISED: Phase.SUPERVISED,
        SupervisionMode.SUSPENDED: Phase.SUSPENDED,
    }[agent.spec.supervision.mode]


def _access_message(access: Access) -> str:
    parts = [f"{len(access.rules)} rule(s)"]
    if access.cluster_roles:
        parts.append("ClusterRoles: " + ", ".join(access.cluster_roles))
    message = "; ".join(parts)
    if access.withheld:
        message += ". Withheld: " + "; ".join(item.message for item in access.withheld)
    return message


def compute_status(agent: AgentIdentity, outcome: Outcome, *, agent_id: str, now: dt.datetime) -> AgentIdentityStatus:
    """The full status for this pass (written only if it differs from what the object has)."""
    generation = agent.metadata.generation
    previous = agent.status
    terminal = outcome.phase.terminal
    conditions = list(previous.conditions)

    def condition(type_: str, status: Status, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions, type_=type_, status=status, reason=reason, message=message, generation=generation, now=now
        )

    key = outcome.key
    if terminal:
        terminal_reason = reasons.EXPIRED if outcome.phase is Phase.EXPIRED else reasons.REVOKED_BY_USER
        terminal_message = _terminal_message(agent, outcome.phase)
        condition(reasons.REVOKED, "True", terminal_reason, terminal_message)
        condition(reasons.CREDENTIALS_READY, "False", reasons.KEYS_REMOVED, "keys deleted and recorded as revoked")
        condition(reasons.ACCESS_READY, "False", terminal_reason, "all bindings and the ServiceAccount removed")
        condition(reasons.READY, "False", terminal_reason, terminal_message)
    else:
        condition(reasons.REVOKED, "False", reasons.NOT_REVOKED, "the agent is not revoked")
        if key is not None:
            rotation = next_rotation(key, agent.spec.credentials).isoformat()
            condition(
                reasons.CREDENTIALS_READY,
                "True",
                reasons.KEY_ACTIVE,
                f"key {key.key_id} ({key.algorithm.value}) is active; next rotation at {rotation}",
            )
        problems = outcome.access.problems
        suspended = agent.spec.supervision.mode is SupervisionMode.SUSPENDED
        if suspended:
            withheld = f" (on resume: {_access_message(outcome.access)})" if problems else ""
            condition(reasons.ACCESS_READY, "True", reasons.SUSPENDED, f"Suspended: no access is granted{withheld}")
            condition(reasons.READY, "True", reasons.SUSPENDED, "the agent is suspended; resuming restores its access")
        elif problems:
            condition(reasons.ACCESS_READY, "False", problems[0].reason, _access_message(outcome.access))
            condition(reasons.READY, "False", problems[0].reason, problems[0].message)
        else:
            condition(reasons.ACCESS_READY, "True", reasons.GRANTED, _access_message(outcome.access))
            condition(
                reasons.READY,
                "True",
                reasons.PROVISIONED,
                f"{agent.spec.supervision.mode.value}: identity, keys and access are in place",
            )

    revoked_at = previous.revoked_at
    if terminal and revoked_at is None:
        revoked_at = agent.spec.expires_at if outcome.phase is Phase.EXPIRED and agent.spec.expires_at else now
    return AgentIdentityStatus(
        observed_generation=generation,
        phase=outcome.phase,
        agent_id=agent_id,
        service_account_name=naming.service_account(agent.name),
        service_account_uid=outcome.service_account_uid if not terminal else previous.service_account_uid,
        supervision=(outcome.supervision or agent.spec.supervision.mode) if not terminal else previous.supervision,
        token_ttl=format_duration(outcome.token_ttl or agent.spec.credentials.ttl) if not terminal else None,
        keys=[] if terminal else list(outcome.keys),
        revoked_key_ids=list(outcome.revoked_key_ids) if terminal else list(previous.revoked_key_ids),
        last_rotation_time=key.created_at if key is not None and not terminal else None,
        next_rotation_time=next_rotation(key, agent.spec.credentials) if key is not None and not terminal else None,
        granted_rules=0 if terminal else len(outcome.access.rules),
        granted_cluster_roles=[] if terminal else list(outcome.access.cluster_roles),
        revoked_at=revoked_at if terminal else None,
        revocation_reason=_terminal_message(agent, outcome.phase) if terminal else None,
        created_by=outcome.created_by or previous.created_by,
        last_changed_by=outcome.last_changed_by or previous.last_changed_by,
        conditions=conditions,
    )


def _terminal_message(agent: AgentIdentity, phase: Phase) -> str:
    if phase is Phase.EXPIRED:
        expiry = agent.spec.expires_at.isoformat() if agent.spec.expires_at else "its expiry time"
        return f"expired at {expiry}"
    if agent.status.revocation_reason and agent.status.phase.terminal:
        return agent.status.revocation_reason
    return agent.spec.revocation_reason or "revoked"


def next_wakeup(agent: AgentIdentity, status: AgentIdentityStatus) -> dt.datetime | None:
    """The next moment something changes by the clock alone: expiry, rotation, a key's retirement."""
    if status.phase.terminal:
        return None
    candidates = [status.next_rotation_time, earliest_retirement(status.keys), agent.spec.expires_at]
    present = [moment for moment in candidates if moment is not None]
    return min(present) if present else None


def _by(actor: Attribution | None) -> str:
    return f" by {actor.username}" if actor is not None else ""


def transition_events(
    agent: AgentIdentity, new: AgentIdentityStatus, outcome: Outcome, *, actor: Attribution | None
) -> list[EventSpec]:
    """Events for what changed between the object's status and the new one, each naming who caused it."""
    old = agent.status
    by = _by(actor)
    if new.phase.terminal:
        if old.phase.terminal:
            return []
        expired = new.phase is Phase.EXPIRED
        reason = reasons.EVENT_EXPIRED if expired else reasons.EVENT_REVOKED
        note = f"{new.revocation_reason}{'' if expired else by}; bindings, keys and ServiceAccount removed"
        return [EventSpec("Warning", reason, note, "Revoke")]
    events = _supervision_events(agent, new, by)
    kid = _active_kid(new)
    if outcome.key_action in (KeyAction.ROTATE, KeyAction.CHANGE_ALGORITHM):
        events.append(
            EventSpec("Normal", reasons.EVENT_KEY_ROTATED, f"new key {kid} active; {_retiring(new)}", "RotateKey")
        )
    elif outcome.key_action is KeyAction.REPLACE_LOST:
        note = f"the key Secret was missing or unreadable; new key {kid} generated; {_retiring(new)}"
        events.append(EventSpec("Warning", reasons.EVENT_KEY_REGENERATED, note, "RegenerateKey"))
    if outcome.repaired:
        note = "restored " + ", ".join(outcome.repaired)
        events.append(EventSpec("Warning", reasons.EVENT_DRIFT_REPAIRED, note, "RepairDrift"))
    old_ready, new_ready = find(old.conditions, reasons.READY), find(new.conditions, reasons.READY)
    newly_failing = old_ready is None or old_ready.reason != getattr(new_ready, "reason", None)
    if new_ready is not None and new_ready.status == "False" and newly_failing:
        events.append(EventSpec("Warning", new_ready.reason, new_ready.message, "Reconcile"))
    return events


def _supervision_events(agent: AgentIdentity, new: AgentIdentityStatus, by: str) -> list[EventSpec]:
    old = agent.status
    if old.phase is Phase.PENDING:
        mode = new.supervision.value if new.supervision else ""
        note = f"ServiceAccount {new.service_account_name}, key {_active_kid(new)}, supervision {mode}{by}"
        return [EventSpec("Normal", reasons.EVENT_PROVISIONED, note, "Provision")]
    if old.supervision is None or new.supervision is None or old.supervision == new.supervision:
        return []
    note = f"{old.supervision.value} -> {new.supervision.value}{by}"
    if agent.spec.supervision.reason:
        note += f": {agent.spec.supervision.reason}"
    if new.supervision is SupervisionMode.SUSPENDED:
        return [EventSpec("Warning", reasons.EVENT_SUSPENDED, note, "Suspend")]
    if old.supervision is SupervisionMode.SUSPENDED:
        return [EventSpec("Normal", reasons.EVENT_RESUMED, note, "Resume")]
    return [EventSpec("Normal", reasons.EVENT_SUPERVISION_CHANGED, note, "ChangeSupervision")]


def _active_kid(status: AgentIdentityStatus) -> str:
    return next((key.key_id for key in status.keys if key.state.value == "Active"), "-")


def _retiring(status: AgentIdentityStatus) -> str:
    retiring = [key for key in status.keys if key.state.value == "Retiring"]
    if not retiring:
        return "no key retiring"
    return ", ".join(
        f"{key.key_id} retiring until {key.retires_at.isoformat() if key.retires_at else '?'}" for key in retiring
    )


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch turning ``old`` status into ``new`` (None when they are equal)."""
    old = old or {}
    if old == new:
        return None
    patch: dict[str, Any] = dict(new)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch
