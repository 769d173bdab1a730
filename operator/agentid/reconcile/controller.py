"""The one door into a reconcile pass: triggers become agent keys on one work queue, workers run the passes.

Built by ``agentid.handlers.runtime``. Every trigger goes through ``WorkQueue``: an agent's own watch events, drift
on its objects, its timers (expiry, rotation, key retirement, resync: the delay its pass returns), a failed pass
(rate-limited, whatever failed), and changes of what agents refer to: a ClusterRole (agents bound to it), an
AgentPolicy (agents in the namespaces it selected before or selects now), a namespace's labels (its agents) and
any Role or binding not written by agentid (agents under an owner ceiling).
The queue never hands one key to two workers, so passes of one agent never overlap.

With leader election (``elected``) a replica reconciles only agents whose shard (``agentid.domain.shards``) it
holds: triggers for other agents are dropped, a pass is never started for them (a timer set while the shard was
held finds it gone), acquiring a shard queues all its agents from the view, losing it drops their timers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from agentid.api.v1alpha1 import AgentPolicy
from agentid.domain.conditions import unreported
from agentid.domain.shards import shard_of
from agentid.kube import errors
from agentid.reconcile.view import AgentKey, ClusterView
from agentid.reconcile.workqueue import QueueShutDown, WorkQueue

logger = logging.getLogger(__name__)
Body = Mapping[str, Any]
Pass = Callable[[Body], Awaitable[float | None]]  # seconds until the agent's next pass; None: it is gone
IDLE_WAIT = 10.0  # seconds a shard given back waits for its passes under way
WORKERS = 128  # passes in flight (the operator sizes it to its client's requests in flight)


class Controller:
    def __init__(
        self,
        view: ClusterView,
        *,
        reconcile: Pass,
        queue: WorkQueue[AgentKey],
        workers: int = WORKERS,
        on_rbac: Callable[[], None] = lambda: None,
        shards: int = 1,
        elected: bool = False,
    ) -> None:
        self.view = view
        self.reconcile = reconcile
        self.queue = queue
        self.on_rbac = on_rbac  # drops the owner ceiling's cached answers
        self.shards = shards
        self.held: set[int] | None = set() if elected else None  # None: no election, every agent is ours
        self._workers = workers

    async def run(self, ready: Callable[[], Awaitable[None]]) -> None:
        """The workers, once ``ready`` says the whole view is listed, until cancelled."""
        await ready()
        await asyncio.gather(*(self._work() for _ in range(self._workers)))

    # -- shards ---------------------------------------------------------------------------------------------

    def owns(self, key: AgentKey) -> bool:
        return self.held is None or shard_of(key[0], self.shards) in self.held

    def holds(self, shard: int) -> bool:
        return self.held is None or shard in self.held

    def shard_acquired(self, shard: int) -> None:
        """Every agent of the shard gets a pass (what changed while another replica held it, or nobody did), those
        whose status does not answer their spec yet first: after a failover they are what users wait for."""
        if self.held is None:
            return
        self.held.add(shard)
        bodies = [body for body in self.view.all_agents() if shard_of(_key(body)[0], self.shards) == shard]
        self._add(map(_key, sorted(bodies, key=lambda body: not unreported(body))))

    def shard_lost(self, shard: int) -> None:
        """No pass starts for the shard's agents any more; passes under way finish (``idle`` waits for them)."""
        if self.held is None:
            return
        self.held.discard(shard)
        for key in map(_key, self.view.all_agents()):
            if shard_of(key[0], self.shards) == shard:
                self.queue.discard(key)

    async def idle(self, shard: int) -> None:
        """Until no pass of the shard's agents runs here (before the shard is handed to another replica); at most
        ``IDLE_WAIT`` seconds, a pass stuck on the API must not keep the shard from its next holder forever."""
        deadline = asyncio.get_running_loop().time() + IDLE_WAIT
        while any(shard_of(key[0], self.shards) == shard for key in self.queue.in_progress()):
            if asyncio.get_running_loop().time() > deadline:
                logger.warning("passes of shard %d still running after %.0fs; handing it over", shard, IDLE_WAIT)
                return
            await asyncio.sleep(0.05)

    # -- triggers -------------------------------------------------------------------------------------------

    def agent(self, key: AgentKey) -> None:
        """An agent changed, or one of its objects drifted."""
        if self.owns(key):
            self.queue.add(key)

    def cluster_role(self, name: str) -> None:
        self._add(_key(body) for body in self.view.agents_referencing(name))
        self.rbac()  # an owner's rights may come from it

    def rbac(self) -> None:
        """Who holds what changed (a Role, binding or ClusterRole): agents under an owner ceiling are re-checked."""
        self.on_rbac()
        namespaces: set[str] = set()
        for governing in self.view.indexes.policies.values():
            if governing.spec.owner_ceiling:
                namespaces.update(self.view.namespaces_selected_by(governing.spec.namespace_selector))
        self._add(_key(body) for body in self.view.agents_in(namespaces))

    def policy(self, old: AgentPolicy | None, new: AgentPolicy | None) -> None:
        """Only the spec governs agents (the status is the policy's own report)."""
        if old is not None and new is not None and old.spec == new.spec:
            return
        namespaces: set[str] = set()
        for changed in (old, new):
            if changed is not None:
                namespaces.update(self.view.namespaces_selected_by(changed.spec.namespace_selector))
        self._add(_key(body) for body in self.view.agents_in(namespaces))

    def namespace(self, name: str) -> None:
        self._add(_key(body) for body in self.view.agents_in([name]))

    def _add(self, keys: Iterable[AgentKey]) -> None:
        for key in keys:
            if self.owns(key):
                self.queue.add(key)

    # -- workers --------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self._process(key)
            finally:
                self.queue.done(key)

    async def _process(self, key: AgentKey) -> None:
        body = self.view.agent_body(*key)
        if body is None or not self.owns(key):
            self.queue.discard(key)  # deleted meanwhile: the finalizer already ran, or there was nothing to do
            return
        try:
            delay = await self.reconcile(body)
        except errors.ApiError as error:  # recorded in status by the reconciler where the user can act on it
            self.queue.add_rate_limited(key)
            logger.warning(
                "reconcile of %s/%s failed (attempt %d, retry in %.1fs): %s",
                *key,
                self.queue.failures(key),
                self.queue.backoff(key),
                error,
            )
        except Exception:  # a bug: logged with its traceback, and retried like any failure
            self.queue.add_rate_limited(key)
            logger.exception("reconcile of %s/%s failed", *key)
        else:
            self.queue.forget(key)
            if delay is None:
                self.queue.discard(key)
            else:
                self.queue.add_after(key, delay)


def _key(body: Body) -> AgentKey:
    metadata = body["metadata"]
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
