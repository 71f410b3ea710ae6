"""The run: an anyio task group that sends the plan's pending rows, paced, retried, journaled.

Policy is data plus one pure function (``retry_delay``), as in hynek/stamina: tests check the
policy without sleeping, and the engine runs on an injectable clock.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import anyio
import anyio.abc

from chertcast.capacity import LinePlanner, QuietHours, next_quiet_ok, quiet_ok, zones_for
from chertcast.client import ChertClient, Outcome
from chertcast.journal import Journal
from chertcast.pacing import Clock, TokenBucket
from chertcast.preflight import Recipient

STOP_CODES = {
    2001: "the tenant is unknown (check [api] tenant / x-chert-tenant)",
    2004: "authentication failed: CHERT_SIGNING_SECRET is wrong for this API",
    2005: "the tenant is suspended or lacks permission",
    2008: "the account limit is reached",
    2012: "no credentials reached the API",
    2013: "this machine's clock is more than 5 minutes off; fix it and rerun",
    3003: "Chert's delivery provider is not configured for this tenant; contact Chert support",
}
CAPACITY_CODE = 4002
RATE_LIMIT_CODE = 1007


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0


def retry_delay(outcome: Outcome, attempt: int, policy: RetryPolicy, rng: random.Random) -> float | None:
    """Seconds to wait before the next attempt, or None to give up on this row.

    Network errors and ``retryable: true`` answers are retried; ``retry_after`` is honoured
    exactly; otherwise exponential backoff 1 s, 2 s, 4 s… with full jitter in [½, 1]×.
    """
    if not (outcome.kind == "network" or outcome.retryable) or attempt >= policy.max_attempts:
        return None
    if outcome.retry_after is not None:
        return float(outcome.retry_after)
    backoff = min(policy.max_delay_s, policy.base_delay_s * 2.0 ** (attempt - 1))
    return backoff * (0.5 + rng.random() / 2)


def outcome_unknown(outcome: Outcome) -> bool:
    """Whether an attempt that brought no success may still have been delivered.

    An error answer from Chert (it carries a code) means not sent, and so does a connection that
    never opened. A request that left but whose answer was lost (a dropped connection, a
    timeout), a 2xx we cannot read, or a gateway's 5xx page may have been delivered.
    """
    if outcome.kind == "network":
        return outcome.request_sent
    if outcome.code is not None or outcome.http_status is None:
        return False
    return outcome.http_status >= 500 or 200 <= outcome.http_status < 300


@dataclass
class Scheduler:
    """Capacity planning for first-touch sends: which line, when, and whose quiet hours allow it."""

    planner: LinePlanner
    quiet: QuietHours | None = None
    wait: bool = False  # --wait: stay up across days instead of ending today's run
    fixed_lines: dict[str, str] = field(default_factory=dict)  # lines already used by rows in 'sending'

    def line_for(self, recipient: Recipient) -> str | None:
        return self.fixed_lines.get(recipient.key or "") or recipient.phone_line_id

    def slot(self, recipient: Recipient, now: float) -> tuple[str, float]:
        line = self.line_for(recipient)
        if line is not None and line in self.planner.lines:
            return line, self.planner.earliest(line, now)
        if line is not None:  # a line we do not plan for: Chert decides
            return line, now
        return self.planner.next_slot(now)

    def held_until(self, recipient: Recipient, now: float) -> float | None:
        """When quiet hours hold this recipient, the time they end; else None."""
        if self.quiet is None or recipient.phone is None:
            return None
        zones = zones_for(recipient.phone, recipient.timezone, self.quiet.fallback_zone)
        if quiet_ok(zones, now, self.quiet):
            return None
        return next_quiet_ok(zones, now, self.quiet)

    def may_wait(self, now: float, until: float) -> bool:
        """Within today's sending day we wait; past it, the run ends unless --wait."""
        return self.wait or self.planner.day(until) == self.planner.day(now)


@dataclass
class EngineSettings:
    rate: float
    burst: int
    concurrency: int
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    failure_threshold: float = 0.5
    failure_window: int = 50
    grace_s: float = 30.0
    capacity_wait_s: float = 900.0  # a 4002 asking us to wait longer than this ends today's run
    campaign_effect: str | None = None
    campaign_line: str | None = None
    handle_signals: bool = True
    scheduler: Scheduler | None = None


