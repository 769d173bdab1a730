"""Kopf's readiness toggles notify their waiters only when the set's value changes (agentid.handlers.kopfpatches)."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles

from agentid.handlers import kopfpatches


def _count_notifications(toggles: aiotoggles.ToggleSet) -> list[int]:
    calls = [0]
    notify_all = toggles._condition.notify_all

    def counting() -> None:
        calls[0] += 1
        notify_all()

    toggles._condition.notify_all = counting  # type: ignore[method-assign]
    return calls


async def test_adding_and_dropping_toggles_that_keep_the_set_off_wakes_nobody() -> None:
    kopfpatches.apply()
    toggles = aiotoggles.ToggleSet(all)
    blocker = await toggles.make_toggle(name="blocker")
    calls = _count_notifications(toggles)
    waiter = asyncio.create_task(toggles.wait_for(True))

    objects = [await toggles.make_toggle(name=f"object {i}") for i in range(100)]
    await toggles.drop_toggles(objects[:50])
    for toggle in objects[50:]:
        await toggles.drop_toggle(toggle)

    assert calls[0] == 0
    assert not waiter.done()
    await toggles.drop_toggle(blocker)
    await asyncio.wait_for(waiter, timeout=5)
    assert calls[0] == 1
    assert toggles.is_on()


async def test_a_toggle_that_turns_the_set_off_again_wakes_those_waiting_for_off() -> None:
    kopfpatches.apply()
    toggles = aiotoggles.ToggleSet(any)
    first = await toggles.make_toggle(True, name="first")
    waiter = asyncio.create_task(toggles.wait_for(False))
    await toggles.make_toggle(True, name="second")  # still on: nothing to tell
    assert not waiter.done()
    await toggles.drop_toggles([first, *[toggle for toggle in toggles if toggle is not first]])
    await asyncio.wait_for(waiter, timeout=5)
    assert toggles.is_off()


async def test_turning_a_single_toggle_still_notifies() -> None:
    kopfpatches.apply()
    toggles = aiotoggles.ToggleSet(all)
    toggle = await toggles.make_toggle(False, name="one")
    waiter = asyncio.create_task(toggles.wait_for(True))
    await toggle.turn_to(True)
    await asyncio.wait_for(waiter, timeout=5)
