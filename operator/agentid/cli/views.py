"""What the kubectl plugin shows, as pure functions: agents, Events and tokens in, rows and lines out.

Called by ``agentid.cli.agents`` (which does the I/O and prints with rich) and unit-tested without a cluster.
Every function takes ``now`` explicitly. Agents are read through the API models (``AgentIdentity.from_body``);
an object the models cannot parse (e.g. written by a newer version) still gets a row, marked invalid, so a list
never fails because of one odd object.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic

from agentid.api.v1alpha1 import AgentIdentity, Condition
from agentid.domain import claims, clock, reasons
from agentid.domain.claims import Refused

NONE = "-"
UNVERIFIED_BANNER = (
    "UNVERIFIED: decoded without checking the signature, issuer, audience or expiry "
    "(`agentid verify` checks them against the issuer's JWKS)"
)


# -- durations and times --------------------------------------------------------------------------------------------


def human_duration(delta: dt.timedelta) -> str:
    """kubectl's AGE format (k8s.io/apimachinery duration.HumanDuration): 45s, 5m30s, 97m, 5h10m, 3d4h, 400d."""
    seconds = max(int(delta.total_seconds()), 0)
    minutes, hours, days, years = seconds // 60, seconds // 3600, seconds // 86400, seconds // (86400 * 365)
    # (below this many seconds, major unit, minor unit or None): the first matching line wins.
    scales: list[tuple[float, tuple[int, str], tuple[int, str] | None]] = [
        (120, (seconds, "s"), None),
        (600, (minutes, "m"), (seconds % 60, "s")),
        (3 * 3600, (minutes, "m"), None),
        (8 * 3600, (hours, "h"), (minutes % 60, "m")),
        (48 * 3600, (hours, "h"), None),
        (8 * 86400, (days, "d"), (hours % 24, "h")),
        (2 * 365 * 86400, (days, "d"), None),
        (8 * 365 * 86400, (years, "y"), (days % 365, "d")),
        (float("inf"), (years, "y"), None),
    ]
    for limit, (major, unit), minor in scales:
        if seconds < limit:
            return f"{major}{unit}" + (f"{minor[0]}{minor[1]}" if minor and minor[0] else "")
    return f"{years}y"  # unreachable: the last scale has no limit


