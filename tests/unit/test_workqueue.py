"""The work queue's guarantees (client-go semantics): one entry per key, never two passes of a key at once, nothing
lost while a key is processed, timers keep the earliest, failures back off until forgotten."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from agentid.reconcile.workqueue import QueueShutDown, WorkQueue


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_a_key_added_many_times_is_handed_out_once() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue()
        for key in ("a", "b", "a", "a"):
            queue.add(key)
        assert len(queue) == 2
        assert [await queue.get(), await queue.get()] == ["a", "b"]

    run(scenario())


def test_a_key_added_while_processed_is_handed_out_after_done_never_twice_at_once() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a")
        key = await queue.get()
        queue.add("a")
        assert len(queue) == 0  # not handed out to a second worker while the first works on it
        second = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        assert not second.done()
        queue.done(key)
        async with asyncio.timeout(1):
            assert await second == "a"

    run(scenario())


def test_add_after_keeps_the_earliest_time_and_fires() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add_after("a", 3600)
        queue.add_after("a", 0.01)
        queue.add_after("a", 7200)
        assert queue.scheduled("a")
        async with asyncio.timeout(1):
            assert await queue.get() == "a"
        assert not queue.scheduled("a")

    run(scenario())


def test_failures_back_off_exponentially_until_forgotten() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue(base_delay=1, max_delay=5)
        delays = []
        for _ in range(5):
            queue.add_rate_limited("a")
            delays.append(queue.backoff("a"))
        assert delays == [1, 2, 4, 5, 5]
        queue.forget("a")
        assert queue.failures("a") == 0
        queue.discard("a")
        assert not queue.scheduled("a")

    run(scenario())


def test_a_shut_down_queue_releases_its_getters() -> None:
    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue()
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        queue.shut_down()
        with pytest.raises(QueueShutDown):
            async with asyncio.timeout(1):
                await getter

    run(scenario())


def test_a_timer_does_not_keep_the_callers_context_alive() -> None:
    """Timers are set from a pass; its context must not live on for the hours a resync timer waits."""

    async def scenario() -> None:
        queue: WorkQueue[str] = WorkQueue()
        body: contextvars.ContextVar[str] = contextvars.ContextVar("body")
        body.set("a whole event body")
        queue.add_after("a", 3600)
        handle = queue._waiting["a"][1]
        assert body not in handle._context  # type: ignore[attr-defined]
        queue.shut_down()

    run(scenario())
