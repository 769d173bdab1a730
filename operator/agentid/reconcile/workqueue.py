"""The one work queue every trigger of a reconcile pass goes through, with the semantics of client-go's.

Used by ``agentid.reconcile.controller``: watch events, drift, timers (expiry, rotation, resync) and changes of
ClusterRoles, policies and namespaces all become ``add`` / ``add_after`` of agent keys. A key waiting in the queue
is there once (a burst of triggers is one pass); a key being processed is never handed out again until ``done``,
and one added meanwhile is handed out right after (never lost, never two passes of one agent at once). A failed
pass is requeued with exponential backoff (``add_rate_limited``) until ``forget``.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, *, base_delay: float = 0.05, max_delay: float = 300.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._order: collections.deque[K] = collections.deque()
        self._dirty: set[K] = set()  # wants a pass (in the queue, or after the one under way)
        self._processing: set[K] = set()  # handed out, not yet done
        self._waiting: dict[K, tuple[float, asyncio.TimerHandle]] = {}  # add_after: the earliest time per key
        self._failures: collections.Counter[K] = collections.Counter()
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._shut = False

    # -- adding ---------------------------------------------------------------------------------------------

    def add(self, key: K) -> None:
        if self._shut or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._order.append(key)
            self._wake_one()

    def add_after(self, key: K, delay: float) -> None:
        """``add`` in ``delay`` seconds; of several pending for a key, the earliest stands."""
        if self._shut:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._waiting.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        # A fresh context: the caller's may hold a whole event body, and a timer pending for hours would keep it.
        self._waiting[key] = (when, loop.call_at(when, self._fire, key, context=contextvars.Context()))

    def add_rate_limited(self, key: K) -> None:
        """After a failure: again after base * 2^(failures-1), at most ``max_delay``."""
        self._failures[key] += 1
        self.add_after(key, self.backoff(key))

    def backoff(self, key: K) -> float:
        failures = self._failures[key]
        delay: float = min(self.base_delay * 2 ** min(max(failures - 1, 0), 32), self.max_delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded: its backoff starts over."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures[key]

    def discard(self, key: K) -> None:
        """The key's object is gone: drop its timer and its backoff (a queued pass finds nothing and ends)."""
        pending = self._waiting.pop(key, None)
        if pending is not None:
            pending[1].cancel()
        self._failures.pop(key, None)

    def _fire(self, key: K) -> None:
        self._waiting.pop(key, None)
        self.add(key)

    # -- taking ---------------------------------------------------------------------------------------------

    async def get(self) -> K:
        """The next key; it is the caller's until ``done(key)``."""
        while not self._order:
            if self._shut:
                raise QueueShutDown
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._getters:
                    self._getters.remove(waiter)
        key = self._order.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        if self._order:
            self._wake_one()  # another getter may take the next key
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:  # added while it was processed: once more
            self._order.append(key)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- state ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._order)

    def in_progress(self) -> frozenset[K]:
        """Keys handed out and not yet done."""
        return frozenset(self._processing)

    def scheduled(self, key: K) -> bool:
        return key in self._waiting

    def shut_down(self) -> None:
        self._shut = True
        for _, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        for waiter in self._getters:
            if not waiter.done():
                waiter.set_result(None)


class QueueShutDown(Exception):
    """``get`` on a queue that was shut down and is empty."""