def timestamp(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else NONE


def relative(moment: dt.datetime | None, now: dt.datetime) -> str:
    """'5m ago' or 'in 10m'."""
    if moment is None:
        return NONE
    if moment <= now:
        return f"{human_duration(now - moment)} ago"
    return f"in {human_duration(moment - now)}"


# -- agents ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentRow:
    """One line of ``agentid list`` (also its JSON form, for scripts)."""

    namespace: str
    name: str
    owner: str
    mode: str
    phase: str
    ready: str
    age: str
    agent_id: str = NONE
    expires: str = NONE
    purpose: str = NONE

    def cells(self, *, with_namespace: bool, wide: bool = False) -> list[str]:
        cells = [self.name, self.owner, self.mode, self.phase, self.ready, self.age]
        if wide:
            cells += [self.agent_id, self.expires, self.purpose]
        return [self.namespace, *cells] if with_namespace else cells


LIST_COLUMNS = ("NAME", "OWNER", "MODE", "PHASE", "READY", "AGE")
WIDE_COLUMNS = ("AGENT-ID", "EXPIRES", "PURPOSE")  # -o wide, the CRD's priority-1 printer columns too


def parse_agent(body: Mapping[str, Any]) -> AgentIdentity | None:
    try:
        return AgentIdentity.from_body(body)
    except pydantic.ValidationError:
        return None


def ready_condition(agent: AgentIdentity) -> Condition | None:
    return next((c for c in agent.status.conditions if c.type == reasons.READY), None)


def is_current(agent: AgentIdentity) -> bool:
    """Has the operator observed the latest spec? (Otherwise status describes an older generation.)"""
    return agent.status.observed_generation == agent.metadata.generation


def ready_cell(agent: AgentIdentity) -> str:
    """True/False from the Ready condition, Unknown until the operator has observed the current generation."""
    condition = ready_condition(agent)
    if condition is None or not is_current(agent):
        return "Unknown"
    if condition.observed_generation is not None and condition.observed_generation != agent.metadata.generation:
        return "Unknown"
    return condition.status


def agent_row(body: Mapping[str, Any], now: dt.datetime) -> AgentRow:
    metadata = body.get("metadata") or {}
    created = clock.parse(metadata.get("creationTimestamp"))
    age = human_duration(now - created) if created else NONE
    namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
    agent = parse_agent(body)
    if agent is None:
        return AgentRow(namespace, name, NONE, NONE, "Invalid", "Unknown", age)
    owner = agent.spec.owner.name if agent.spec.owner.kind == "User" else f"group:{agent.spec.owner.name}"
    return AgentRow(
        namespace=namespace,
        name=name,
        owner=owner,
        mode=agent.spec.supervision.mode.value,
        phase=agent.status.phase.value,
        ready=ready_cell(agent),
        age=age,
        agent_id=agent.status.agent_id or NONE,
        expires=relative(agent.spec.expires_at, now) if agent.spec.expires_at else "never",
        purpose=agent.spec.purpose,
    )


def agent_rows(bodies: Iterable[Mapping[str, Any]], now: dt.datetime) -> list[AgentRow]:
    return sorted((agent_row(body, now) for body in bodies), key=lambda row: (row.namespace, row.name))


def describe_agent(agent: AgentIdentity, now: dt.datetime) -> list[tuple[str, str]]:
    """The label/value lines of ``agentid describe`` (tables of keys, rules and conditions come separately)."""
    spec, status = agent.spec, agent.status
    supervision = spec.supervision.mode.value + (f" ({spec.supervision.reason})" if spec.supervision.reason else "")
    if status.supervision is not None and status.supervision != spec.supervision.mode:
        supervision += f"; in force: {status.supervision.value}"
    ready = ready_condition(agent)
    ready_text = NONE if ready is None else f"{ready_cell(agent)} ({ready.reason}: {ready.message})"
    if not is_current(agent):
        ready_text += (
            f" [status is for generation {status.observed_generation}, spec is generation {agent.metadata.generation}]"
        )
    info = spec.agent
    return [
        ("Name", agent.name),
        ("Namespace", agent.namespace),
        ("UID", agent.metadata.uid),
        ("Display name", spec.display_name or NONE),
        ("Purpose", spec.purpose),
        ("Owner", f"{spec.owner.kind} {spec.owner.name}"),
        ("Agent", " / ".join(v for v in (info.framework, info.model, info.version) if v) if info else NONE),
        ("Agent ID", status.agent_id or NONE),
        ("Supervision", supervision),
        ("Phase", status.phase.value),
        ("Ready", ready_text),
        ("ServiceAccount", _service_account(agent)),
        ("Granted rules", str(status.granted_rules)),
        ("ClusterRoles", _cluster_roles(agent)),
        (
            "Credentials",
            f"{spec.credentials.key_algorithm.value}, rotation {spec.credentials.rotation_period}, "
            f"token TTL {spec.credentials.token_ttl}",
        ),
        ("Audiences", ", ".join(spec.credentials.audiences) or NONE),
        ("Delegation", _delegation(agent)),
        ("Attributes", ", ".join(f"{k}={v}" for k, v in sorted(spec.attributes.items())) or NONE),
        ("Expires", f"{timestamp(spec.expires_at)} ({relative(spec.expires_at, now)})" if spec.expires_at else "never"),
        ("Revoked", _revocation(agent)),
        ("Created by", _attribution(status.created_by)),
        ("Last changed by", _attribution(status.last_changed_by)),
        ("Key rotation", f"last {timestamp(status.last_rotation_time)}, next {timestamp(status.next_rotation_time)}"),
    ]


def _service_account(agent: AgentIdentity) -> str:
    name = agent.status.service_account_name
    if not name:
        return NONE
    return f"{name} (uid {agent.status.service_account_uid})" if agent.status.service_account_uid else name


def _cluster_roles(agent: AgentIdentity) -> str:
    granted = set(agent.status.granted_cluster_roles)
    refs = agent.spec.cluster_role_refs
    return ", ".join(f"{ref} ({'granted' if ref in granted else 'withheld'})" for ref in refs) or NONE


def _delegation(agent: AgentIdentity) -> str:
    actors = [f"{ns}/{name}" for ns, name in (a.resolve(agent.namespace) for a in agent.spec.delegation.allowed_actors)]
    if not actors:
        return "nobody may act on its behalf"
    return f"{', '.join(actors)} may act on its behalf (chain depth at most {agent.spec.delegation.max_depth})"


def _revocation(agent: AgentIdentity) -> str:
    if not agent.spec.revoked:
        return "no"
    reason = agent.spec.revocation_reason or agent.status.revocation_reason
    when = f" at {timestamp(agent.status.revoked_at)}" if agent.status.revoked_at else ""
    return f"yes{when}" + (f": {reason}" if reason else "")


def _attribution(who: Any) -> str:
    if who is None:
        return NONE
    return f"{who.username} at {timestamp(who.time)}"


def key_rows(agent: AgentIdentity) -> list[list[str]]:
    return [
        [key.key_id, key.algorithm.value, key.state.value, timestamp(key.created_at), timestamp(key.retires_at)]
        for key in agent.status.keys
    ]


def permission_rows(agent: AgentIdentity) -> list[list[str]]:
    return [
        [
            ",".join(g or '""' for g in rule.api_groups),
            ",".join(rule.resources),
            ",".join(rule.verbs),
            ",".join(rule.resource_names) or NONE,
        ]
        for rule in agent.spec.permissions
    ]


def condition_rows(agent: AgentIdentity, now: dt.datetime) -> list[list[str]]:
    return [
        [
            c.type,
            c.status,
            c.reason,
            c.message,
            str(c.observed_generation) if c.observed_generation is not None else NONE,
            human_duration(now - c.last_transition_time),
        ]
        for c in agent.status.conditions
    ]


# -- Events ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    """One Event about an agent, as ``agentid audit`` shows it (oldest first)."""

    time: dt.datetime | None
    type: str
    reason: str
    note: str
    reporter: str
    count: int
    uid: str
    sequence: int = 0  # tie-breaker for Events of the same second: their resourceVersion (creation order)

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": timestamp(self.time) if self.time else None,
            "type": self.type,
            "reason": self.reason,
            "note": self.note,
            "reporter": self.reporter,
            "count": self.count,
            "uid": self.uid,
        }


