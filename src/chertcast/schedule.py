"""Which row goes next, on which line, or why we wait: capacity planning as a pure step.

``Scheduler`` plans first touches per sender line (``LinePlanner``, when capacity planning is
on) and keeps recipients' quiet hours (always, when they are on);
``step`` looks at the rows still to launch at one moment and chooses: send this row on this
line, note a row that can never be sent, wait until a moment (and why), wait for an answer in
flight, or stop. It does no I/O, reads no clock and never waits: the engine hands it ``now`` and
how many sends are in flight, and executes the choice.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from chertcast.capacity import (
    CapacityRules,
    LinePlanner,
    QuietHours,
    never_reason,
    next_allowed,
    quiet_ok,
    recipient_zones,
)
from chertcast.outgoing import Outgoing


@dataclass
class Scheduler:
    """Capacity planning for first-touch sends: which line, when, and whose quiet hours allow it.

    Chert times a first touch when it arrives, which is somewhere between our request and its
    answer. So a line's next first touch is planned from the *answer* (the latest moment Chert
    can have timed it), and while a line's first touch is unanswered its next slot is at least
    a gap away; the answer landing wakes the engine to plan again. Latency and jitter then
    cannot bring two first touches on a line closer than the gap, on any network.
    """

    planner: LinePlanner | None  # None: capacity planning off, quiet hours only
    quiet: QuietHours | None = None
    wait: bool = False  # --wait: stay up across days instead of ending today's run
    fixed_lines: dict[str, str] = field(default_factory=dict)  # lines already used by rows in 'sending'
    unanswered: Counter[str] = field(default_factory=Counter)  # planned sends in flight, per line
    carried_over: set[str] = field(default_factory=set)  # keys left 'sending' by an earlier run: counted already
    foreign_blocked: dict[str, float] = field(default_factory=dict)  # lines we do not plan: 4002 until
    pooled: int = 0  # first touches in flight with the line left to Chert
    pool_blocked: float = float("-inf")  # a 4002 on a pooled send: every line is saturated until then
    _holds: dict[tuple[ZoneInfo, ...], tuple[float, float]] = field(default_factory=dict, repr=False)

    @property
    def plans_capacity(self) -> bool:
        return self.planner is not None

    @property
    def zone(self) -> ZoneInfo:
        """The project's time zone: its days and the times the engine shows."""
        if self.planner is not None:
            return self.planner.rules.zone
        return ZoneInfo(self.quiet.fallback_zone if self.quiet is not None else "UTC")

    def line_for(self, outgoing: Outgoing) -> str | None:
        return self.fixed_lines.get(outgoing.key) or outgoing.phone_line_id

    def slot(self, outgoing: Outgoing, now: float) -> tuple[str | None, float]:
        """The line to send on (None: Chert picks, see ``pool_slot``) and the moment it may go."""
        line = self.line_for(outgoing)
        if self.planner is None:  # no capacity planning: the row goes now, on its own line if it names one
            return line, now
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
        assert self.planner is not None  # slot() asks only when planning capacity
        times = sorted(self.earliest(line, now) for line in self.planner.lines)
        gap = self.planner.rules.line_gap_s
        at = times[self.pooled] if self.pooled < len(times) else now + gap  # an answer wakes us sooner
        cap = self.planner.rules.project_daily_cap
        if cap is not None and self.pooled and self.planner.project_per_day[self.planner.day(at)] + self.pooled >= cap:
            at = max(at, now + gap)  # the day's last slots: wait for the answers in flight
        return max(at, self.pool_blocked)

    def earliest(self, line: str, now: float) -> float:
        assert self.planner is not None  # slot() asks only when planning capacity
        at = self.planner.earliest(line, now)
        if self.unanswered[line]:  # a placeholder: the answer sets the real slot
            at = max(at, now + self.planner.rules.line_gap_s)
        return at

    def launched(self, key: str, line: str | None, now: float) -> None:
        if line is None:
            self.pooled += 1
            return
        self.unanswered[line] += 1
        if self.planner is None:
            return
        if key in self.carried_over:  # its first touch is in the history already: resent, not counted twice
            self.carried_over.discard(key)
            self.planner.block(line, now + self.planner.rules.line_gap_s)
        else:
            self.planner.record(line, now)

    def answered(self, line: str, now: float, *, first_touch: bool) -> None:
        """A planned send was delivered: a first touch starts the gap now; a follow-up gives its slot back."""
        if self.planner is None:
            return
        if first_touch:
            self.planner.block(line, now + self.planner.rules.line_gap_s)
        else:
            self.planner.release(line, now)

    def answered_pooled(self, line: str | None, now: float, *, first_touch: bool) -> None:
        """A pooled send was delivered on the line Chert's answer names; only a first touch counts for it."""
        if first_touch and line is not None and self.planner is not None:
            self.planner.record(line, now)
            self.planner.block(line, now + self.planner.rules.line_gap_s)

    def refused(self, line: str | None, now: float, until: float) -> None:
        """Chert answered 4002 for a send on ``line``: its slot is given back, the line waits
        (a pooled send: every line was saturated for it, so pooled sends wait)."""
        if self.planner is None:  # never planned (a 4002 then waits in the engine): nothing to give back
            return
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

    def held_until(self, outgoing: Outgoing, now: float) -> float | None:
        """When quiet hours hold this recipient, the first moment both they and the sending
        window allow it; ``math.inf`` when they never meet (``never``); None when not held."""
        if self.quiet is None:
            return None
        zones = recipient_zones(outgoing.phone, outgoing.timezone, self.quiet)
        known = self._holds.get(zones)  # (asked at, answer): the answer holds until it is reached
        if known is not None and known[0] <= now < known[1] and now - known[0] < 3_600:
            until: float | None = known[1]
        else:
            until = next_allowed(now, zones, self.quiet, self._rules)
            self._holds[zones] = (now, math.inf if until is None else until)
        if until is None or until == math.inf:
            return math.inf
        return None if until <= now else until

    def quiet_holds(self, outgoing: Outgoing, now: float) -> bool:
        """Whether the recipient's quiet hours (not the sending window) hold this row at ``now``."""
        if self.quiet is None:
            return False
        return not quiet_ok(recipient_zones(outgoing.phone, outgoing.timezone, self.quiet), now, self.quiet)

    def never(self, outgoing: Outgoing) -> str:
        """Why a recipient ``held_until`` calls never-sendable can never be sent."""
        zones = recipient_zones(outgoing.phone, outgoing.timezone, self.quiet)
        return never_reason(zones, self.quiet, self._rules)

    @property
    def _rules(self) -> CapacityRules | None:
        """The sending window comes with capacity planning; without it, quiet hours alone hold rows."""
        return self.planner.rules if self.planner is not None else None

    def may_wait(self, now: float, until: float) -> bool:
        """Within today's sending day we wait; past it, the run ends unless --wait."""
        zone = self.zone
        return self.wait or datetime.fromtimestamp(until, zone).date() == datetime.fromtimestamp(now, zone).date()


