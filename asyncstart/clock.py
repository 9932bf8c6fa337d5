"""Time for timers: the event loop's clock, or a fake one that tests move by hand; and the
wall clock's seconds as text (:func:`utc_second`).

Timers (restart backoff, stop timeouts) compute an absolute deadline when they are armed, then
sleep until it; a test can therefore arm a timer, observe that it was armed (an event), and
advance a :class:`FakeClock` past it without a race and without sleeping.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import time
from typing import Protocol

import anyio

__all__ = ["Clock", "FakeClock", "SystemClock", "utc_second"]


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline``."""
        ...


class SystemClock:
    """The running event loop's clock (``anyio.current_time``)."""

    def now(self) -> float:
        return anyio.current_time()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep_until(deadline)


class FakeClock:
    """A clock that only moves when :meth:`advance` is called."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()
        self._armed = anyio.Event()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (deadline, next(self._order), event))
        self._armed.set()
        self._armed = anyio.Event()
        await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            heapq.heappop(self._sleepers)[2].set()

    async def wait_sleepers(self, count: int) -> None:
        """Return once at least ``count`` timers are armed (a test's cue to advance)."""
        while len(self._sleepers) < count:
            await self._armed.wait()

    @property
    def sleepers(self) -> int:
        """How many timers are armed (including ones whose task was cancelled)."""
        return len(self._sleepers)


@functools.lru_cache(maxsize=16)
def utc_second(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a Unix second, in UTC (cached: timestamps made one after
    another fall in a few seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
