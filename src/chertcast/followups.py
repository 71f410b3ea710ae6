"""Follow-up steps: which step is due for whom (pure), their journal table, and their sending.

A campaign's ``[[follow_up]]`` tables are steps 2, 3, … after the first touch (step 1, which
the engine sends exactly as before). For one recipient, step *n* is **due** when

- steps 1 … n-1 went out and step n-1 was *delivered* (Chert's ``delivered_at``, fetched by
  ``sync``'s status path for step 1 and by ``poll_statuses`` here for later steps);
- the step's ``after`` has passed since that delivery; and
- nothing in its ``stop_on`` happened: no reply (in this campaign: every reply lands on the
  recipient's one Chert conversation) and no opt-out (in this campaign, or on the shared
  opt-out list — the plan already suppresses those numbers, so they are not even candidates).

``decide`` is that rule as a pure function of ``Facts``; ``FollowUps`` is the I/O around it:
right before sending any follow-up it fetches replies through ``sync``'s own code path
(``Syncer.sync_replies``); when that fails, follow-ups wait (first touches go on).

Exactly once per step: each step has its own idempotency key (``step_key``: step 1's key is the
first touch's, unchanged), and its row in ``follow_ups`` is written (state ``sending``, with the
exact payload) before the request leaves. A run killed mid-request finds the row ``sending``
and resends that very payload under the same key, which Chert answers with the original send.

Follow-ups are not first touches: Chert's line capacity limits only first touches, so they never
go through the first-touch scheduler and never use its slots. Each goes to the recipient's
pinned line (the line the first touch went out on, from the journal), at the campaign's rate,
within the sending window and the recipient's quiet hours.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio

from chertcast import optout
from chertcast.campaign import Campaign, FollowUpStep
from chertcast.capacity import CapacityRules, QuietHours, next_allowed, quiet_ok, recipient_zones
from chertcast.client import ChertClient, Outcome
from chertcast.decide import STOP_CODES
from chertcast.engine import LONG_WAIT_S
from chertcast.journal import DELIVERED, Journal
from chertcast.outlook import capacity_rules, quiet_hours
from chertcast.pacing import Clock, Cuttable, TokenBucket, remaining
from chertcast.preflight import KEY_PREFIX, Plan, Recipient
from chertcast.sync import Syncer, SyncFailed, SyncRunning, parse_time, sync_lock

FOLLOW_UP_STATES = ("sending", "sent", "duplicate", "failed")
STATUS_POLL_S = 60.0  # with --wait: how often undelivered steps are looked up again (at most)


def step_key(first_key: str, step: int) -> str:
    """Step 1: the first touch's key, unchanged. Step n ≥ 2: ``cc1_`` + 40 hex of
    sha256("chertcast/v1/step" ␟ first key ␟ n): deterministic, 44 characters like step 1's."""
    if step < 1:
        raise ValueError(f"steps are numbered from 1, got {step}")
    if step == 1:
        return first_key
    digest = hashlib.sha256(f"chertcast/v1/step\x1f{first_key}\x1f{step}".encode()).hexdigest()
    return KEY_PREFIX + digest[:40]


# ----------------------------------------------------------------- the rule (pure)


