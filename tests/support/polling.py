"""Bounded polling: wait for a state to settle instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    read: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0, every: float = 0.02
) -> T:
    """Call `read` until `done(value)` holds; the last value either way (the caller asserts
    on it, so a failure shows what was there instead of a bare timeout)."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(every)
        value = read()
    return value


async def wait_until_async(
    read: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0, every: float = 0.02
) -> T:
    """`wait_until` for a test already inside an event loop."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        await asyncio.sleep(every)
        value = read()
    return value
