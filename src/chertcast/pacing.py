"""Pacing: a token bucket on anyio primitives, with server-requested pauses and an injectable clock.

The bucket holds at most ``burst`` tokens and refills at ``rate`` per second, so in any
1-second window at most ``burst + rate`` requests start. A 429 (``retry_after``) pauses the
*whole* bucket, not just the task that got it, and empties it so the run resumes gently.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio
import anyio.lowlevel

_EPSILON = 1e-6  # tokens: float sums of refills land just below 1
_MIN_SLEEP_S = 1e-4  # so an epoch-sized clock (ulp ~2e-7 s) always moves forward


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds, for pacing."""

    def wall(self) -> float:
        """Epoch seconds, for capacity days, sending windows and quiet hours."""

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class FakeClock:
    """A clock that jumps forward when slept on: tests run minutes of pacing in milliseconds."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.time = start

    def now(self) -> float:
        return self.time

    def wall(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.time += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


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

    @property
    def paused_until(self) -> float:
        return self._paused_until
