"""Chert's send capacity, as rules and a planner — pure, driven by the times it is given.

Chert's published capacity ("Chert Send Capacity"): on each sender line at least 10 minutes
between first-touch sends and at most 30 first-touch sends a day; a per-project daily cap;
and a sending window in the project's time zone. The same rules drive the sandbox's
capacity mode and chertcast's planning, so chertcast *knows* its capacity instead of probing
for it with requests that come back 4002.

Recipient quiet hours are separate: never deliver outside ``[start, end)`` in the
recipient's local time. A number whose region spans several zones must be inside the window
in *every* one of them (the most restrictive reading).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_timezones

DAY = 86_400.0


@dataclass(frozen=True)
class CapacityRules:
    line_gap_s: float = 600.0
    line_daily_cap: int = 30
    project_daily_cap: int | None = None
    window_start: dt.time | None = None  # sending window, project time zone
    window_end: dt.time | None = None
    timezone: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def parse_clock(text: str) -> dt.time:
    """'08:00' → time(8, 0); '24:00' means the end of the day."""
    hours, _, minutes = text.partition(":")
    if hours == "24" and minutes in ("", "00"):
        return dt.time.max
    return dt.time(int(hours), int(minutes or 0))


def _in_window(local: dt.datetime, start: dt.time | None, end: dt.time | None) -> bool:
    if start is None or end is None:
        return True
    now = local.time()
    if start <= end:
        return start <= now < end
    return now >= start or now < end  # a window across midnight


def _next_window_start(ts: float, zone: ZoneInfo, start: dt.time) -> float:
    local = dt.datetime.fromtimestamp(ts, zone)
    candidate = dt.datetime.combine(local.date(), start, zone)
    if candidate.timestamp() <= ts:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), start, zone)
    return candidate.timestamp()


@dataclass
class _Line:
    last_first_touch: float = float("-inf")
    blocked_until: float = float("-inf")
    per_day: dict[dt.date, int] = field(default_factory=lambda: defaultdict(int))


class LinePlanner:
    """Which line may take the next first-touch send, and when."""

    def __init__(self, rules: CapacityRules, lines: Sequence[str], history: Iterable[tuple[str, float]] = ()) -> None:
        if not lines:
            raise ValueError("at least one sender line is needed")
        self.rules = rules
        self.lines = {line: _Line() for line in lines}
        self.project_per_day: dict[dt.date, int] = defaultdict(int)
        for line, at in sorted(history, key=lambda item: item[1]):
            self.record(line, at)

    def day(self, ts: float) -> dt.date:
        return dt.datetime.fromtimestamp(ts, self.rules.zone).date()

    def _next_day_start(self, ts: float) -> float:
        zone = self.rules.zone
        tomorrow = self.day(ts) + dt.timedelta(days=1)
        midnight = dt.datetime.combine(tomorrow, dt.time(0, 0), zone).timestamp()
        return self._open(midnight)

    def _open(self, ts: float) -> float:
        """The first moment >= ts inside the sending window."""
        rules = self.rules
        local = dt.datetime.fromtimestamp(ts, rules.zone)
        if _in_window(local, rules.window_start, rules.window_end):
            return ts
        assert rules.window_start is not None
        return _next_window_start(ts, rules.zone, rules.window_start)

    def earliest(self, line: str, ts: float) -> float:
        state = self.lines[line]
        at = max(ts, state.last_first_touch + self.rules.line_gap_s, state.blocked_until)
        for _ in range(400):  # each pass moves to a later day or is final
            at = self._open(at)
            day = self.day(at)
            project_full = self.rules.project_daily_cap is not None and (
                self.project_per_day[day] >= self.rules.project_daily_cap
            )
            if state.per_day[day] >= self.rules.line_daily_cap or project_full:
                at = self._next_day_start(at)
                continue
            return at
        raise RuntimeError("no capacity within 400 days; check the capacity settings")

    def next_slot(self, ts: float) -> tuple[str, float]:
        """The line and time of the earliest possible first-touch send at or after ``ts``."""
        return min(((line, self.earliest(line, ts)) for line in self.lines), key=lambda item: item[1])

    def record(self, line: str, at: float) -> None:
        state = self.lines.get(line)
        if state is None:  # a line that is no longer configured still counted for the project
            self.project_per_day[self.day(at)] += 1
            return
        state.last_first_touch = max(state.last_first_touch, at)
        state.per_day[self.day(at)] += 1
        self.project_per_day[self.day(at)] += 1

    def release(self, line: str, at: float) -> None:
        """Give back a slot recorded for a send that turned out not to be a first touch."""
        state = self.lines.get(line)
        day = self.day(at)
        if state is not None and state.per_day[day] > 0:
            state.per_day[day] -= 1
            self.project_per_day[day] = max(0, self.project_per_day[day] - 1)

    def block(self, line: str, until: float) -> None:
        if line in self.lines:
            self.lines[line].blocked_until = max(self.lines[line].blocked_until, until)

    def remaining_today(self, ts: float) -> dict[str, int]:
        day = self.day(ts)
        left = {line: max(0, self.rules.line_daily_cap - s.per_day[day]) for line, s in self.lines.items()}
        if self.rules.project_daily_cap is not None:
            project_left = max(0, self.rules.project_daily_cap - self.project_per_day[day])
            while sum(left.values()) > project_left:
                busiest = max(left, key=lambda line: left[line])
                left[busiest] -= 1
        return left

    def sent_today(self, ts: float) -> dict[str, int]:
        day = self.day(ts)
        return {line: state.per_day[day] for line, state in self.lines.items()}

    def calendar(self, count: int, start: float) -> list[tuple[dt.date, int]]:
        """Simulate ``count`` first-touch sends from ``start``: sends per day (history kept)."""
        shadow = LinePlanner(self.rules, list(self.lines))
        for line, state in self.lines.items():
            shadow.lines[line] = _Line(state.last_first_touch, state.blocked_until, defaultdict(int, state.per_day))
        shadow.project_per_day = defaultdict(int, self.project_per_day)
        per_day: dict[dt.date, int] = defaultdict(int)
        at = start
        for _ in range(count):
            line, at = shadow.next_slot(at)
            shadow.record(line, at)
            per_day[shadow.day(at)] += 1
        return sorted(per_day.items())


# ------------------------------------------------------------------ quiet hours


@dataclass(frozen=True)
class QuietHours:
    start: dt.time = dt.time(8, 0)
    end: dt.time = dt.time(21, 0)
    fallback_zone: str = "UTC"


@lru_cache(maxsize=65_536)
def zones_for(e164: str, override: str | None = None, fallback: str = "UTC") -> tuple[ZoneInfo, ...]:
    """The recipient's time zones: the row's own column, else the number's, else the fallback."""
    if override:
        return (ZoneInfo(override),)
    try:
        names = phone_timezones.time_zones_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        names = ()
    known = [name for name in names if name != "Etc/Unknown"]
    return tuple(ZoneInfo(name) for name in known) or (ZoneInfo(fallback),)


