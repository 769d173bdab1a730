"""Per-agent wake-ups: the next rotation, retirement or expiry to the second, resync with jitter, retries.

Called by the reconciler after every pass. One pending wake-up per agent (a new one replaces the old), held
in memory: after a restart every agent is reconciled from the initial listing and reschedules itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

logger = logging.getLogger(__name__)


class Scheduler:
    def __init__(self) -> None:
        self._handles: dict[Hashable, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def schedule(self, key: Hashable, delay: float, callback: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``callback`` after ``delay`` seconds, replacing any wake-up already pending for ``key``."""
        if self._closed:
            return
        self.cancel(key)
        loop = asyncio.get_running_loop()
        # A fresh context: the caller's (a Kopf handler's) holds the raw event body that triggered it, and a
        # wake-up pending for days would keep that body alive, for every agent.
        self._handles[key] = loop.call_later(max(delay, 0.0), self._fire, key, callback, context=contextvars.Context())

    def _fire(self, key: Hashable, callback: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._handles.pop(key, None)
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(callback())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self, key: Hashable) -> None:
        handle = self._handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def pending(self, key: Hashable) -> bool:
        return key in self._handles

    def __len__(self) -> int:
        return len(self._handles)

    async def close(self) -> None:
        self._closed = True
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