@dataclass
class Rows:
    """The rows of a run still to launch: in order, or held until a moment (quiet hours, a 4002)."""

    waiting: deque[Outgoing] = field(default_factory=deque)
    held: list[tuple[float, Outgoing]] = field(default_factory=list)
    capacity_held: set[str] = field(default_factory=set)  # keys held because of a 4002
    window_held: set[str] = field(default_factory=set)  # keys held by the sending window alone, not quiet hours
    never: int = 0  # rows quiet hours and the sending window never allow

    def hand_back(self, outgoing: Outgoing, until: float) -> None:
        """A 4002 on a planned send: the row waits for ``until`` and is planned again."""
        self.capacity_held.add(outgoing.key)
        self.held.append((until, outgoing))

    def release_due(self, now: float) -> None:
        self.waiting.extend(row for until, row in self.held if until <= now)
        self.held[:] = [(until, row) for until, row in self.held if until > now]

    def held_reason(self) -> str:
        by_4002 = sum(1 for _, row in self.held if row.key in self.capacity_held)
        window = sum(1 for _, row in self.held if row.key in self.window_held and row.key not in self.capacity_held)
        quiet = len(self.held) - by_4002 - window
        parts = [f"{quiet:,} {'row is' if quiet == 1 else 'rows are'} held by quiet hours"] if quiet else []
        parts += [f"{window:,} {'row waits' if window == 1 else 'rows wait'} for the sending window"] if window else []
        parts += (
            [f"{by_4002:,} {'row waits' if by_4002 == 1 else 'rows wait'} for a 4002's retry_after"] if by_4002 else []
        )
        parts += [never_text(self.never)] if self.never else []
        return "; ".join(parts) or "rows are held"


