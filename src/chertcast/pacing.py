"""Pacing: the clock, a token bucket, the in-flight limit, and server-requested pauses.

Every timed wait goes through a ``Clock``. A wait toward a moment is ``sleep_until(deadline)``:
the remaining time is computed there, when the wait starts, and is never negative (a wait
computed before an ``await`` is stale after it; ``anyio.sleep`` raises on a negative delay).
``sleep(seconds)`` is for a duration computed just before it, and refuses a negative one.

The bucket holds at most ``burst`` tokens and refills at ``rate`` per second, so in any
1-second window at most ``burst + rate`` requests start. A 429 (``retry_after``) pauses the
*whole* bucket, not just the task that got it, and empties it so the run resumes gently.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
import anyio.lowlevel

_EPSILON = 1e-6  # tokens: float sums of refills land just below 1
_MIN_SLEEP_S = 1e-4  # so an epoch-sized clock (ulp ~2e-7 s) always moves forward


def remaining(deadline: float, now: float) -> float:
    """Seconds from ``now`` to ``deadline``; 0 once it has passed. The one place waits are computed."""
    return max(0.0, deadline - now)


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds, for pacing."""

    def wall(self) -> float:
        """Epoch seconds, for capacity days, sending windows and quiet hours."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (>= 0; a negative duration is a bug and raises ValueError)."""

    async def sleep_until(self, deadline: float, wake: anyio.Event | None = None) -> None:
        """Wait until wall-clock ``deadline`` (not at all if it has passed), or until ``wake`` is set."""


def _check(seconds: float) -> None:
    if not seconds >= 0:  # also refuses NaN
        raise ValueError(f"a wait of {seconds!r} s: waits are computed when they start and are never negative")


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        _check(seconds)
        await anyio.sleep(seconds)

    async def sleep_until(self, deadline: float, wake: anyio.Event | None = None) -> None:
        with anyio.move_on_after(remaining(deadline, self.wall())):
            if wake is None:
                await anyio.sleep_forever()
            else:
                await wake.wait()


class LoopClock(RealClock):
    """The event loop's own clock, with a wall-clock origin: virtual under trio's MockClock,
    so tests run real latency, jitter and out-of-order answers in virtual time."""

    def __init__(self, wall_origin: float) -> None:
        self._origin = wall_origin - anyio.current_time()

    def now(self) -> float:
        return anyio.current_time()

    def wall(self) -> float:
        return self._origin + anyio.current_time()


class FakeClock:
    """A clock that jumps forward when slept on: tests run days of pacing in milliseconds.

    No time passes while a request is in flight (a zero-latency network), so a wait that an
    answer in flight may cut short (``wake``) lets that answer land first. Time passing
    during requests is what ``LoopClock`` on trio's MockClock is for.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.time = start

    def now(self) -> float:
        return self.time

    def wall(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        _check(seconds)
        self.time += seconds
        await anyio.lowlevel.checkpoint()

    async def sleep_until(self, deadline: float, wake: anyio.Event | None = None) -> None:
        if wake is not None and not wake.is_set():
            await wake.wait()  # answers land in zero time: before any deadline
            return
        self.time += remaining(deadline, self.time)
        await anyio.lowlevel.checkpoint()


class Cuttable:
    """Waits that one call cuts short, for good: a stopped run (Ctrl-C, a campaign stop) does not
    sit out a token, a backoff or the night. ``cut()`` cancels every wait in progress and makes
    any later one return at once."""

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()
        self.is_cut = False

    async def wait(self, wait: Callable[[], Awaitable[object]]) -> None:
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                if self.is_cut:
                    scope.cancel()
                await wait()
            finally:
                self._scopes.discard(scope)

    def cut(self) -> None:
        self.is_cut = True
        for scope in list(self._scopes):
            scope.cancel()


class InFlight:
    """At most ``limit`` sends in flight, and an event that is set when that number drops.

    Waiters hold the event of the moment (``changed()``); ``release`` sets it and starts a new
    one, so nobody polls to learn that an answer landed.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._count = 0
        self._changed = anyio.Event()

    @property
    def count(self) -> int:
        return self._count

    def changed(self) -> anyio.Event:
        """An event set at the next release (an answer landed, a slot freed)."""
        return self._changed

    async def acquire(self) -> None:
        await anyio.lowlevel.checkpoint()
        while self._count >= self.limit:
            await self._changed.wait()
        self._count += 1

    def release(self) -> None:
        self._count -= 1
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def idle(self) -> None:
        while self._count:
            await self._changed.wait()


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock.now()
        self._paused_until = 0.0
        self._lock = anyio.Lock()

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    async def acquire(self) -> None:
        """Wait for one token. Callers queue on the lock, so tokens go out in arrival order."""
        async with self._lock:
            while True:
                now = self._clock.now()
                if now < self._paused_until:
                    await self._clock.sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens >= 1 - _EPSILON:  # float sums of refills land just below 1
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._clock.sleep(max((1 - self._tokens) / self.rate, _MIN_SLEEP_S))

    def pause(self, seconds: float) -> None:
        """The server asked everyone to wait: nobody starts a request for ``seconds``."""
        until = self._clock.now() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self._tokens = 0.0
            self._updated = until
