"""The elector's loop stops when cancelled, whatever it was doing: a stopped elector that went on campaigning
would hold a Lease nobody reconciles under, and the operator's shutdown would hang on it.

Python 3.11's ``asyncio.wait_for`` swallowed a cancellation that arrived just as the awaited work completed
(fixed in 3.12); CI caught an elector that kept running after its test had cancelled it. These tests deliver the
cancellation at exactly that moment, deterministically, with the Lease I/O replaced by counters.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from agentid.domain.shards import ElectionSettings, ElectionTimings
from agentid.kube.lease import ShardElector
from tests.support.polling import eventually_async

SLOW = ElectionTimings(lease_duration=60.0, renew_deadline=40.0, retry_period=30.0)


class _Counted(ShardElector):
    """An elector whose rounds only count; ``cancel_in_round`` cancels its task as the round completes."""

    def __init__(self, *, cancel_in_round: bool) -> None:
        settings = ElectionSettings(namespace="agentid-system", name="loop", timings=SLOW)
        super().__init__(cast(Any, None), settings, instance="a", on_acquired=self._ignore, on_lost=self._ignore)
        self.rounds = 0
        self.cancel_in_round = cancel_in_round
        self.task: asyncio.Task[None] | None = None

    async def _ignore(self, shard: int) -> None:
        return None

    async def _watch(self) -> None:
        await asyncio.Event().wait()

    async def round(self) -> None:
        self.rounds += 1
        if self.cancel_in_round and self.task is not None:
            asyncio.get_running_loop().call_soon(self.task.cancel)  # runs before the loop resumes after the round


async def _ended_cancelled(task: asyncio.Task[None]) -> bool:
    done, _ = await asyncio.wait({task}, timeout=5)
    return task in done and task.cancelled()


async def test_a_cancellation_arriving_as_a_round_completes_stops_the_loop() -> None:
    elector = _Counted(cancel_in_round=True)
    elector.task = asyncio.create_task(elector.run())
    assert await _ended_cancelled(elector.task)
    assert elector.rounds == 1


async def test_a_cancellation_arriving_with_a_wake_up_stops_the_pause() -> None:
    elector = _Counted(cancel_in_round=False)
    task = asyncio.create_task(elector.run())

    async def pausing() -> bool:
        return elector.rounds == 1 and bool(elector._changed._waiters)  # type: ignore[attr-defined]

    await eventually_async(pausing, timeout=5, what="the elector pauses after its first round")
    elector._changed.set()  # the watch wakes the pause, and in the same step the elector is stopped
    task.cancel()
    assert await _ended_cancelled(task)
    assert elector.rounds == 1
