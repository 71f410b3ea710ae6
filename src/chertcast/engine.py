"""The run: an anyio task group that launches sends, tracks them in flight and executes decisions.

The engine decides nothing itself. What to do with an answer is ``decide.decide`` (pure);
which row goes next, on which line, or why we wait is ``schedule.step`` (pure). The engine owns
the task group, the in-flight limit, the token bucket, the journal writes and the waits, all on
an injectable clock (but for the grace period after a stop, the event loop's own). It never
prints and never ends the process: long waits and signals are reported through ``RunHooks``,
and the caller (the CLI) decides what a second Ctrl-C does.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Literal, Protocol

import anyio
import anyio.abc

from chertcast.client import ChertClient, Outcome
from chertcast.decide import (
    Attempt,
    CapacityWait,
    Decision,
    Fail,
    FailureBreaker,
    RetryPolicy,
    Rules,
    SetupBreaker,
    Stop,
    decide,
)
from chertcast.journal import Journal
from chertcast.outgoing import Outgoing
from chertcast.pacing import Clock, Cuttable, InFlight, TokenBucket, remaining
from chertcast.preflight import AttachmentRef, Recipient
from chertcast.schedule import Done, Never, Rows, Scheduler, Wait, launch, step

LONG_WAIT_S = 60.0  # a wait this long or longer is reported (RunHooks.notice): what for and until when

StopKind = Literal["campaign", "interrupted", "capacity"]


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

    def rules(self) -> Rules:
        return Rules(
            self.retry, self.capacity_wait_s, self.campaign_effect, self.campaign_line, self.campaign_attachments
        )


@dataclass
class RunStats:
    requests: int = 0
    sent: int = 0
    duplicate: int = 0
    failed: int = 0
    unknown: int = 0  # rows whose attempts ran out without knowing whether one was delivered
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


def _ignore(*_: object) -> None:
    pass


@dataclass(frozen=True)
class RunHooks:
    """How a run speaks to whoever started it; by default it says nothing.

    ``notice`` gets a line for people about a long wait. ``interrupted`` is called when SIGINT or
    SIGTERM arrives: ``again=False`` for the first (the run stops launching and lets what is in
    flight land), ``again=True`` for any later one, with the signal's name ("Ctrl-C" for SIGINT,
    else e.g. "SIGTERM"). If ``interrupted(True, …)`` returns, the engine
    cancels the run at once; every journal transition is already committed, and rows caught in
    flight stay 'sending' and are resent with the same key on the next run.
    """

    notice: Callable[[str], None] = _ignore
    interrupted: Callable[[bool, str], None] = _ignore


@dataclass
class RunResult:
    stats: RunStats
    stop_reason: str | None = None
    stop_kind: StopKind | None = None
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
        hooks: RunHooks | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.settings = settings
        self.clock = clock
        self.progress = progress or NoProgress()
        self.rng = rng or random.Random()
        self.bucket = TokenBucket(settings.rate, settings.burst, clock)
        self.stats = RunStats()
        self.in_flight = InFlight(settings.concurrency)
        hooks = hooks or RunHooks()
        self.notice = hooks.notice
        self._unlisted: set[str] = set()  # lines Chert answered with that the plan does not know
        self._announced: tuple[str, float] | None = None  # the last long wait said to the user
        self._interrupted = hooks.interrupted
        self._payload_for = payload_for or (lambda r: r.payload())
        self._rules = settings.rules()
        self._failures = FailureBreaker(settings.failure_threshold, settings.failure_window)
        self._setup = SetupBreaker()
        self._rows = Rows()
        self._result = RunResult(self.stats)
        self._stopping = anyio.Event()
        self._waits = Cuttable()  # waits that stop() cuts short

    # ----------------------------------------------------------------- stop

    @property
    def result(self) -> RunResult:
        return self._result

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, kind: StopKind, reason: str, next_in: float | None = None) -> None:
        if not self.stopping:
            self._result.stop_kind, self._result.stop_reason = kind, reason
            self._result.next_possible_in_s = next_in
            self._stopping.set()
            self._waits.cut()

    # ------------------------------------------------------------------ run

    async def run(self, recipients: Sequence[Recipient]) -> RunResult:
        outgoing = [Outgoing.of(r) for r in recipients]
        async with anyio.create_task_group() as group:
            if self.settings.handle_signals:
                group.start_soon(self.watch_signals, group.cancel_scope)
            if self.settings.scheduler is None:
                for row in outgoing:
                    if not await self._launch(group, row):
                        break
            else:
                scheduler = self.settings.scheduler
                scheduler.carried_over = {key for key, state in self.journal.states().items() if state == "sending"}
                self._rows.waiting.extend(outgoing)
                await self._run_scheduled(group, scheduler)
            await self._drain()
            group.cancel_scope.cancel()
        self.progress.close(self.stats)
        return self._result

    async def _launch(self, group: anyio.abc.TaskGroup, row: Outgoing) -> bool:
        await self.in_flight.acquire()
        await self._interruptible(self.bucket.acquire)
        if self.stopping:
            self.in_flight.release()
            return False
        group.start_soon(self._deliver, row, None)
        return True

    async def _run_scheduled(self, group: anyio.abc.TaskGroup, scheduler: Scheduler) -> None:
        """Execute the scheduler's choices until it is done or the run stops.

        Each step plans with the moment it starts; every wait is toward a deadline and is cut
        short when an answer lands, so a plan never outlives the moment it was made for.
        """
        while not self.stopping:
            choice = step(self._rows, scheduler, self.clock.wall(), self.in_flight.count)
            if isinstance(choice, Never):
                self.journal.note_error(choice.outgoing.key, None, choice.reason, state="pending")
            elif isinstance(choice, Wait):
                await self._wait(choice)
            elif isinstance(choice, Done):
                self._done(choice)
                return
            else:  # Send: the head row, once a slot and a token are had
                await self._launch_planned(group, scheduler)

    async def _launch_planned(self, group: anyio.abc.TaskGroup, scheduler: Scheduler) -> None:
        await self.in_flight.acquire()
        await self._interruptible(self.bucket.acquire)
        # The waits for a slot and a token took time: the plan is checked again at the moment of sending.
        send = None if self.stopping else launch(self._rows, scheduler, self.clock.wall())
        if send is None:
            self.in_flight.release()
            return
        group.start_soon(self._deliver, send.outgoing, send.line)

    async def _wait(self, choice: Wait) -> None:
        """Wait for the choice's moment, or the next answer in flight, whichever comes first."""
        if choice.until is None:  # the scheduler waits for an answer only while one is in flight
            await self._interruptible(self.in_flight.changed().wait)
            return
        wake = self.in_flight.changed() if self.in_flight.count else None
        self._announce(choice.why, choice.until)
        await self._interruptible(partial(self.clock.sleep_until, choice.until, wake))

    def _done(self, choice: Done) -> None:
        if choice.stop_reason is None:
            return
        if choice.next_possible_at is None:
            self.stop("capacity", choice.stop_reason)
            return
        self.stop("capacity", choice.stop_reason, next_in=remaining(choice.next_possible_at, self.clock.wall()))
        self._result.next_possible_at = choice.next_possible_at

    def _announce(self, why: str, until: float) -> None:
        """A line for people about a long wait: what we wait for and until when."""
        now = self.clock.wall()
        if until - now < LONG_WAIT_S or (why, until) == self._announced:  # woken early, same wait: said already
            return
        self._announced = (why, until)
        scheduler = self.settings.scheduler
        zone = scheduler.zone if scheduler is not None else None
        when = datetime.fromtimestamp(until, zone or UTC).strftime("%Y-%m-%d %H:%M:%S %Z")
        self.notice(f"waiting: {why}; until {when} (in {remaining(until, now):,.0f}s)")

    async def _interruptible(self, wait: Callable[[], Awaitable[object]]) -> None:
        """Run a wait (token, backoff, slot) that ``stop()`` cuts short."""
        await self._waits.wait(wait)

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

    async def watch_signals(self, run_scope: anyio.CancelScope, also: Callable[[], None] = _ignore) -> None:
        """First SIGINT/SIGTERM: stop launching and let what is in flight land (``also`` stops
        whatever else the run does, e.g. its follow-ups). Any later one: the hook decides (the CLI
        leaves the process at once); if it returns, ``run_scope`` is cancelled. Only the main
        thread can receive signals; elsewhere this returns at once.

        ``run`` watches while it runs (``handle_signals``); a caller whose run goes on after it
        (follow-ups) turns that off and watches for the whole of its run instead."""
        if threading.current_thread() is not threading.main_thread():
            return
        interrupted = False
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for received in signals:
                name = "Ctrl-C" if received == signal.SIGINT else signal.Signals(received).name
                if interrupted:
                    self._interrupted(True, name)
                    run_scope.cancel()
                    return
                interrupted = True
                self.stop("interrupted", f"interrupted ({name})")
                also()
                self._interrupted(False, name)

    # -------------------------------------------------------------- one row

    async def _deliver(self, row: Outgoing, line: str | None) -> None:
        try:
            await self._attempts(row, line)
        finally:
            if self.settings.scheduler is not None:
                self.settings.scheduler.finished(line)
            self.in_flight.release()
            self.progress.update(self.stats)

    async def _attempts(self, row: Outgoing, line: str | None) -> None:
        payload = self.journal.replay_payload(row.key)  # an earlier attempt may have been delivered: repeat it exactly
        if payload is None:
            payload = self._payload_for(row.recipient)
            if line is not None:
                payload = {**payload, "phone_line_id": line}  # the row's own line, or one a resend must keep
        number = 0
        while True:
            number += 1
            self.journal.mark_sending(row.key, line, payload)
            self.stats.requests += 1
            outcome = await self.client.send(payload)
            if outcome.delivered:
                self._delivered(row, line, outcome)
                return
            decision = decide(outcome, self._attempt(row, number, outcome), self._rules, self.rng)
            delay = self._execute(decision, row, line, outcome)
            if delay is None or self.stopping:
                return
            if isinstance(decision, CapacityWait):
                number -= 1  # a capacity wait is not the row's fault
            await self._retry_after(delay)
            if self.stopping:
                return

    def _attempt(self, row: Outgoing, number: int, outcome: Outcome) -> Attempt:
        planned = self.settings.scheduler is not None and self.settings.scheduler.plans_capacity
        setup_stop = self._setup.observe(outcome, self.client.base_url)
        return Attempt(number, planned, row.effect, row.phone_line_id, row.attachments, setup_stop)

    def _delivered(self, row: Outgoing, line: str | None, outcome: Outcome) -> None:
        scheduler = self.settings.scheduler
        if scheduler is not None:
            now, first_touch = self.clock.wall(), outcome.lead_created is not False
            if line is None:
                scheduler.answered_pooled(outcome.phone_line_id, now, first_touch=first_touch)
                self._unlisted_line(scheduler, outcome.phone_line_id)
            else:
                scheduler.answered(line, now, first_touch=first_touch)
        self.journal.mark_delivered(row.key, outcome)
        self.stats.sent += outcome.kind == "sent"
        self.stats.duplicate += outcome.kind == "duplicate"
        self._setup.success()
        self._finished(failed=False)

    def _unlisted_line(self, scheduler: Scheduler, line: str | None) -> None:
        """Chert sent a first touch on a line the plan does not know: say so once per line, since
        those sends are counted for the project only (the listed lines' capacity is then guessed)."""
        planner = scheduler.planner
        if planner is None or line is None or line in planner.lines or line in self._unlisted:
            return
        self._unlisted.add(line)
        self.notice(
            f"warning: Chert sent on line {line}, which is not in [capacity] lines "
            f"({', '.join(planner.lines)}): list every active line, or leave [capacity] lines out to discover them"
        )

    def _execute(self, decision: Decision, row: Outgoing, line: str | None, outcome: Outcome) -> float | None:
        """Journal the answer and carry out the decision; the delay before retrying, or None when the row is done."""
        if isinstance(decision, Fail):
            state = self.journal.mark_failed(
                row.key, outcome.code, decision.message, outcome_unknown=decision.maybe_delivered
            )
            if state == "unknown":  # never 'failed': the next run resends the first request, same key
                self.stats.unknown += 1
            else:
                self.stats.failed += 1
            self._finished(failed=True)
            return None
        maybe_delivered = not isinstance(decision, CapacityWait) and decision.maybe_delivered
        state = "sending" if maybe_delivered else "pending"  # it may have been delivered: keep 'sending'
        self.journal.note_error(row.key, outcome.code, outcome.message, state=state)
        if isinstance(decision, Stop):
            self.stop("campaign", decision.reason)
            return None
        if isinstance(decision, CapacityWait):
            return self._capacity_wait(decision, row, line)
        if decision.pause_all:
            self.bucket.pause(decision.after_s)
        return decision.after_s

    def _capacity_wait(self, decision: CapacityWait, row: Outgoing, line: str | None) -> float | None:
        """4002, never a row failure. A planned send's line waits for ``retry_after`` (a line we do
        not plan for is blocked in the scheduler) and the row goes back to the scheduler; without
        planning this row waits and retries. A wait past ``capacity_wait_s`` ends the run (exit 0)."""
        now = self.clock.wall()
        self.stats.capacity_waits += 1
        if decision.hand_back and self.settings.scheduler is not None:
            self.settings.scheduler.refused(line, now, now + decision.after_s)
        if decision.stop_reason is not None:
            self.stop("capacity", decision.stop_reason, next_in=decision.after_s)
            self._result.next_possible_at = now + decision.after_s
            return None
        if decision.hand_back:
            self._rows.hand_back(row, now + decision.after_s)
            return None
        self._announce(f"row {row.key[:12]}… got 4002 (sender lines saturated)", now + decision.after_s)
        return decision.after_s

    async def _retry_after(self, delay: float) -> None:
        self.stats.retries += 1
        self.stats.retrying_now += 1
        self.progress.update(self.stats)
        try:
            await self._interruptible(partial(self.clock.sleep, delay))
            await self._interruptible(self.bucket.acquire)
        finally:
            self.stats.retrying_now -= 1

    def _finished(self, *, failed: bool) -> None:
        """A row is done: the failure breaker counts it."""
        reason = self._failures.record(failed=failed)
        if reason is not None:
            self.stop("campaign", reason)