@dataclass(frozen=True, slots=True)
class Send:
    """Launch this row (the head of the queue) on ``line`` (None: Chert picks) once a slot and a token are had."""

    outgoing: Outgoing
    line: str | None


@dataclass(frozen=True, slots=True)
class Never:
    """This row can never be sent (quiet hours and the sending window never meet): note why, step again."""

    outgoing: Outgoing
    reason: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing can go before ``until`` (None: before an answer in flight lands); an answer cuts it short."""

    until: float | None
    why: str = ""


@dataclass(frozen=True, slots=True)
class Done:
    """Nothing more to launch in this run; ``stop_reason`` when rows are left (exit 0, capacity returns later)."""

    stop_reason: str | None = None
    next_possible_at: float | None = None


Choice = Send | Never | Wait | Done


def step(rows: Rows, scheduler: Scheduler, now: float, in_flight: int) -> Choice:
    """The next thing to do at ``now``, with ``in_flight`` sends unanswered.

    Rows whose quiet hours hold them move to ``rows.held``; rows whose moment has come move back.
    A ``Send`` leaves its row at the head of ``rows.waiting`` until ``launch`` confirms it.
    """
    rows.release_due(now)
    while rows.waiting:
        outgoing = rows.waiting[0]
        until = scheduler.held_until(outgoing, now)
        if until == math.inf:
            rows.waiting.popleft()
            rows.never += 1
            return Never(outgoing, scheduler.never(outgoing))
        if until is not None:
            rows.held.append((until, rows.waiting.popleft()))
            if not scheduler.quiet_holds(outgoing, now):
                rows.window_held.add(outgoing.key)
            else:
                rows.window_held.discard(outgoing.key)
            continue
        line, at = scheduler.slot(outgoing, now)
        if at <= now:
            return Send(outgoing, line)
        why = "today's first-touch capacity is used up" + (f"; {never_text(rows.never)}" if rows.never else "")
        return _wait(scheduler, now, at, why, in_flight)
    if rows.held:
        return _wait(scheduler, now, min(until for until, _ in rows.held), rows.held_reason(), in_flight)
    if in_flight:  # answers in flight may hand rows back
        return Wait(None)
    return Done(never_text(rows.never) if rows.never else None)


def _wait(scheduler: Scheduler, now: float, until: float, why: str, in_flight: int) -> Wait | Done:
    """Wait for ``until`` within today's sending day (or with --wait). Past it the run ends,
    but only once no answer is in flight: a handed-back row or a follow-up can still change the plan."""
    if scheduler.may_wait(now, until):
        return Wait(until, why)
    if in_flight:
        return Wait(None)
    return Done(why, until)


def launch(rows: Rows, scheduler: Scheduler, now: float) -> Send | None:
    """After the waits for an in-flight slot and a token: the head row goes at ``now`` if a
    slot is still open (the plan may have moved while we waited); it is then counted as launched."""
    outgoing = rows.waiting[0]
    line, at = scheduler.slot(outgoing, now)
    if at > now:
        return None
    rows.waiting.popleft()
    scheduler.launched(outgoing.key, line, now)
    return Send(outgoing, line)


def never_text(count: int) -> str:
    return (
        f"{count:,} row{'s' if count != 1 else ''} can never be sent: quiet hours and the sending window never "
        "meet for them (see `chertcast check`; the journal notes each reason)"
    )
