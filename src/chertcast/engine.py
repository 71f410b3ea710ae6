"""The run: an anyio task group that sends the plan's pending rows, paced, retried, journaled.

Policy is data plus one pure function (``retry_delay``), as in hynek/stamina: tests check the
policy without sleeping, and the engine runs on an injectable clock.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Protocol
from zoneinfo import ZoneInfo

import anyio
import anyio.abc

from chertcast.capacity import LinePlanner, QuietHours, never_reason, next_allowed, zones_for
from chertcast.client import SETUP_STATUSES, ChertClient, Outcome
from chertcast.journal import Journal
from chertcast.pacing import Clock, InFlight, TokenBucket, remaining
from chertcast.preflight import AttachmentRef, Recipient

LINK_CODE = 1005  # Chert refuses a first message holding a link: the campaign stops
STOP_CODES = {
    2001: "the tenant is unknown (check [api] tenant / x-chert-tenant)",
    2004: "authentication failed: the signing secret (CHERT_SIGNING_SECRET or the secret file) is wrong for this API",
    2005: "the tenant is suspended or lacks permission",
    2008: "the account limit is reached",
    2012: "no credentials reached the API",
    2013: "this machine's clock is more than 5 minutes off; fix it and rerun",
    3003: "Chert's delivery provider is not configured for this tenant; contact Chert support",
    LINK_CODE: (
        "the first message must not contain links (URLs, www., domains such as example.com): Chert refused "
        "it, so the campaign stops here instead of failing row after row. Take the link out of the message "
        "(`chertcast check` lists every row with one), then resume with --allow-changes (the rows Chert "
        "refused were attempted with the old text)"
    ),
}
CAPACITY_CODE = 4002
RATE_LIMIT_CODE = 1007
LONG_WAIT_S = 60.0  # a wait this long or longer prints a line saying what for and until when
ATTACHMENT_UNKNOWN_CODE = 5001


@dataclass
class SetupBreaker:
    """Stops a run whose setup is broken, before it fails row after row.

    Some answers can only mean a setup problem when nothing has succeeded yet: a non-Chert
    404 (the base URL's path is wrong), a connection that cannot be made (a host typo, a
    closed port). The first ``threshold`` identical ones before any success stop the
    campaign — at any campaign size, within the first few requests. After one success the
    setup is proven, and the same answers are ordinary trouble (retried, then failed).
    """

    threshold: int = 3
    succeeded: bool = False
    _signature: str | None = None
    _count: int = 0

    def success(self) -> None:
        self.succeeded = True

    def observe(self, outcome: Outcome, base_url: str) -> str | None:
        """The stop reason once ``threshold`` identical setup answers have come; else None."""
        signature = setup_signature(outcome)
        if self.succeeded or signature is None:
            return None
        self._count = self._count + 1 if signature == self._signature else 1
        self._signature = signature
        if self._count < self.threshold:
            return None
        if outcome.kind == "unreachable":
            return (
                f"no connection could be made to the API {self._count} times and nothing has been sent "
                f"({outcome.message}): check [api] base_url / CHERT_BASE_URL ({base_url}) and the network"
            )
        return (
            f"the API base URL answered {self._count} times with {outcome.message} and nothing has been sent: "
            f"{base_url}/send is not Chert's /send — check [api] base_url / CHERT_BASE_URL"
        )


def setup_signature(outcome: Outcome) -> str | None:
    """What makes two setup answers identical; None for answers that may be the row's own."""
    if outcome.kind == "unreachable":
        return f"unreachable {outcome.message}"
    if outcome.kind == "error" and not outcome.is_chert_answer and outcome.http_status in SETUP_STATUSES:
        return f"http {outcome.http_status}"
    return None


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
    if not (outcome.kind in ("network", "unreachable") or outcome.retryable) or attempt >= policy.max_attempts:
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
    """Capacity planning for first-touch sends: which line, when, and whose quiet hours allow it.

    Chert times a first touch when it arrives, which is somewhere between our request and its
    answer. So a line's next first touch is planned from the *answer* (the latest moment Chert
    can have timed it), and while a line's first touch is unanswered its next slot is at least
    a gap away; the answer landing wakes the engine to plan again. Latency and jitter then
    cannot bring two first touches on a line closer than the gap, on any network.
    """

    planner: LinePlanner
    quiet: QuietHours | None = None
    wait: bool = False  # --wait: stay up across days instead of ending today's run
    fixed_lines: dict[str, str] = field(default_factory=dict)  # lines already used by rows in 'sending'
    unanswered: Counter[str] = field(default_factory=Counter)  # planned sends in flight, per line
    carried_over: set[str] = field(default_factory=set)  # keys left 'sending' by an earlier run: counted already
    foreign_blocked: dict[str, float] = field(default_factory=dict)  # lines we do not plan: 4002 until
    pooled: int = 0  # first touches in flight with the line left to Chert
    pool_blocked: float = float("-inf")  # a 4002 on a pooled send: every line is saturated until then
    _holds: dict[tuple[ZoneInfo, ...], tuple[float, float]] = field(default_factory=dict, repr=False)

    def line_for(self, recipient: Recipient) -> str | None:
        return self.fixed_lines.get(recipient.key or "") or recipient.phone_line_id

    def slot(self, recipient: Recipient, now: float) -> tuple[str | None, float]:
        """The line to send on (None: Chert picks, see ``pool_slot``) and the moment it may go."""
        line = self.line_for(recipient)
        if line is not None and line in self.planner.lines:
            return line, self.earliest(line, now)
        if line is not None:  # a line we do not plan for: Chert decides, but a 4002's wait holds
            return line, max(now, self.foreign_blocked.get(line, now))
        return None, self.pool_slot(now)

    def pool_slot(self, now: float) -> float:
        """When a send without ``phone_line_id`` may go: once more lines have room than such
        sends are unanswered (each may take any line with room; its answer names the line).

        No ``phone_line_id`` is sent for a row that does not name one, so a recipient with an
        existing conversation keeps its pinned line (sending one re-pins, SPEC §7), and a new
        recipient gets a line Chert picks among those with room."""
        times = sorted(self.earliest(line, now) for line in self.planner.lines)
        gap = self.planner.rules.line_gap_s
        at = times[self.pooled] if self.pooled < len(times) else now + gap  # an answer wakes us sooner
        cap = self.planner.rules.project_daily_cap
        if cap is not None and self.pooled and self.planner.project_per_day[self.planner.day(at)] + self.pooled >= cap:
            at = max(at, now + gap)  # the day's last slots: wait for the answers in flight
        return max(at, self.pool_blocked)

    def earliest(self, line: str, now: float) -> float:
        at = self.planner.earliest(line, now)
        if self.unanswered[line]:  # a placeholder: the answer sets the real slot
            at = max(at, now + self.planner.rules.line_gap_s)
        return at

    def launched(self, key: str, line: str | None, now: float) -> None:
        if line is None:
            self.pooled += 1
            return
        if key in self.carried_over:  # its first touch is in the history already: resent, not counted twice
            self.carried_over.discard(key)
            self.planner.block(line, now + self.planner.rules.line_gap_s)
        else:
            self.planner.record(line, now)
        self.unanswered[line] += 1

    def answered(self, line: str | None, now: float, *, first_touch: bool, pooled: bool = False) -> None:
        """A planned send was delivered: a first touch starts the gap now; a follow-up gives its slot back.
        A pooled send's line is the one Chert's answer names; only a first touch counts for it."""
        if pooled:
            if first_touch and line is not None:
                self.planner.record(line, now)
                self.planner.block(line, now + self.planner.rules.line_gap_s)
            return
        assert line is not None
        if first_touch:
            self.planner.block(line, now + self.planner.rules.line_gap_s)
        else:
            self.planner.release(line, now)

    def refused(self, line: str | None, now: float, until: float) -> None:
        """Chert answered 4002 for a send on ``line``: its slot is given back, the line waits
        (a pooled send: every line was saturated for it, so pooled sends wait)."""
        if line is None:
            self.pool_blocked = max(self.pool_blocked, until)
        elif line in self.planner.lines:
            self.planner.release(line, now)
            self.planner.block(line, until)
        else:
            self.foreign_blocked[line] = max(until, self.foreign_blocked.get(line, until))

    def finished(self, line: str | None) -> None:
        if line is None:
            self.pooled -= 1
        else:
            self.unanswered[line] -= 1

    def held_until(self, recipient: Recipient, now: float) -> float | None:
        """When quiet hours hold this recipient, the first moment both they and the sending
        window allow it; ``math.inf`` when they never meet (``never``); None when not held."""
        if self.quiet is None or recipient.phone is None:
            return None
        zones = zones_for(recipient.phone, recipient.timezone, self.quiet.fallback_zone)
        known = self._holds.get(zones)  # (asked at, answer): the answer holds until it is reached
        if known is not None and known[0] <= now < known[1] and now - known[0] < 3_600:
            until: float | None = known[1]
        else:
            until = next_allowed(now, zones, self.quiet, self.planner.rules)
            self._holds[zones] = (now, math.inf if until is None else until)
        if until is None or until == math.inf:
            return math.inf
        return None if until <= now else until

    def never(self, recipient: Recipient) -> str:
        """Why a recipient ``held_until`` calls never-sendable can never be sent."""
        assert self.quiet is not None and recipient.phone is not None
        zones = zones_for(recipient.phone, recipient.timezone, self.quiet.fallback_zone)
        return never_reason(zones, self.quiet, self.planner.rules)

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
    campaign_attachments: tuple[AttachmentRef, ...] = ()  # [send] attachments: a 5001 on one stops the run
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
        self._setup = SetupBreaker()
        self._result = RunResult(self.stats)
        self._stopping = anyio.Event()
        self._requeued: list[Recipient] = []
        self._held: list[tuple[float, Recipient]] = []  # rows waiting for a moment (quiet hours, a 4002)
        self._capacity_held: set[str] = set()  # keys in _held because of a 4002
        self.notice: Callable[[str], None] = lambda text: print(f"chertcast: {text}", file=sys.stderr, flush=True)
        self._waits: set[anyio.CancelScope] = set()
        self.in_flight = InFlight(settings.concurrency)

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
        async with anyio.create_task_group() as group:
            if self.settings.handle_signals and threading.current_thread() is threading.main_thread():
                group.start_soon(self._watch_signals, group.cancel_scope)
            if self.settings.scheduler is None:
                for recipient in recipients:
                    if not await self._launch(group, recipient):
                        break
            else:
                scheduler = self.settings.scheduler
                scheduler.carried_over = {key for key, state in self.journal.states().items() if state == "sending"}
                await self._run_scheduled(group, scheduler, recipients)
            await self._drain()
            group.cancel_scope.cancel()
        self.progress.close(self.stats)
        return self._result

    async def _launch(self, group: anyio.abc.TaskGroup, recipient: Recipient) -> bool:
        await self.in_flight.acquire()
        await self._interruptible(self.bucket.acquire)
        if self.stopping:
            self.in_flight.release()
            return False
        group.start_soon(self._deliver, recipient, None)
        return True

    async def _run_scheduled(
        self, group: anyio.abc.TaskGroup, scheduler: Scheduler, recipients: list[Recipient]
    ) -> None:
        """Launch first-touch sends only when a line has room and the recipient's hours allow.

        Each pass plans with the moment it starts (``now``); every wait below is toward a
        deadline and is cut short when an answer lands, so a plan never outlives the moment
        it was made for.
        """
        queue = deque(recipients)
        held = self._held
        never = 0
        while not self.stopping:
            queue.extend(self._requeued)
            self._requeued.clear()
            now = self.clock.wall()
            queue.extend(r for until, r in held if until <= now)
            held[:] = [(until, r) for until, r in held if until > now]
            if not queue:
                if held:
                    wake = min(until for until, _ in held)
                    if not await self._wait_until(scheduler, wake, self._held_reason(never)):
                        return
                elif self.in_flight.count:  # answers in flight may hand rows back
                    await self._interruptible(self.in_flight.changed().wait)
                else:
                    if never:
                        self.stop("capacity", _never_text(never))
                    return
                continue
            recipient = queue.popleft()
            until = scheduler.held_until(recipient, now)
            if until == math.inf:  # quiet hours and the window never meet: held, with its reason
                never += 1
                self.journal.note_error(recipient.key or "", None, scheduler.never(recipient), state="pending")
                continue
            if until is not None:
                held.append((until, recipient))
                continue
            line, at = scheduler.slot(recipient, now)
            if at > now:
                queue.appendleft(recipient)
                why = "today's first-touch capacity is used up" + (f"; {_never_text(never)}" if never else "")
                if not await self._wait_until(scheduler, at, why):
                    return
                continue
            await self.in_flight.acquire()
            await self._interruptible(self.bucket.acquire)
            if self.stopping:
                self.in_flight.release()
                return
            now = self.clock.wall()  # the waits for a slot and a token took time: plan with the moment of sending
            line, at = scheduler.slot(recipient, now)
            if at > now:
                self.in_flight.release()
                queue.appendleft(recipient)
                continue
            scheduler.launched(recipient.key or "", line, now)
            group.start_soon(self._deliver, recipient, line, True)

    async def _wait_until(self, scheduler: Scheduler, until: float, why: str) -> bool:
        """Wait for ``until`` or the next answer, whichever comes first; False ends the run.

        When ``until`` is another day the run ends (capacity returns then), but only once no
        answer is in flight: a handed-back row or a follow-up can still change the plan.
        """
        if self._requeued:
            return True
        busy = self.in_flight.count > 0
        wake = self.in_flight.changed() if busy else None
        now = self.clock.wall()
        if not scheduler.may_wait(now, until):
            if wake is not None:
                await self._interruptible(wake.wait)
                return not self.stopping
            self.stop("capacity", why, next_in=remaining(until, now))
            self._result.next_possible_at = until
            return False
        self._announce(why, until)
        await self._interruptible(partial(self.clock.sleep_until, until, wake))
        return not self.stopping

    def _held_reason(self, never: int) -> str:
        by_4002 = sum(1 for _, r in self._held if (r.key or "") in self._capacity_held)
        quiet = len(self._held) - by_4002
        parts = [f"{quiet:,} rows are held by quiet hours"] if quiet else []
        parts += [f"{by_4002:,} rows wait for a 4002's retry_after"] if by_4002 else []
        parts += [_never_text(never)] if never else []
        return "; ".join(parts) or "rows are held"

    def _announce(self, why: str, until: float) -> None:
        """A progress line for a long wait: what we wait for and until when."""
        now = self.clock.wall()
        if until - now < LONG_WAIT_S:
            return
        scheduler = self.settings.scheduler
        zone = scheduler.planner.rules.zone if scheduler is not None else None
        when = datetime.fromtimestamp(until, zone or UTC).strftime("%Y-%m-%d %H:%M:%S %Z")
        self.notice(f"waiting: {why}; until {when} (in {remaining(until, now):,.0f}s)")

    async def _interruptible(self, wait: Callable[[], Awaitable[object]]) -> None:
        """Run a wait (token, backoff, slot) that ``stop()`` cuts short."""
        with anyio.CancelScope() as scope:
            self._waits.add(scope)
            try:
                if self.stopping:
                    scope.cancel()
                await wait()
            finally:
                self._waits.discard(scope)

    async def _drain(self) -> None:
        """Wait until every send in flight has landed; once stopping, for at most ``grace_s``."""
        async with anyio.create_task_group() as group:

            async def landed() -> None:
                await self.in_flight.idle()
                group.cancel_scope.cancel()

            async def grace() -> None:
                await self._stopping.wait()
                await anyio.sleep(self.settings.grace_s)
                group.cancel_scope.cancel()

            group.start_soon(landed)
            group.start_soon(grace)

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for received in signals:
                if self.stopping and self._result.stop_kind == "interrupted":
                    # Second Ctrl-C: leave now. Every transition is already committed, and
                    # rows caught in flight stay 'sending' and are resent with the same key.
                    print("\nchertcast: stopped at once; the journal is consistent. Rerun to resume.", file=sys.stderr)
                    os._exit(130)
                name = "Ctrl-C" if received == signal.SIGINT else signal.Signals(received).name
                self.stop("interrupted", f"interrupted ({name})")
                print(
                    "\nchertcast: stopping: waiting for messages in flight (Ctrl-C again to quit now)", file=sys.stderr
                )

    # -------------------------------------------------------------- one row

    async def _deliver(self, recipient: Recipient, line: str | None, planned: bool = False) -> None:
        try:
            self.stats.attempted_rows += 1
            await self._attempts(recipient, line, planned)
        finally:
            if planned and self.settings.scheduler is not None:
                self.settings.scheduler.finished(line)
            self.in_flight.release()
            self.progress.update(self.stats)

    async def _attempts(self, recipient: Recipient, line: str | None, planned: bool = False) -> None:
        assert recipient.key is not None
        key = recipient.key
        payload = self.journal.replay_payload(key)  # an earlier attempt may have been delivered: repeat it exactly
        if payload is None:
            payload = self._payload_for(recipient)
            if line is not None:
                payload = {**payload, "phone_line_id": line}  # the row's own line, or one a resend must keep
        attempt = 0
        while True:
            attempt += 1
            self.journal.mark_sending(key, line, payload)
            self.stats.requests += 1
            outcome = await self.client.send(payload)
            if outcome.delivered:
                scheduler = self.settings.scheduler
                if scheduler is not None and planned:
                    scheduler.answered(
                        line or outcome.phone_line_id,
                        self.clock.wall(),
                        first_touch=outcome.lead_created is not False,
                        pooled=line is None,
                    )
                self.journal.mark_delivered(key, outcome)
                self.stats.sent += outcome.kind == "sent"
                self.stats.duplicate += outcome.kind == "duplicate"
                self._record(failed=False)
                return
            if outcome.code == CAPACITY_CODE and self.settings.scheduler is not None and planned:
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

    def _hand_back(self, recipient: Recipient, line: str | None, outcome: Outcome) -> None:
        """A planned send met 4002: never a row failure. Its ``retry_after`` is honoured for
        the line it concerns (a planned line is blocked, so no send goes to it before then; a
        line we do not plan for is blocked in the scheduler) and the row waits in ``_held``
        until a line can take it. Longer than ``capacity_wait_s``: the run stops (exit 0)."""
        assert recipient.key is not None and self.settings.scheduler is not None
        scheduler = self.settings.scheduler
        now = self.clock.wall()
        wait = float(outcome.retry_after) if outcome.retry_after is not None else 60.0
        scheduler.refused(line, now, now + wait)
        self.journal.note_error(recipient.key, outcome.code, outcome.message, state="pending")
        self.stats.capacity_waits += 1
        if wait > self.settings.capacity_wait_s:
            self.stop("capacity", f"Chert's sender lines are saturated (4002, retry after {wait:,.0f}s)", next_in=wait)
            self._result.next_possible_at = now + wait
            return
        self._capacity_held.add(recipient.key)
        self._held.append((now + wait, recipient))

    def _capacity_wait(self, key: str, outcome: Outcome) -> float | None:
        """Planning off: a 4002 is this row's wait (the run goes on; a 1007 is what pauses it)."""
        wait = outcome.retry_after if outcome.retry_after is not None else 60.0
        self.journal.note_error(key, outcome.code, outcome.message, state="pending")
        self.stats.capacity_waits += 1
        if wait > self.settings.capacity_wait_s:
            self.stop(
                "capacity", f"every sender line is saturated for now (4002, retry after {wait:,.0f}s)", next_in=wait
            )
            self._result.next_possible_at = self.clock.wall() + wait
            return None
        self._announce(f"row {key[:12]}… got 4002 (sender lines saturated)", self.clock.wall() + wait)
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
        if code == ATTACHMENT_UNKNOWN_CODE:
            shared = self._campaign_attachment(recipient, outcome)
            if shared is not None:
                return f"5001: the campaign's attachment {shared!r} ([send] attachments) is unknown to Chert"
        return self._setup.observe(outcome, self.client.base_url)

    def _campaign_attachment(self, recipient: Recipient, outcome: Outcome) -> str | None:
        """The campaign-wide attachment a 5001 names (by ``attachment_index``, or the only kind the row has)."""
        shared = self.settings.campaign_attachments
        index = (outcome.extra or {}).get("attachment_index")
        if isinstance(index, int) and 0 <= index < len(recipient.attachments):
            ref = recipient.attachments[index]
            return ref.value if ref in shared else None
        if recipient.attachments and all(ref in shared for ref in recipient.attachments):
            return ", ".join(ref.value for ref in recipient.attachments)
        return None

    def _record(self, *, failed: bool) -> None:
        if not failed:
            self._setup.success()
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


def _never_text(count: int) -> str:
    return (
        f"{count:,} row{'s' if count != 1 else ''} can never be sent: quiet hours and the sending window never "
        "meet for them (see `chertcast check`; the journal notes each reason)"
    )


def _describe(outcome: Outcome, attempt: int) -> str:
    tries = f" after {attempt} attempts" if attempt > 1 else ""
    where = (
        f" (attachment {outcome.extra['attachment_index']})"
        if outcome.extra and "attachment_index" in outcome.extra
        else ""
    )
    return f"{outcome.message}{where}{tries}"