@dataclass(frozen=True, slots=True)
class Facts:
    """What is known about one recipient after the send (from the journal and ``sync``)."""

    sent: frozenset[int] = frozenset()  # steps whose send Chert accepted (sent or duplicate)
    finished: frozenset[int] = frozenset()  # steps that will not be sent (again): accepted or failed
    delivered_at: Mapping[int, float] = field(default_factory=dict)  # step → Chert's delivered_at
    undeliverable: frozenset[int] = frozenset()  # steps Chert reported `failed` after accepting them
    replied: bool = False
    opted_out: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The next step for one recipient: ``at`` is when it is due (None: not schedulable, see ``why``)."""

    step: int | None
    at: float | None
    why: str


def decide(steps: Sequence[FollowUpStep], facts: Facts) -> Decision:
    """Which follow-up is next for a recipient, and from when it is due. Pure."""
    step = next((n for n in range(2, len(steps) + 2) if n not in facts.finished), None)
    if step is None:
        return Decision(None, None, "finished")
    if 1 not in facts.sent:
        return Decision(step, None, "first touch not sent")
    stop_on = steps[step - 2].stop_on
    if facts.opted_out and "opt_out" in stop_on:
        return Decision(None, None, "opted out")
    if facts.replied and "reply" in stop_on:
        return Decision(None, None, "replied")
    previous = step - 1
    if previous in facts.undeliverable:
        return Decision(None, None, f"step {previous} was not delivered")
    delivered = facts.delivered_at.get(previous)
    if delivered is None:
        return Decision(step, None, f"waiting for step {previous} to be delivered")
    return Decision(step, delivered + steps[step - 2].delay_s, "due")


# ------------------------------------------------------------------ the journal


@dataclass(frozen=True, slots=True)
class FollowUpRow:
    key: str
    step: int
    state: str
    message_id: str | None
    delivered_at: float | None
    status: str | None
    payload: dict[str, Any]


def has_table(db: sqlite3.Connection) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'follow_ups'").fetchone()
    return found is not None


def _has_outcomes(db: sqlite3.Connection) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outcomes'").fetchone()
    return found is not None


def read_facts(db: sqlite3.Connection) -> dict[str, Facts]:
    """Every journaled recipient's facts: first touch and follow-ups, delivery, replies, opt-out."""
    sent: dict[str, set[int]] = {}
    finished: dict[str, set[int]] = {}
    delivered: dict[str, dict[int, float]] = {}
    failed_later: dict[str, set[int]] = {}
    for key, state in db.execute("SELECT key, state FROM recipients WHERE state IN ('sent', 'duplicate', 'failed')"):
        finished.setdefault(key, set()).add(1)
        if state in DELIVERED:
            sent.setdefault(key, set()).add(1)
    replied: set[str] = set()
    opted: set[str] = set()
    if _has_outcomes(db):
        for key, status, at, replies, opted_out, review in db.execute(
            "SELECT key, status, delivered_at, replies, opted_out, needs_review FROM outcomes"
        ):
            if at is not None:
                delivered.setdefault(key, {})[1] = float(at)
            if status == "failed":
                failed_later.setdefault(key, set()).add(1)
            if replies:
                replied.add(key)
            if opted_out or review:  # a reply containing an opt-out word is suppressed too (optout)
                opted.add(key)
    if has_table(db):
        for key, step, state, status, at in db.execute("SELECT key, step, state, status, delivered_at FROM follow_ups"):
            if state != "sending":
                finished.setdefault(key, set()).add(step)
            if state in DELIVERED:
                sent.setdefault(key, set()).add(step)
            if at is not None:
                delivered.setdefault(key, {})[step] = float(at)
            if status == "failed":
                failed_later.setdefault(key, set()).add(step)
    keys = set(finished) | replied | opted
    return {
        key: Facts(
            frozenset(sent.get(key, ())),
            frozenset(finished.get(key, ())),
            delivered.get(key, {}),
            frozenset(failed_later.get(key, ())),
            key in replied,
            key in opted,
        )
        for key in keys
    }


def rows(db: sqlite3.Connection) -> list[FollowUpRow]:
    if not has_table(db):
        return []
    return [
        FollowUpRow(key, step, state, message_id, at, status, json.loads(payload))
        for key, step, state, message_id, at, status, payload in db.execute(
            "SELECT key, step, state, message_id, delivered_at, status, payload FROM follow_ups ORDER BY key, step"
        )
    ]


def step_counts(db: sqlite3.Connection, steps: int) -> list[dict[str, int]]:
    """Per step (2 … steps): how many rows are in each state, and how many were delivered."""
    out = []
    for step in range(2, steps + 1):
        counts = dict.fromkeys((*FOLLOW_UP_STATES, "delivered"), 0)
        if has_table(db):
            for state, count in db.execute(
                "SELECT state, COUNT(*) FROM follow_ups WHERE step = ? GROUP BY state", (step,)
            ):
                counts[state] = count
            counts["delivered"] = db.execute(
                "SELECT COUNT(*) FROM follow_ups WHERE step = ? AND delivered_at IS NOT NULL", (step,)
            ).fetchone()[0]
        out.append({"step": step, **counts})
    return out