def event_time(event: Mapping[str, Any]) -> dt.datetime | None:
    """When it (last) happened: series, eventTime, the deprecated timestamps, then creation."""
    series = event.get("series") or {}
    for value in (
        series.get("lastObservedTime"),
        event.get("eventTime"),
        event.get("deprecatedLastTimestamp"),
        event.get("deprecatedFirstTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        moment = clock.parse(value)
        if moment is not None:
            return moment
    return None


def timeline(events: Iterable[Mapping[str, Any]]) -> list[TimelineEntry]:
    """Events (events.k8s.io/v1) about one agent, oldest first, newest last."""
    entries = []
    for event in events:
        regarding = event.get("regarding") or {}
        series = event.get("series") or {}
        count = int(series.get("count") or event.get("deprecatedCount") or 1)
        reporter = str(event.get("reportingController") or event.get("deprecatedSource", {}).get("component") or "")
        entries.append(
            TimelineEntry(
                time=event_time(event),
                type=str(event.get("type") or ""),
                reason=str(event.get("reason") or ""),
                note=str(event.get("note") or ""),
                reporter=reporter,
                count=count,
                uid=str(regarding.get("uid") or ""),
                sequence=_sequence(event),
            )
        )
    floor = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(entries, key=lambda entry: (entry.time or floor, entry.sequence))


def _sequence(event: Mapping[str, Any]) -> int:
    """resourceVersion is opaque by contract, but etcd's revisions are what every apiserver hands out: use it only
    to order Events stamped with the same second, and treat anything non-numeric as "unknown" (0)."""
    version = str((event.get("metadata") or {}).get("resourceVersion") or "")
    return int(version) if version.isdigit() else 0


def timeline_rows(entries: Sequence[TimelineEntry], *, current_uid: str | None) -> list[list[str]]:
    rows = []
    for entry in entries:
        note = entry.note + (f" (x{entry.count})" if entry.count > 1 else "")
        if current_uid and entry.uid and entry.uid != current_uid:
            note += f" [earlier incarnation, uid {entry.uid}]"
        rows.append([timestamp(entry.time), entry.type, entry.reason, note])
    return rows


# -- tokens ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenExplanation:
    """A JWT taken apart without verification (``agentid explain-token``)."""

    header: dict[str, Any]
    claims: dict[str, Any]
    chain: list[str]  # current actor first
    chain_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "verified": False,
            "header": self.header,
            "claims": self.claims,
            "delegationChain": self.chain,
            "delegationChainError": self.chain_error,
        }


def explain(header: Mapping[str, Any], payload: Mapping[str, Any]) -> TokenExplanation:
    """Flatten the RFC 8693 ``act`` chain with the token service's own parser (malformed chains are reported)."""
    chain_error = None
    try:
        chain = [_actor_label(actor) for actor in claims.act_chain(payload.get("act"))]
    except Refused as refused:
        chain, chain_error = [], f"malformed act claim: {refused.description}"
    return TokenExplanation(dict(header), dict(payload), chain, chain_error)


def _actor_label(actor: claims.Actor) -> str:
    where = f" ({actor.namespace}/{actor.name})" if actor.namespace and actor.name else ""
    return f"{actor.sub}{where}"


def explanation_lines(explained: TokenExplanation, now: dt.datetime) -> list[tuple[str, str]]:
    header, payload = explained.header, explained.claims
    lines: list[tuple[str, str]] = [
        ("Header", "  ".join(f"{k}={header[k]}" for k in ("alg", "typ", "kid") if k in header) or NONE),
        ("Issuer", str(payload.get("iss", NONE))),
        ("Subject", str(payload.get("sub", NONE))),
        ("Audience", _audience(payload.get("aud"))),
    ]
    for label, claim in (("Issued", "iat"), ("Not before", "nbf"), ("Expires", "exp")):
        moment = _epoch(payload.get(claim))
        if moment is not None:
            note = relative(moment, now)
            if claim == "exp" and moment <= now:
                note = f"EXPIRED {note}"
            lines.append((label, f"{timestamp(moment)} ({note})"))
    if "jti" in payload:
        lines.append(("Token ID", str(payload["jti"])))
    agent = payload.get("agent")
    if isinstance(agent, Mapping):
        owner = _mapping(agent.get("owner"))
        lines += [
            ("Agent", f"{agent.get('namespace')}/{agent.get('name')} (uid {agent.get('uid')})"),
            ("Owner", f"{owner.get('kind', NONE)} {owner.get('name', NONE)}"),
            ("Supervision", str(agent.get("supervision", NONE))),
        ]
        attributes = agent.get("attributes")
        if isinstance(attributes, Mapping) and attributes:
            lines.append(("Attributes", ", ".join(f"{k}={v}" for k, v in sorted(attributes.items()))))
    kube = payload.get("kubernetes.io")
    if isinstance(kube, Mapping):  # a ServiceAccount token (what workloads exchange)
        account, pod = _mapping(kube.get("serviceaccount")), _mapping(kube.get("pod"))
        text = f"{kube.get('namespace')}/{account.get('name')} (uid {account.get('uid')})"
        lines.append(("ServiceAccount", text + (f", pod {pod.get('name')}" if pod.get("name") else "")))
    if explained.chain_error:
        lines.append(("Delegation", explained.chain_error))
    elif explained.chain:
        lines.append(("Delegation", "on behalf of the subject, current actor first:"))
        lines += [("", f"{'<-' if index else 'actor'} {label}") for index, label in enumerate(explained.chain)]
    else:
        lines.append(("Delegation", "none (the subject acts for itself)"))
    return lines


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _audience(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or NONE
    return str(value) if value is not None else NONE


def _epoch(value: Any) -> dt.datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None