@dataclass
class RunStats:
    attempted_rows: int = 0
    requests: int = 0
    sent: int = 0
    duplicate: int = 0
    failed: int = 0
    unknown: int = 0  # retries spent without knowing whether the message was delivered
    retries: int = 0
    retrying_now: int = 0
    capacity_waits: int = 0


class Progress(Protocol):
    def update(self, stats: RunStats) -> None: ...

    def close(self, stats: RunStats) -> None: ...


class NoProgress:
    def update(self, stats: RunStats) -> None:
        pass

    def close(self, stats: RunStats) -> None:
        pass


@dataclass
class RunResult:
    stats: RunStats
    stop_reason: str | None = None
    stop_kind: str | None = None  # "campaign" | "interrupted" | "capacity"
    next_possible_in_s: float | None = None
    next_possible_at: float | None = None  # wall-clock time, with a scheduler
    capacity: dict[str, object] | None = None  # per-line use today, filled in by the runner


class Engine:
    def __init__(
        self,
        client: ChertClient,
        journal: Journal,
        settings: EngineSettings,
        clock: Clock,
        progress: Progress | None = None,
        rng: random.Random | None = None,
        payload_for: Callable[[Recipient], dict[str, object]] | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.settings = settings
        self.clock = clock
        self.progress = progress or NoProgress()
        self.rng = rng or random.Random()
        self.bucket = TokenBucket(settings.rate, settings.burst, clock)
        self.stats = RunStats()
        self._payload_for = payload_for or (lambda r: r.payload())
        self._recent_failures: deque[bool] = deque(maxlen=settings.failure_window)
        self._result = RunResult(self.stats)
        self._stopping = anyio.Event()
        self._requeued: list[Recipient] = []
        self._waits: set[anyio.CancelScope] = set()

    # ----------------------------------------------------------------- stop

    @property
    def result(self) -> RunResult:
        return self._result

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, kind: str, reason: str, next_in: float | None = None) -> None:
        if not self.stopping:
            self._result.stop_kind, self._result.stop_reason = kind, reason
            self._result.next_possible_in_s = next_in
            self._stopping.set()
            for scope in list(self._waits):
                scope.cancel()

    # ------------------------------------------------------------------ run

    async def run(self, recipients: list[Recipient]) -> RunResult:
        slots = anyio.Semaphore(self.settings.concurrency)
        async with anyio.create_task_group() as group:
            if self.settings.handle_signals and threading.current_thread() is threading.main_thread():
                group.start_soon(self._watch_signals, group.cancel_scope)
            if self.settings.scheduler is None:
                for recipient in recipients:
                    if not await self._launch(group, slots, recipient, None):
                        break
            else:
                await self._run_scheduled(group, slots, self.settings.scheduler, recipients)
            await self._drain(slots)
            group.cancel_scope.cancel()
        self.progress.close(self.stats)
        return self._result

    async def _launch(
        self, group: anyio.abc.TaskGroup, slots: anyio.Semaphore, recipient: Recipient, line: str | None
    ) -> bool:
        await slots.acquire()
        await self._interruptible(self.bucket.acquire)
        if self.stopping:
            slots.release()
            return False
        group.start_soon(self._deliver, recipient, slots, line)
        return True

    async def _run_scheduled(
        self, group: anyio.abc.TaskGroup, slots: anyio.Semaphore, scheduler: Scheduler, recipients: list[Recipient]
    ) -> None:
        """Launch first-touch sends only when a line has room and the recipient's hours allow."""
        queue = deque(recipients)
        held: list[tuple[float, Recipient]] = []
        while not self.stopping:
            queue.extend(self._requeued)
            self._requeued.clear()
            now = self.clock.wall()
            queue.extend(r for until, r in held if until <= now)
            held = [(until, r) for until, r in held if until > now]
            if not queue:
                if slots.value < self.settings.concurrency:  # answers in flight may hand rows back
                    await anyio.sleep(0.005)
                    continue
                if not held:
                    return
                wake = min(until for until, _ in held)
                if not await self._wait_until(
                    scheduler, slots, now, wake, f"{len(held):,} rows are held by quiet hours"
                ):
                    return
                continue
            recipient = queue.popleft()
            until = scheduler.held_until(recipient, now)
            if until is not None:
                held.append((until, recipient))
                continue
            line, at = scheduler.slot(recipient, now)
            if at > now:
                queue.appendleft(recipient)
                if not await self._wait_until(scheduler, slots, now, at, "today's first-touch capacity is used up"):
                    return
                continue
            await slots.acquire()
            await self._interruptible(self.bucket.acquire)
            if self.stopping:
                slots.release()
                return
            now = self.clock.wall()  # the token wait took time: plan with the moment of sending
            line, at = scheduler.slot(recipient, now)
            if at > now:
                slots.release()
                queue.appendleft(recipient)
                continue
            scheduler.planner.record(line, now)
            group.start_soon(self._deliver, recipient, slots, line)

    async def _wait_until(
        self, scheduler: Scheduler, slots: anyio.Semaphore, now: float, until: float, why: str
    ) -> bool:
        """Wait for the next slot (today), or end the run (capacity returns another day)."""
        while slots.value < self.settings.concurrency:  # let answers in flight land first: a
            await anyio.sleep(0.005)  # handed-back row or a follow-up changes the plan
        if self._requeued:
            return True
        if not scheduler.may_wait(now, until):
            self.stop("capacity", why, next_in=until - now)
            self._result.next_possible_at = until
            return False
        await self._interruptible(partial(self.clock.sleep, until - self.clock.wall()))
        return not self.stopping

    async def _interruptible(self, wait: Callable[[], Awaitable[None]]) -> None:
        """Run a wait (token, backoff) that ``stop()`` cuts short."""
        with anyio.CancelScope() as scope:
            self._waits.add(scope)
            try:
                if self.stopping:
                    scope.cancel()
                await wait()
            finally:
                self._waits.discard(scope)

    async def _drain(self, slots: anyio.Semaphore) -> None:
        """Wait until every in-flight send has finished (bounded by grace_s once stopping)."""
        deadline: float | None = None
        while slots.value < self.settings.concurrency:
            if self.stopping and deadline is None:
                deadline = anyio.current_time() + self.settings.grace_s
            if deadline is not None and anyio.current_time() > deadline:
                return
            await anyio.sleep(0.01)

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if self.stopping and self._result.stop_kind == "interrupted":
                    # Second Ctrl-C: leave now. Every transition is already committed, and
                    # rows caught in flight stay 'sending' and are resent with the same key.
                    print("\nchertcast: stopped at once; the journal is consistent. Rerun to resume.", file=sys.stderr)
                    os._exit(130)
                self.stop("interrupted", "interrupted (Ctrl-C); waiting for messages in flight")
                print(
                    "\nchertcast: stopping: waiting for messages in flight (Ctrl-C again to quit now)", file=sys.stderr
                )

    # -------------------------------------------------------------- one row

    async def _deliver(self, recipient: Recipient, slots: anyio.Semaphore, line: str | None) -> None:
        try:
            self.stats.attempted_rows += 1
            await self._attempts(recipient, line)
        finally:
            slots.release()
            self.progress.update(self.stats)

    async def _attempts(self, recipient: Recipient, line: str | None) -> None:
        assert recipient.key is not None
        key = recipient.key
        payload = self.journal.replay_payload(key)  # an earlier attempt may have been delivered: repeat it exactly
        if payload is None:
            payload = self._payload_for(recipient)
            if line is not None:
                payload = {**payload, "phone_line_id": line}  # planned: the line is always explicit
        attempt = 0
        while True:
            attempt += 1
            self.journal.mark_sending(key, line, payload)
            self.stats.requests += 1
            outcome = await self.client.send(payload)
            if outcome.delivered:
                scheduler = self.settings.scheduler
                if scheduler is not None and line is not None and outcome.lead_created is False:
                    scheduler.planner.release(line, self.clock.wall())  # a follow-up: no first touch spent
                self.journal.mark_delivered(key, outcome)
                self.stats.sent += outcome.kind == "sent"
                self.stats.duplicate += outcome.kind == "duplicate"
                self._record(failed=False)
                return
            if outcome.code == CAPACITY_CODE and self.settings.scheduler is not None and line is not None:
                self._hand_back(recipient, line, outcome)
                return
            delay = self._handle_failure(recipient, outcome, attempt)
            if delay is None or self.stopping:
                return
            if outcome.code == CAPACITY_CODE:
                attempt -= 1  # a capacity wait is not the row's fault
            self.stats.retries += 1
            self.stats.retrying_now += 1
            self.progress.update(self.stats)
            try:
                await self._interruptible(partial(self.clock.sleep, delay))
                await self._interruptible(self.bucket.acquire)
            finally:
                self.stats.retrying_now -= 1
            if self.stopping:
                return

    def _handle_failure(self, recipient: Recipient, outcome: Outcome, attempt: int) -> float | None:
        """Journal the answer; return the delay before retrying, or None when the row is done."""
        key = recipient.key
        assert key is not None
        unknown = outcome_unknown(outcome)  # it may have been delivered: keep 'sending'
        stop = self._stop_reason(recipient, outcome)
        if stop is not None:
            self.journal.note_error(key, outcome.code, outcome.message, state="sending" if unknown else "pending")
            self.stop("campaign", stop)
            return None
        if outcome.code == CAPACITY_CODE:
            return self._capacity_wait(key, outcome)
        delay = retry_delay(outcome, attempt, self.settings.retry, self.rng)
        if delay is None:
            state = self.journal.mark_failed(key, outcome.code, _describe(outcome, attempt), outcome_unknown=unknown)
            if state == "unknown":  # never 'failed': the next run resends the first request, same key
                self.stats.unknown += 1
            else:
                self.stats.failed += 1
            self._record(failed=True)
            return None
        self.journal.note_error(key, outcome.code, outcome.message, state="sending" if unknown else "pending")
        if outcome.code == RATE_LIMIT_CODE:
            self.bucket.pause(delay)
        return delay

    def _hand_back(self, recipient: Recipient, line: str, outcome: Outcome) -> None:
        """A planned send met 4002: the line is busier than we knew; wait it out, never fail the row."""
        assert recipient.key is not None and self.settings.scheduler is not None
        now = self.clock.wall()
        planner = self.settings.scheduler.planner
        planner.release(line, now)
        planner.block(line, now + (outcome.retry_after if outcome.retry_after is not None else 60.0))
        self.journal.note_error(recipient.key, outcome.code, outcome.message, state="pending")
        self.stats.capacity_waits += 1
        self._requeued.append(recipient)

    def _capacity_wait(self, key: str, outcome: Outcome) -> float | None:
        wait = outcome.retry_after if outcome.retry_after is not None else 60.0
        self.journal.note_error(key, outcome.code, outcome.message, state="pending")
        self.stats.capacity_waits += 1
        if wait > self.settings.capacity_wait_s:
            self.stop("capacity", "every sender line is saturated for now (4002)", next_in=wait)
            return None
        self.bucket.pause(wait)
        return wait

    def _stop_reason(self, recipient: Recipient, outcome: Outcome) -> str | None:
        code = outcome.code
        if code in STOP_CODES:
            return f"{code}: {STOP_CODES[code]}"
        if code == 4098 and recipient.effect and recipient.effect == self.settings.campaign_effect:
            allowed = ", ".join((outcome.extra or {}).get("allowed_effects", []) or [])
            return f"4098: the campaign's effect {recipient.effect!r} is unknown to Chert (allowed: {allowed})"
        if code == 2006 and recipient.phone_line_id and recipient.phone_line_id == self.settings.campaign_line:
            return f"2006: the campaign's phone_line_id {recipient.phone_line_id!r} is not assigned to this tenant"
        return None

    def _record(self, *, failed: bool) -> None:
        window = self._recent_failures
        window.append(failed)
        if len(window) == window.maxlen:
            share = sum(window) / len(window)
            if share > self.settings.failure_threshold:
                self.stop(
                    "campaign",
                    f"{share:.0%} of the last {len(window)} sends failed "
                    f"(threshold {self.settings.failure_threshold:.0%})",
                )


def _describe(outcome: Outcome, attempt: int) -> str:
    tries = f" after {attempt} attempts" if attempt > 1 else ""
    where = (
        f" (attachment {outcome.extra['attachment_index']})"
        if outcome.extra and "attachment_index" in outcome.extra
        else ""
    )
    return f"{outcome.message}{where}{tries}"
