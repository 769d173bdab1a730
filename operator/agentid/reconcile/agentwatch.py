"""The operator's watch of AgentIdentities: every agent in memory, and a trigger on every change, without Kopf.

Started with the other watches (``agentid.reconcile.owned``, ``.references``). One list+watch per scope keeps every
agent in memory in compact form (``projections.compact_agent``: no managedFields, interned strings; listed page by
page) as ``ClusterView.indexes.agents``, and reports the agent's key on every change (``on_change``: the
controller's work queue, where a key queued twice is reconciled once, with the newest body). Kopf's index and event
handler did the same with a worker, a raw body and a memory record per agent, all alive at once while it lists: at
5000 agents that was the larger part of the operator's memory (docs/benchmarks.md, P4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agentid.domain import projections
from agentid.kube import watch
from agentid.kube.client import KubeClient
from agentid.kube.resources import AGENT_IDENTITIES
from agentid.reconcile.owned import scopes, selected
from agentid.reconcile.view import AgentKey

Body = Mapping[str, Any]


class AgentWatch:
    def __init__(
        self,
        client: KubeClient,
        *,
        on_change: Callable[[AgentKey], None],
        namespaces: Sequence[str] = (),
        all_namespaces: bool = True,
    ) -> None:
        self.client = client
        self.on_change = on_change
        self.scopes, self.patterns = scopes(namespaces, all_namespaces=all_namespaces)
        self.index: dict[AgentKey, Body] = {}  # the compact body of every agent
        self.synced = asyncio.Event()
        self._listed: set[str | None] = set()

    async def run(self) -> None:
        """Every scope, until cancelled."""
        await asyncio.gather(*(self._follow(scope) for scope in self.scopes))

    # -- feeding --------------------------------------------------------------------------------------------

    async def _follow(self, scope: str | None) -> None:
        selector = watch.Selector(namespace=scope)
        async for event in watch.informer(self.client, AGENT_IDENTITIES, selector, project=projections.compact_agent):
            if isinstance(event, watch.Listed):
                self._replace(scope, event.items)
                self._listed.add(scope)
                if len(self._listed) == len(self.scopes):
                    self.synced.set()
            else:
                self._changed(event.type, event.object)
            del event  # idle between events, the loop variable would pin a whole listing

    def _replace(self, scope: str | None, bodies: Sequence[Body]) -> None:
        """After a (re)list: what changed meanwhile is queued (everything, the first time)."""
        fresh = {_key(body): body for body in bodies if selected(body, self.patterns)}
        for key in [key for key in self.index if scope is None or key[0] == scope]:
            if key not in fresh:
                del self.index[key]
        for key, body in fresh.items():
            known = self.index.get(key)
            self.index[key] = body
            if known is None or _version(known) != _version(body):
                self.on_change(key)

    def _changed(self, event_type: str, body: Body) -> None:
        if not selected(body, self.patterns):
            return
        key = _key(body)
        if event_type == "DELETED":
            known = self.index.get(key)
            if known is not None and known["metadata"].get("uid") == body["metadata"].get("uid"):
                del self.index[key]
        else:
            self.index[key] = body
        self.on_change(key)


def _key(body: Body) -> AgentKey:
    metadata = body["metadata"]
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _version(body: Body) -> str:
    return str(body["metadata"].get("resourceVersion") or "")