@dataclass(frozen=True, slots=True)
class Hold:
    at: float  # the first moment it may go
    by: str | None  # what holds it until then: "quiet hours", "the sending window"; None: nothing


def hold(at: float, zones: Sequence[ZoneInfo], quiet: QuietHours | None, rules: CapacityRules | None) -> Hold:
    """When a follow-up due at ``at`` may go (the sending window and the recipient's quiet hours,
    ``next_allowed``'s one rule; ``math.inf``: never under these settings) and what holds it until then."""
    allowed = next_allowed(at, zones, quiet, rules)
    if allowed is None or allowed == math.inf:
        return Hold(math.inf, "quiet hours and the sending window never meet")
    if allowed <= at:
        return Hold(at, None)
    by_quiet = quiet is not None and not quiet_ok(zones, at, quiet)
    return Hold(allowed, "quiet hours" if by_quiet else "the sending window")


HELD_AS = {"quiet hours": "held by quiet hours", "the sending window": "waiting for the sending window"}


def sequence_status(campaign: Campaign, db: sqlite3.Connection, now: float) -> dict[str, Any]:
    """``status``'s view of the sequence: per step, its rows by state and how many were delivered;
    per recipient whose first touch went out, where their sequence stands (finished, stopped by a
    reply or an opt-out, due now, held by quiet hours or waiting for the sending window (as
    ``send`` holds them, until ``held_until``), due later, waiting for a delivery)."""
    facts = read_facts(db)
    quiet, rules = quiet_hours(campaign), capacity_rules(campaign) if campaign.capacity.enabled else None
    where: Counter[str] = Counter()
    held_until = math.inf
    for key, known in facts.items():
        if 1 not in known.sent:
            continue
        decision = decide(campaign.follow_up, known)
        if decision.at is None:
            where[
                decision.why.split(" to be delivered")[0].replace("waiting for step", "awaiting delivery of step")
            ] += 1
        elif decision.at > now:
            where["due later"] += 1
        else:
            held = hold(now, _journal_zones(db, key, quiet), quiet, rules)
            where[HELD_AS.get(held.by or "", held.by or "due now")] += 1
            held_until = min(held_until, held.at) if held.by is not None else held_until
    out: dict[str, Any] = {"steps": step_counts(db, campaign.steps), "sequences": dict(sorted(where.items()))}
    if held_until < math.inf:
        out["held_until"] = _iso_minutes(held_until)
    return out


def _journal_zones(db: sqlite3.Connection, key: str, quiet: QuietHours | None) -> tuple[ZoneInfo, ...]:
    if quiet is None:
        return ()
    found = db.execute("SELECT phone, timezone FROM recipients WHERE key = ?", (key,)).fetchone()
    return recipient_zones(found[0], found[1], quiet) if found is not None and found[0] else ()


