"""The reconciler's read side: owned objects from the operator's watch indexes, corrected by its own writes.

The operator's watches of agents, of their owned objects and of what they refer to (``agentid.reconcile.agentwatch``,
``.owned``, ``.references``: ClusterRoles, policies, namespaces) hold a summary of every object the operator reads,
kept current by watches, so a reconcile pass reads nothing from the API server. Right
after a write the watch may lag by milliseconds; the overlay remembers what was just written (by resourceVersion)
so the next pass does not write it again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentid.api.v1alpha1 import AgentPolicy, LabelSelector
from agentid.domain import ownership, policy, projections
from agentid.domain.keyring import ObservedKey
from agentid.domain.lifecycle import Observed
from agentid.domain.ownership import Owner
from agentid.domain.supervision import ClusterRoleInfo

AgentKey = tuple[str, str]  # (namespace, agent name)
OVERLAY_TTL = 60.0

OWNED_KINDS = ("ServiceAccount", "Secret", "Role", "RoleBinding")


@dataclass
class Indexes:
    """Live read-only views of the operator's watches, handed over when they are built."""

    agents: Mapping[AgentKey, Mapping[str, Any]] = field(default_factory=dict)  # -> compact AgentIdentity body
    # kind -> agent -> uid -> summary (a key Secret: {"summary", "key"})
    owned: Mapping[str, Mapping[AgentKey, Mapping[str, Any]]] = field(default_factory=dict)
    cluster_roles: Mapping[str, ClusterRoleInfo] = field(default_factory=dict)
    policies: Mapping[str, AgentPolicy] = field(default_factory=dict)
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # name -> labels


@dataclass(frozen=True)
class _Written:
    summary: dict[str, Any] | None  # None: deleted
    resource_version: int
    at: float
    key: ObservedKey | None = None


class ClusterView:
    def __init__(self, indexes: Indexes | None = None) -> None:
        self.indexes = indexes or Indexes()
        self._overlay: dict[AgentKey, dict[tuple[str, str], _Written]] = {}
        # The resourceVersion of each owned object as our own last write left it: a watch event with any other
        # version is someone else's change (a removal leaves no managedFields entry to tell by).
        self._versions: dict[AgentKey, dict[tuple[str, str], str]] = {}

    # -- agents ---------------------------------------------------------------------------------------------

    def agent_body(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.indexes.agents.get((namespace, name))

    def agents_referencing(self, cluster_role: str) -> list[Mapping[str, Any]]:
        found = []
        for body in self.indexes.agents.values():
            if cluster_role in ((body.get("spec") or {}).get("clusterRoleRefs") or []):
                found.append(body)
        return found

    # -- owned objects --------------------------------------------------------------------------------------

    def observe(self, key: AgentKey, owner: Owner) -> Observed:
        """The objects this agent incarnation owns; anything else under its label (a stranger's object, a leftover
        of an older incarnation that the garbage collector will remove) is only named, as ``strangers``. Names and
        metadata are all it takes (no spec): deletion observes agents whose spec cannot be parsed."""
        objects: dict[tuple[str, str], Mapping[str, Any]] = {}
        strangers: set[tuple[str, str]] = set()
        observed_key: ObservedKey | None = None
        for kind in OWNED_KINDS:
            for value in self.indexes.owned.get(kind, {}).get(key, {}).values():
                summary = value["summary"] if kind == "Secret" else value
                if not ownership.owns(owner, summary):
                    strangers.add((kind, summary["metadata"]["name"]))
                    continue
                objects[(kind, summary["metadata"]["name"])] = summary
                if kind == "Secret":
                    observed_key = value.get("key")
        observed_key = self._apply_overlay(key, objects, observed_key)
        return Observed(objects=objects, key=observed_key, strangers=frozenset(strangers - set(objects)))

    def _apply_overlay(
        self, agent: AgentKey, objects: dict[tuple[str, str], Mapping[str, Any]], key: ObservedKey | None
    ) -> ObservedKey | None:
        written_objects = self._overlay.get(agent)
        if not written_objects:
            return key
        now = time.monotonic()
        for (kind, name), written in list(written_objects.items()):
            current = objects.get((kind, name))
            caught_up = (
                projections.resource_version(current) >= written.resource_version
                if written.summary
                else current is None
            )
            if caught_up or now - written.at > OVERLAY_TTL:
                del written_objects[(kind, name)]
            elif written.summary is None:
                objects.pop((kind, name), None)
                key = None if kind == "Secret" else key
            else:
                objects[(kind, name)] = written.summary
                key = written.key if kind == "Secret" else key
        if not written_objects:
            del self._overlay[agent]
        return key

    def record_written(
        self, agent: AgentKey, kind: str, body: Mapping[str, Any], key: ObservedKey | None = None
    ) -> None:
        """Remember an object this operator just applied (the API server's response body)."""
        summary = projections.summary(kind, body)
        name = summary["metadata"]["name"]
        self._overlay.setdefault(agent, {})[(kind, name)] = _Written(
            summary, projections.resource_version(summary), time.monotonic(), key
        )
        self._versions.setdefault(agent, {})[(kind, name)] = str(summary["metadata"].get("resourceVersion") or "")

    def watched(self, agent: AgentKey, kind: str, name: str, resource_version: str | None, *, deleted: bool) -> None:
        """A watch event for an owned object: once the index has caught up with (or passed) what we wrote, our
        memory of the write is dropped, so a later deletion by someone else is seen at once."""
        written_objects = self._overlay.get(agent)
        written = written_objects.get((kind, name)) if written_objects else None
        if written is None or written_objects is None:
            return
        version = projections.resource_version({"metadata": {"resourceVersion": resource_version}})
        if deleted or (written.summary is not None and version >= written.resource_version):
            del written_objects[(kind, name)]
            if not written_objects:
                del self._overlay[agent]

    def changed_by_others(self, agent: AgentKey, kind: str, name: str, resource_version: str | None) -> bool:
        """Whether a MODIFIED event is not the echo of our own last write of that object."""
        return self._versions.get(agent, {}).get((kind, name)) != str(resource_version or "")

    def record_deleted(self, agent: AgentKey, kind: str, name: str) -> None:
        self._versions.get(agent, {}).pop((kind, name), None)
        self._overlay.setdefault(agent, {})[(kind, name)] = _Written(None, 0, time.monotonic())

    def forget(self, agent: AgentKey) -> None:
        self._overlay.pop(agent, None)
        self._versions.pop(agent, None)

    # -- policies -------------------------------------------------------------------------------------------

    def policy_for(self, namespace: str) -> policy.EffectivePolicy:
        return policy.effective_policy(self.indexes.policies.values(), self.namespace_labels(namespace))

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return self.indexes.namespaces.get(namespace) or {}

    def agents_in(self, namespaces: Iterable[str]) -> list[Mapping[str, Any]]:
        wanted = set(namespaces)
        return [body for (namespace, _), body in self.indexes.agents.items() if namespace in wanted]

    def all_agents(self) -> list[Mapping[str, Any]]:
        return list(self.indexes.agents.values())

    def namespaces_selected_by(self, selector: LabelSelector) -> list[str]:
        return [name for name, labels in self.indexes.namespaces.items() if policy.selects(selector, labels)]

    # -- cluster roles --------------------------------------------------------------------------------------

    def cluster_roles(self, names: Iterable[str]) -> dict[str, ClusterRoleInfo | None]:
        return {name: self.indexes.cluster_roles.get(name) for name in names}
