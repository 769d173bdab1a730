"""The operator's watch of the objects it owns (ServiceAccounts, key Secrets, Roles, RoleBindings), without Kopf.

Started by the handlers at startup (``OwnedObjects.run``, a background task). Each kind is one list+watch
(``kube.watch.informer``, server-side label selector) per scope that keeps the summaries the reconciler reads
(``ClusterView.indexes.owned``: kind -> agent -> uid -> summary) and reports changes made by others (drift) to a
callback. Kopf gave every one of these objects a worker, a memory record and an index entry, and ran its
per-event machinery for each: at 5000 agents that was 20,000 objects, most of the operator's memory and a third
of its CPU while provisioning (docs/benchmarks.md). Passes wait for the first complete listing (``synced``), as
they waited for Kopf's indexes.

Scopes follow the operator's namespaces: every namespace; or one watch per namespace when every pattern names a
namespace exactly (what the Helm chart's namespaced Roles allow); or, for glob patterns, one cluster-wide watch
filtered by the same patterns (``agentid.domain.namespaces``) (that needs cluster-wide list/watch on these kinds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentid.domain import namespaces as patterns_
from agentid.domain import naming, projections
from agentid.domain.keyring import ObservedKey
from agentid.kube import resources, watch
from agentid.kube.client import JsonObject, KubeClient
from agentid.kube.resources import Resource
from agentid.reconcile.view import AgentKey, ClusterView

KINDS: dict[str, Resource] = {
    "ServiceAccount": resources.SERVICE_ACCOUNTS,
    "Secret": resources.SECRETS,
    "Role": resources.ROLES,
    "RoleBinding": resources.ROLE_BINDINGS,
}
SELECTOR = f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY}"
OwnedIndex = dict[AgentKey, dict[str, Any]]  # agent -> uid -> summary (a key Secret: {"summary", "key"})
Drift = Callable[[AgentKey], None]  # queues a pass for the agent (agentid.reconcile.controller)


def scopes(namespaces: Sequence[str], *, all_namespaces: bool) -> tuple[list[str | None], Sequence[str]]:
    """The namespaces to watch (None: cluster-wide) and the patterns a cluster-wide watch must filter by."""
    if all_namespaces and not namespaces:
        return [None], ()
    specific = patterns_.specific(namespaces)
    if len(specific) == len(set(namespaces)):
        return [str(namespace) for namespace in sorted(specific)], ()
    return [None], namespaces


@dataclass(frozen=True)
class _Seen:
    """What is kept of one owned object: its summary and, for a key Secret, the public side of the key."""

    summary: dict[str, Any]
    key: ObservedKey | None = None


def reducer(kind: str) -> Callable[[JsonObject], _Seen]:
    def reduce(body: JsonObject) -> _Seen:
        return _Seen(projections.summary(kind, body), projections.observed_key(body) if kind == "Secret" else None)

    return reduce


def selected(body: Mapping[str, Any], patterns: Sequence[str]) -> bool:
    """Whether a cluster-wide watch's object is in the operator's namespaces (matched as Kopf matches them)."""
    namespace = str((body.get("metadata") or {}).get("namespace") or "")
    return not patterns or any(patterns_.matches(namespace, pattern) for pattern in patterns)


class OwnedObjects:
    def __init__(
        self,
        client: KubeClient,
        view: ClusterView,
        *,
        on_drift: Drift,
        namespaces: Sequence[str] = (),
        all_namespaces: bool = True,
    ) -> None:
        self.client = client
        self.view = view
        self.on_drift = on_drift
        self.scopes, self.patterns = scopes(namespaces, all_namespaces=all_namespaces)
        self.index: dict[str, OwnedIndex] = {kind: {} for kind in KINDS}
        self._where: dict[str, tuple[str, AgentKey, str]] = {}  # uid -> (kind, agent, name)
        self._listed: set[tuple[str, str | None]] = set()
        self.synced = asyncio.Event()

    async def run(self) -> None:
        """Every kind in every scope, until cancelled."""
        await asyncio.gather(*(self._follow(kind, scope) for kind in KINDS for scope in self.scopes))

    async def _follow(self, kind: str, scope: str | None) -> None:
        selector = watch.Selector(namespace=scope, label_selector=SELECTOR)
        async for event in watch.informer(self.client, KINDS[kind], selector, project=reducer(kind)):
            if isinstance(event, watch.Listed):
                self._replace(kind, scope, event.items)
                self._listed.add((kind, scope))
                if len(self._listed) == len(KINDS) * len(self.scopes):
                    self.synced.set()
            else:
                self._changed(kind, event.type, event.object)
            del event  # idle between events, the loop variable would pin a whole listing

    def _replace(self, kind: str, scope: str | None, items: list[_Seen]) -> None:
        """After a (re)list. On a re-list (the watch broke, the apiserver restarted) whatever changed or went while
        the watch was away is drift: its agents get a pass now, not at their next resync."""
        before = {
            uid: (agent, self._version(kind, agent, uid))
            for uid, (known, agent, _) in self._where.items()
            if known == kind and (scope is None or agent[0] == scope)
        }
        for uid in before:
            self._remove(uid)
        for seen in items:
            self._put(kind, seen)
        if (kind, scope) not in self._listed:
            return  # the first listing: every agent gets its first pass anyway
        for uid, (agent, version) in before.items():
            if uid not in self._where or self._version(kind, agent, uid) != version:
                self.on_drift(agent)

    def _version(self, kind: str, agent: AgentKey, uid: str) -> str:
        value = self.index[kind].get(agent, {}).get(uid)
        summary = value["summary"] if kind == "Secret" and value is not None else value
        return str(((summary or {}).get("metadata") or {}).get("resourceVersion") or "")

    def _changed(self, kind: str, event_type: str, seen: _Seen) -> None:
        metadata = seen.summary["metadata"]
        uid = str(metadata.get("uid") or "")
        self._remove(uid)
        if event_type != "DELETED":
            self._put(kind, seen)
        owner = projections.agent_key(seen.summary)
        if owner is None or not selected(seen.summary, self.patterns):
            return
        name, version = str(metadata.get("name") or ""), metadata.get("resourceVersion")
        self.view.watched(owner, kind, name, version, deleted=event_type == "DELETED")
        foreign = event_type == "MODIFIED" and self.view.changed_by_others(owner, kind, name, version)
        if event_type == "DELETED" or foreign:
            self.on_drift(owner)

    def _put(self, kind: str, seen: _Seen) -> None:
        owner = projections.agent_key(seen.summary)
        if owner is None or not selected(seen.summary, self.patterns):
            return
        metadata = seen.summary["metadata"]
        value: Any = {"summary": seen.summary, "key": seen.key} if kind == "Secret" else seen.summary
        self.index[kind].setdefault(owner, {})[str(metadata["uid"])] = value
        self._where[str(metadata["uid"])] = (kind, owner, str(metadata.get("name") or ""))

    def _remove(self, uid: str) -> None:
        where = self._where.pop(uid, None)
        if where is None:
            return
        kind, owner, _ = where
        values = self.index[kind].get(owner)
        if values is not None:
            values.pop(uid, None)
            if not values:
                del self.index[kind][owner]
