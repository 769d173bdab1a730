"""The operator's watch of AgentIdentities and its work queue: what triggers a reconcile pass, without Kopf.

Started by the handlers at startup, next to ``agentid.reconcile.owned``. One list+watch per scope keeps every
agent in memory in compact form (``projections.compact_agent``: no managedFields, interned strings; listed page by
page) as ``ClusterView.indexes.agents``, and queues the agent's key on every change; a fixed pool of workers takes
keys off the queue and reconciles the agent as the index holds it then (level-triggered: a key queued twice is
reconciled once, with the newest body). Kopf's index and event handler did the same with a worker, a raw body and
a memory record per agent, all alive at once while it lists (its handlers wait for every index): at 5000 agents
that was the larger part of the operator's memory (docs/benchmarks.md, P4). Passes start only once ``ready``
says the rest of the view (owned objects, Kopf's ClusterRole, policy and namespace indexes) is complete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from agentid.domain import projections
from agentid.kube import watch
from agentid.kube.client import KubeClient
from agentid.kube.resources import AGENT_IDENTITIES
from agentid.reconcile.owned import scopes, selected
from agentid.reconcile.view import AgentKey

logger = logging.getLogger(__name__)
Body = Mapping[str, Any]
WORKERS = 128  # passes in flight (the operator sizes it to its client's requests in flight)


class _Agents(Mapping[AgentKey, tuple[Body, ...]]):
    """(namespace, name) -> (body,): the shape of a Kopf index, which ``ClusterView`` reads."""

    def __init__(self) -> None:
        self.bodies: dict[AgentKey, Body] = {}

    def __getitem__(self, key: AgentKey) -> tuple[Body, ...]:
        return (self.bodies[key],)

    def __iter__(self) -> Iterator[AgentKey]:
        return iter(self.bodies)

    def __len__(self) -> int:
        return len(self.bodies)


class AgentWatch:
    def __init__(
        self,
        client: KubeClient,
        *,
        reconcile: Callable[[Body], Awaitable[None]],
        ready: Callable[[], Awaitable[None]],
        namespaces: Sequence[str] = (),
        all_namespaces: bool = True,
        workers: int = WORKERS,
    ) -> None:
        self.client = client
        self.reconcile = reconcile
        self.ready = ready
        self.scopes, self.patterns = scopes(namespaces, all_namespaces=all_namespaces)
        self.index = _Agents()
        self.synced = asyncio.Event()
        self._workers = workers
        self._listed: set[str | None] = set()
        self._queue: asyncio.Queue[AgentKey] = asyncio.Queue()
        self._queued: set[AgentKey] = set()

    async def run(self) -> None:
        """Every scope and the workers, until cancelled."""
        await asyncio.gather(
            *(self._follow(scope) for scope in self.scopes), *(self._work() for _ in range(self._workers))
        )

    def queue(self, key: AgentKey) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

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
        for key in [key for key in self.index.bodies if scope is None or key[0] == scope]:
            if key not in fresh:
                del self.index.bodies[key]
        for key, body in fresh.items():
            known = self.index.bodies.get(key)
            self.index.bodies[key] = body
            if known is None or _version(known) != _version(body):
                self.queue(key)

    def _changed(self, event_type: str, body: Body) -> None:
        if not selected(body, self.patterns):
            return
        key = _key(body)
        if event_type == "DELETED":
            known = self.index.bodies.get(key)
            if known is not None and known["metadata"].get("uid") == body["metadata"].get("uid"):
                del self.index.bodies[key]
            return
        self.index.bodies[key] = body
        self.queue(key)

    # -- working --------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        await self.ready()
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            body = self.index.bodies.get(key)
            if body is None:
                continue  # deleted meanwhile: the finalizer already ran, or there was nothing to clean up
            try:
                await self.reconcile(body)
            except Exception:  # one agent's bug must not stop the others' passes
                logger.exception("reconcile of %s/%s failed", *key)


def _key(body: Body) -> AgentKey:
    metadata = body["metadata"]
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _version(body: Body) -> str:
    return str(body["metadata"].get("resourceVersion") or "")
