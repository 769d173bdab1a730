"""A workaround for Kopf 1.45: startup with indexes is quadratic in the number of watched objects.

Called once by ``agentid.handlers.runtime.run_operator`` before Kopf starts. Until every index has its first full
listing, Kopf holds each object's worker in ``operator_indexed.wait_for(True)`` (a ``ToggleSet`` on one
``asyncio.Condition``), and adds and drops one toggle per listed object, each time with ``notify_all()``: every
object wakes every worker already waiting, and each re-checks and sleeps again. With 5000 agents (25,000 watched
objects with their ServiceAccounts, key Secrets, Roles and RoleBindings) a restarted operator spent minutes at
100% CPU before reconciling anything (docs/benchmarks.md, P4).

A waiter only waits for the set's value (``is_on()``) to equal a state; adding or dropping a toggle that leaves the
value unchanged cannot satisfy any waiter. So we notify only when the value changes. ``Toggle.turn_to`` (which
changes a single toggle and notifies) is untouched.
"""

from __future__ import annotations

from collections.abc import Iterable

from kopf._cogs.aiokits import aiotoggles

_APPLIED = "__agentid_notify_on_change__"


async def _make_toggle(
    self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.discard(toggle)
        if self.is_on() != before:
            self._condition.notify_all()


async def _drop_toggles(self: aiotoggles.ToggleSet, toggles: Iterable[aiotoggles.Toggle]) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.difference_update(toggles)
        if self.is_on() != before:
            self._condition.notify_all()


def apply() -> None:
    """Idempotent; affects every ToggleSet of the process (Kopf's readiness and pause sets)."""
    cls = aiotoggles.ToggleSet
    if getattr(cls, _APPLIED, False):
        return
    cls.make_toggle = _make_toggle  # type: ignore[method-assign]
    cls.drop_toggle = _drop_toggle  # type: ignore[method-assign]
    cls.drop_toggles = _drop_toggles  # type: ignore[method-assign]
    setattr(cls, _APPLIED, True)