def quiet_ok(zones: Sequence[ZoneInfo], ts: float, hours: QuietHours) -> bool:
    return all(_in_window(dt.datetime.fromtimestamp(ts, zone), hours.start, hours.end) for zone in zones)


def next_quiet_ok(zones: Sequence[ZoneInfo], ts: float, hours: QuietHours) -> float:
    """The first moment >= ts at which every zone is inside the delivery window."""
    if quiet_ok(zones, ts, hours):
        return ts
    candidates: set[float] = set()
    for zone in zones:
        first = _next_window_start(ts, zone, hours.start)
        candidates |= {first, _next_window_start(first, zone, hours.start)}
    for candidate in sorted(candidates):
        if quiet_ok(zones, candidate, hours):
            return candidate
    raise ValueError("the quiet hours leave no common delivery time for this recipient's time zones")


@dataclass(frozen=True)
class Calendar:
    lines: int
    per_day: list[tuple[dt.date, int]]

    @property
    def sending_days(self) -> int:
        return len(self.per_day)

    @property
    def finish(self) -> dt.date | None:
        return self.per_day[-1][0] if self.per_day else None


SIMULATED_SENDS = 20_000


def estimate_calendar(rules: CapacityRules, lines: Sequence[str], count: int, start: float) -> Calendar:
    """Sending days for ``count`` first-touch sends from ``start`` with fresh capacity.

    Up to 20,000 sends are simulated slot by slot; beyond that, whole days at full capacity
    are added after the simulated part.
    """
    planner = LinePlanner(rules, lines)
    simulated = planner.calendar(min(count, SIMULATED_SENDS), start)
    rest = count - min(count, SIMULATED_SENDS)
    if rest and simulated:
        per_day = len(lines) * rules.line_daily_cap
        if rules.project_daily_cap is not None:
            per_day = min(per_day, rules.project_daily_cap)
        day = simulated[-1][0]
        while rest > 0:
            day += dt.timedelta(days=1)
            simulated.append((day, min(per_day, rest)))
            rest -= per_day
    return Calendar(len(lines), simulated)


def last_slot(rules: CapacityRules, lines: Sequence[str], count: int, start: float) -> float | None:
    """When the last of ``count`` first-touch sends from ``start`` can go, with fresh capacity;
    None when that is more than ``SIMULATED_SENDS`` sends away (use the calendar's days)."""
    if count <= 0:
        return start
    if count > SIMULATED_SENDS:
        return None
    planner = LinePlanner(rules, lines)
    at = start
    for _ in range(count):
        line, at = planner.next_slot(at)
        planner.record(line, at)
    return at