def _iso_minutes(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def report_columns(db: sqlite3.Connection, steps: int) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """The report's columns for steps 2 … ``steps``: state, sent at and delivered at of each."""
    headers = [f"step{n}_{name}" for n in range(2, steps + 1) for name in ("state", "sent_at", "delivered_at")]
    cells: dict[str, dict[int, tuple[str, str, str]]] = {}
    if has_table(db):
        for key, step, state, sent_at, delivered_at in db.execute(
            "SELECT key, step, state, sent_at, delivered_at FROM follow_ups"
        ):
            cells.setdefault(key, {})[step] = (state, _iso_or_blank(sent_at), _iso_or_blank(delivered_at))
    blank = ("", "", "")
    return headers, {
        key: tuple(cell for n in range(2, steps + 1) for cell in known.get(n, blank)) for key, known in cells.items()
    }


def _iso_or_blank(value: float | None) -> str:
    return datetime.fromtimestamp(value, tz=UTC).isoformat(timespec="seconds") if value else ""


def pinned_lines(db: sqlite3.Connection) -> dict[str, str]:
    """key → the line the first touch went out on (Chert's answer, else the line it was sent to)."""
    found = db.execute(
        "SELECT key, COALESCE(phone_line_id, json_extract(sent_payload, '$.phone_line_id')) FROM recipients "
        "WHERE state IN ('sent', 'duplicate')"
    )
    return {key: line for key, line in found if line}


# ------------------------------------------------------------------- sending


@dataclass
class FollowUpStats:
    sent: int = 0
    duplicate: int = 0
    failed: int = 0
    requests: int = 0
    status_requests: int = 0
    waiting_reason: str | None = None  # why follow-ups waited this run (replies could not be read)
    next_due_at: float | None = None
    # the last pass's steps that were due but held (what held them → how many), until held_until
    held: dict[str, int] = field(default_factory=dict)
    held_until: float | None = None
    by_step: dict[int, int] = field(default_factory=dict)


RefreshReplies = Callable[[], Awaitable[str | None]]  # None: replies are up to date; else why not


class FollowUps:
    """Sends the follow-ups that are due, at the campaign's rate, to each recipient's pinned line."""

    def __init__(
        self,
        campaign: Campaign,
        step_plans: Mapping[int, Plan],
        journal: Journal,
        client: ChertClient,
        clock: Clock,
        *,
        refresh: RefreshReplies,
        rules: CapacityRules | None,
        quiet: QuietHours | None,
        rate: float | None = None,
        bucket: TokenBucket | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.campaign = campaign
        self.journal = journal
        self.db = journal.connection()
        self.client = client
        self.clock = clock
        self.refresh = refresh
        self.rules = rules
        self.quiet = quiet
        # the engine's bucket when given: first touches and follow-ups share the campaign's one rate
        self.bucket = bucket or TokenBucket(rate or campaign.send.rate, campaign.send.burst, clock)
        self.stats = FollowUpStats()
        shortest = min((step.delay_s for step in campaign.follow_up), default=STATUS_POLL_S)
        self.poll_s = min(STATUS_POLL_S, max(0.5, shortest / 2))  # a rehearsal's seconds-long steps
        self.idle_s = 10 * self.poll_s  # first touches still going out, nothing awaited yet
        self.batch_s = min(STATUS_POLL_S, shortest / 100)  # steps falling due this close go in one pass
        self.notice = notice or (lambda _: None)  # RunHooks.notice: a long wait is said, as the engine says its own
        self.zone = ZoneInfo(campaign.capacity.timezone)  # the project's zone, for the times in notices
        self.halted = False
        self._waits = Cuttable()  # waits that halt() cuts short
        self._next_why = ""  # what the next pass waits for (for the notice of a long wait)
        self._wake = anyio.Event()
        self._first_touches_done = anyio.Event()
        self.bodies = {
            step: {r.key: r for r in plan.sendable if r.key is not None} for step, plan in step_plans.items()
        }
        self.candidates = {r.key for r in step_plans[1].sendable if r.key is not None} if 1 in step_plans else set()

    async def run(self, *, wait: bool) -> FollowUpStats:
        """One pass now and one once the first touches are done (cron), or with ``wait`` passes
        until every sequence has finished or stopped.

        Between passes it sleeps until the next step falls due, or ``poll_s`` while a delivery
        is awaited, or ``idle_s`` while first touches are still going out; ``halt`` wakes it."""
        if not wait:
            await self.one_pass()
            await self._first_touches_done.wait()
            if not self.halted and self.stats.waiting_reason is None:
                await self.one_pass()  # the deliveries the first touches now await: when to look again
            return self.stats
        while not self.halted:
            started = self.clock.wall()
            pending = await self.one_pass()
            if self.stats.waiting_reason is not None:  # replies unreadable for now: try again later
                pending = self.clock.wall() + self.idle_s
            done = self._first_touches_done.is_set()
            if pending is None and done:
                return self.stats
            now = self.clock.wall()
            until = now + self.idle_s if pending is None else max(now, pending)
            if done:
                self._announce(until)
            self._wake = anyio.Event()
            # woken early only while first touches go out (a clock that jumps needs someone to wake it)
            await self._until_halted(partial(self.clock.sleep_until, until, None if done else self._wake))
            if not self.halted:  # woken by a first touch going out: not more often than poll_s
                await self._until_halted(partial(self.clock.sleep_until, min(until, started + self.poll_s)))
        return self.stats

    def _announce(self, until: float) -> None:
        """A long wait is said (``RunHooks.notice``, as the engine says its own): what for and until when."""
        now = self.clock.wall()
        if until - now < LONG_WAIT_S or not self._next_why:
            return
        when = datetime.fromtimestamp(until, self.zone).strftime("%Y-%m-%d %H:%M:%S %Z")
        self.notice(f"waiting: {self._next_why}; until {when} (in {remaining(until, now):,.0f}s)")

    async def _until_halted(self, wait: Callable[[], Awaitable[object]]) -> None:
        """A wait (the next pass, a token, a backoff) that ``halt`` cuts short: Ctrl-C is not left
        waiting for the morning."""
        await self._waits.wait(wait)

    def nudge(self) -> None:
        """A first touch went out: look again soon."""
        self._wake.set()

    def first_touches_done(self) -> None:
        self._first_touches_done.set()
        self._wake.set()

    def halt(self) -> None:
        """Stop between two sends (the run was interrupted or stopped): nothing is left half-done."""
        self.halted = True
        self._wake.set()
        self._first_touches_done.set()
        self._waits.cut()

    async def one_pass(self) -> float | None:
        """Refresh replies and statuses, send what is due now. Returns when the next check is
        worth making (a step due later, or a delivery still awaited), None when nothing is left."""
        why = await self.refresh()
        self.stats.waiting_reason = why
        if why is not None:
            self._next_why = f"follow-ups: {why}"
            return None
        await self.poll_statuses()
        facts = self._with_shared_list(read_facts(self.db))
        lines = pinned_lines(self.db)
        now = self.clock.wall()
        due: list[tuple[str, int]] = []
        nexts: list[tuple[float, str]] = []  # when to look again, and what for
        held: Counter[str] = Counter()
        held_until = math.inf
        for key in sorted(self.candidates):
            decision = decide(self.campaign.follow_up, facts.get(key, Facts()))
            if decision.step is None:
                continue
            if decision.at is None:  # awaiting a delivery: look again later
                if 1 in facts.get(key, Facts()).sent:
                    nexts.append((now + STATUS_POLL_S, "deliveries"))
                continue
            # quiet hours and the window as of the moment it would go: a step that fell due in the
            # evening and is found at night (a late run, a restart) waits for the morning
            allowed = self._hold(key, max(decision.at, now))
            if allowed.at <= now:
                due.append((key, decision.step))
            elif allowed.at < math.inf:
                if decision.at <= now and allowed.by is not None:  # due now, but held
                    held[allowed.by] += 1
                    held_until = min(held_until, allowed.at)
                    nexts.append((allowed.at + self.batch_s, "held"))
                else:
                    nexts.append((allowed.at + self.batch_s, f"step {decision.step} falls due"))
        self.stats.held, self.stats.held_until = dict(held), held_until if held else None
        next_at = min(nexts, default=None)
        self.stats.next_due_at = next_at[0] if next_at else None
        self._next_why = self._waiting_for(next_at, held)
        await self._send_all(due, lines)
        if due:  # their deliveries are the next steps' start
            return min(self.stats.next_due_at or math.inf, self.clock.wall() + self.poll_s)
        return self.stats.next_due_at

    @staticmethod
    def _waiting_for(next_at: tuple[float, str] | None, held: Counter[str]) -> str:
        """What the wait for ``next_at`` is for, in words ('' for a delivery awaited: a short wait)."""
        if next_at is None or next_at[1] == "deliveries":
            return ""
        if next_at[1] == "held":
            parts = [f"{n:,} follow-up{'' if n == 1 else 's'} due, held by {by}" for by, n in sorted(held.items())]
            return "; ".join(parts)
        return next_at[1]

    def _with_shared_list(self, facts: dict[str, Facts]) -> dict[str, Facts]:
        """The shared opt-out list, read afresh each pass: a number that opted out through another
        campaign while this run was up gets no further step either."""
        path = self.campaign.opt_out_list
        if path is None or not path.exists():
            return facts
        try:
            listed = optout.numbers_in(path.read_text(encoding="utf-8-sig"), self.campaign.default_region)
        except (OSError, UnicodeDecodeError):
            return facts  # the plan read it at the start of the run; the next run reports what is wrong
        firsts = self.bodies.get(1, {})
        for key in self.candidates:
            phone = firsts[key].phone if key in firsts else None
            if phone in listed:
                facts[key] = replace(facts.get(key, Facts()), opted_out=True)
        return facts

    def _hold(self, key: str, at: float) -> Hold:
        """The first moment from ``at`` the sending window and the recipient's quiet hours allow."""
        recipient = self.bodies.get(1, {}).get(key)
        if (self.quiet is None and self.rules is None) or recipient is None or recipient.phone is None:
            return Hold(at, None)
        return hold(at, recipient_zones(recipient.phone, recipient.timezone, self.quiet), self.quiet, self.rules)

    async def _send_all(self, due: list[tuple[str, int]], lines: Mapping[str, str]) -> None:
        queue = iter(due)

        async def worker() -> None:
            for key, step in queue:
                if self.halted:
                    return
                await self.send_one(key, step, lines.get(key))

        async with anyio.create_task_group() as group:
            for _ in range(min(self.campaign.send.concurrency, max(1, len(due)))):
                group.start_soon(worker)

    def _payload(self, key: str, step: int, line: str | None) -> dict[str, Any] | None:
        stored = self.db.execute(
            "SELECT payload FROM follow_ups WHERE key = ? AND step = ? AND state = 'sending'", (key, step)
        ).fetchone()
        if stored is not None:  # an earlier attempt may have reached Chert: repeat it exactly
            loaded: dict[str, Any] = json.loads(stored[0])
            return loaded
        recipient = self.bodies.get(step, {}).get(key)
        if recipient is None or recipient.body is None:
            return None
        payload = step_recipient(recipient, step).payload()
        payload.pop("attachments", None)  # a follow-up is text: attachments belong to the first touch
        payload.pop("effect", None)
        if line:
            payload["phone_line_id"] = line
        return payload

    async def send_one(self, key: str, step: int, line: str | None) -> None:
        payload = self._payload(key, step, line)
        if payload is None:
            return
        await self._until_halted(self.bucket.acquire)
        now = self.clock.wall()
        if self.halted or self._hold(key, now).at > now:
            return  # quiet hours began while it waited for its turn: a later pass sends it when they end
        with self.journal.transaction():
            self.db.execute(
                "INSERT INTO follow_ups (key, step, step_key, state, payload, phone_line_id, created_at, updated_at) "
                "VALUES (?, ?, ?, 'sending', ?, ?, ?, ?) ON CONFLICT (key, step) DO NOTHING",
                (key, step, payload["idempotency_key"], json.dumps(payload), line, now, now),
            )
        for attempt in range(1, self.campaign.send.max_attempts + 1):
            if attempt > 1:
                await self._until_halted(self.bucket.acquire)
            if self.halted:
                return
            self.stats.requests += 1
            outcome = await self.client.send(payload)
            self._note_attempt(key, step, outcome)
            if outcome.delivered:
                self._record(key, step, outcome)
                return
            if outcome.code in STOP_CODES:  # the campaign's set-up, not this row: nothing went, stop all
                self._refused(key, step, f"follow-ups stopped: {outcome.code}: {STOP_CODES[outcome.code]}")
                return
            if outcome.retry_after is not None and outcome.code == 1007:
                self.bucket.pause(outcome.retry_after)
            if not outcome.retryable or attempt == self.campaign.send.max_attempts:
                if outcome.kind == "network" and outcome.request_sent:
                    return  # it may have been delivered: stays 'sending', resent with the same key next run
                self._fail(key, step, outcome)
                return
            backoff = min(self.campaign.send.max_backoff_s, float(outcome.retry_after or 2 ** (attempt - 1)))
            await self._until_halted(partial(self.clock.sleep, backoff))

    def _refused(self, key: str, step: int, why: str) -> None:
        """Chert refused the request outright: the row goes (the step is not failed; the next run
        sends it once the set-up is fixed) and every follow-up waits."""
        with self.journal.transaction():
            self.db.execute("DELETE FROM follow_ups WHERE key = ? AND step = ? AND state = 'sending'", (key, step))
        self.stats.waiting_reason = why
        self.halt()

    def _note_attempt(self, key: str, step: int, outcome: Outcome) -> None:
        with self.journal.transaction():
            self.db.execute(
                "UPDATE follow_ups SET attempts = attempts + 1, error_code = ?, error_message = ?, updated_at = ? "
                "WHERE key = ? AND step = ?",
                (outcome.code, None if outcome.delivered else outcome.message, self.clock.wall(), key, step),
            )

    def _record(self, key: str, step: int, outcome: Outcome) -> None:
        now = self.clock.wall()
        with self.journal.transaction():
            self.db.execute(
                "UPDATE follow_ups SET state = ?, message_id = ?, phone_line_id = COALESCE(?, phone_line_id), "
                "sent_at = ?, updated_at = ?, error_code = NULL, error_message = NULL WHERE key = ? AND step = ?",
                (outcome.kind, outcome.message_id, outcome.phone_line_id, now, now, key, step),
            )
        self.stats.sent += outcome.kind == "sent"
        self.stats.duplicate += outcome.kind == "duplicate"
        self.stats.by_step[step] = self.stats.by_step.get(step, 0) + 1

    def _fail(self, key: str, step: int, outcome: Outcome) -> None:
        with self.journal.transaction():
            self.db.execute(
                "UPDATE follow_ups SET state = 'failed', updated_at = ? WHERE key = ? AND step = ?",
                (self.clock.wall(), key, step),
            )
        self.stats.failed += 1

    async def poll_statuses(self) -> None:
        """Chert's delivered_at for follow-ups sent but not known delivered (the same lookup as sync's)."""
        waiting = self.db.execute(
            "SELECT key, step, message_id FROM follow_ups WHERE state IN ('sent', 'duplicate') "
            "AND message_id IS NOT NULL AND delivered_at IS NULL AND COALESCE(status, '') != 'failed'"
        ).fetchall()
        for key, step, message_id in waiting:
            await self._until_halted(self.bucket.acquire)
            if self.halted:
                return
            self.stats.status_requests += 1
            result = await self.client.get_message(message_id)
            if result.failure is not None or result.data is None:
                continue  # looked up again on the next pass
            self._store_status(key, step, result.data.get("message"))

    def _store_status(self, key: str, step: int, message: object) -> None:
        found = message if isinstance(message, dict) else {}
        status = found.get("status") if isinstance(found.get("status"), str) else None
        delivered = parse_time(found.get("delivered_at"), 0.0) or None
        with self.journal.transaction():
            self.db.execute(
                "UPDATE follow_ups SET status = ?, delivered_at = COALESCE(?, delivered_at), checked_at = ? "
                "WHERE key = ? AND step = ?",
                (status, delivered, self.clock.wall(), key, step),
            )


async def refresh_replies(
    campaign: Campaign, journal: Journal, client: ChertClient, clock: Clock, journal_path: Path
) -> str | None:
    """Right before follow-ups: replies since the last sync, through ``sync``'s own code path
    (the event log from the stored cursor, opt-outs projected into the shared list), then the
    delivery status of sent first touches. None when replies are current; else why follow-ups
    wait (a failed status lookup only delays deliveries' being known, so it does not stop them)."""
    try:
        with sync_lock(journal_path):
            syncer = Syncer(campaign, journal, client, clock=clock)
            syncer.project_opt_outs()
            await syncer.sync_replies()
            syncer.project_opt_outs()
            with contextlib.suppress(SyncFailed):  # replies are current; unread deliveries: the next pass
                await syncer.sync_statuses(undelivered_only=True)
            journal.set_meta("last_sync_at", str(clock.wall()))
    except SyncRunning:
        return "a `chertcast sync` of this journal is running; follow-ups go on the next run"
    except SyncFailed as exc:
        return f"follow-ups wait: replies could not be read ({exc})"
    return None


def step_recipient(recipient: Recipient, step: int) -> Recipient:
    """The step's message to this recipient, under the step's key."""
    assert recipient.key is not None
    return replace(recipient, key=step_key(recipient.key, step))


def sequence_keys(first_keys: Iterable[str], steps: int) -> dict[tuple[str, int], str]:
    return {(key, step): step_key(key, step) for key in first_keys for step in range(1, steps + 1)}
