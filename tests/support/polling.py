"""Synchronisation for tests without sleeps: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(AssertionError):
    pass


def eventually(check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1, what: str = "") -> T:
    """Call ``check`` until it returns a truthy value without raising AssertionError; return that value."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
            last_error = None
        except AssertionError as error:
            last_error = error
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"not within {timeout}s: {what or check!r}; last error: {last_error}")
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[T]], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = await check()
            if result:
                return result
            last_error = None
        except AssertionError as error:
            last_error = error
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"not within {timeout}s: {what or check!r}; last error: {last_error}")
        await asyncio.sleep(interval)
