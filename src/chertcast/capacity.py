"""Chert's send capacity, as rules and a planner — pure, driven by the times it is given.

Chert's published capacity ("Chert Send Capacity"): on each sender line at least 10 minutes
between first-touch sends and at most 30 first-touch sends a day; a per-project daily cap;
and a sending window in the project's time zone. chertcast plans with these rules (the
sandbox enforces its own, independently written model, ``sandbox/capacity.py``), so chertcast
*knows* its capacity instead of probing for it with requests that come back 4002.

Recipient quiet hours are separate: never deliver outside ``[start, end)`` in the
recipient's local time. A number whose region spans several zones must be inside the window
in *every* zone where its people live (``zones_for`` says which: the number's own country's
zones on its main landmass, or the row's own time-zone column).

Both windows are *allowed* periods, ``start < end`` on one local day: the sending window is
when the project may send (project time zone), quiet hours are when a recipient may receive
(their local time). A time is in a window only if the instant, converted to local time with
zoneinfo, is inside it: on a spring-forward day a 02:00-03:00 window has no instant at all.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from zoneinfo import TZPATH, ZoneInfo

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


def _starts(zone: ZoneInfo, start: dt.time, day: dt.date) -> list[float]:
    """The instants local ``start`` on ``day`` names (two on a fall-back day, a shifted one in a gap)."""
    return sorted({dt.datetime.combine(day, start, zone).replace(fold=fold).timestamp() for fold in (0, 1)})


def _next_window_start(ts: float, zone: ZoneInfo, start: dt.time, end: dt.time | None = None) -> float:
    """The first instant > ts that opens the window and is inside it (re-checked after the
    local-to-UTC conversion: a start in a spring-forward gap is skipped, not moved past the end)."""
    day = dt.datetime.fromtimestamp(ts, zone).date()
    for offset in range(0, 9):
        for candidate in _starts(zone, start, day + dt.timedelta(days=offset)):
            if candidate > ts and _in_window(dt.datetime.fromtimestamp(candidate, zone), start, end):
                return candidate
    raise ValueError(f"the window {start}-{end} never opens in {zone.key}")


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
        return _next_window_start(ts, rules.zone, rules.window_start, rules.window_end)

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

    def calendar(
        self,
        count: int,
        start: float,
        groups: Mapping[tuple[ZoneInfo, ...], int] | None = None,
        hours: QuietHours | None = None,
    ) -> list[tuple[dt.date, int]]:
        """Simulate ``count`` first-touch sends from ``start``: sends per day (history kept)."""
        return self.simulate(count, start, groups, hours)[0]

    def simulate(
        self,
        count: int,
        start: float,
        groups: Mapping[tuple[ZoneInfo, ...], int] | None = None,
        hours: QuietHours | None = None,
    ) -> tuple[list[tuple[dt.date, int]], dict[tuple[ZoneInfo, ...], int], float | None]:
        """Sends per day, the rows per zone set never placed, and when the last send goes.

        With ``groups`` (rows per set of recipient zones) and ``hours``, each slot goes to the
        first group whose quiet hours allow it, as the engine does; when none does, time moves
        on to the moment the first one does. A group whose hours stop meeting the window before
        its turn (a daylight-saving change) is left over: those rows can never be sent."""
        shadow = LinePlanner(self.rules, list(self.lines))
        for line, state in self.lines.items():
            shadow.lines[line] = _Line(state.last_first_touch, state.blocked_until, defaultdict(int, state.per_day))
        shadow.project_per_day = defaultdict(int, self.project_per_day)
        per_day: dict[dt.date, int] = defaultdict(int)
        left = {zones: n for zones, n in (groups or {}).items() if n > 0} if hours is not None else {}
        leftover: dict[tuple[ZoneInfo, ...], int] = {}
        at = start
        last: float | None = None
        done = 0
        while done < count:
            line, at = shadow.next_slot(at)
            if hours is not None:
                if not left:
                    break
                zones = next((z for z in left if quiet_ok(z, at, hours)), None)
                if zones is None:
                    wakes = {z: next_allowed(at, z, hours, self.rules) for z in left}
                    for z, wake in wakes.items():
                        if wake is None:
                            leftover[z] = left.pop(z)
                    if left:
                        at = min(wake for z, wake in wakes.items() if wake is not None and z in left)
                    continue
                left[zones] -= 1
                if not left[zones]:
                    del left[zones]
            shadow.record(line, at)
            per_day[shadow.day(at)] += 1
            last = at
            done += 1
        return sorted(per_day.items()), leftover, last


# ------------------------------------------------------------------ quiet hours


@dataclass(frozen=True)
class QuietHours:
    start: dt.time = dt.time(8, 0)
    end: dt.time = dt.time(21, 0)
    fallback_zone: str = "UTC"


REMOTE_PREFIXES = ("Antarctica/", "Pacific/", "Indian/", "Atlantic/", "Arctic/")


@lru_cache(maxsize=1)
def _country_zones() -> dict[str, frozenset[str]]:
    """ISO country code -> its IANA zones, from the tz database's zone.tab (empty if absent)."""
    table: dict[str, set[str]] = defaultdict(set)
    for folder in TZPATH:
        path = Path(folder) / "zone.tab"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                fields = line.split("\t")
                if len(fields) >= 3 and not line.startswith("#"):
                    table[fields[0]].add(fields[2])
            break
    return {code: frozenset(zones) for code, zones in table.items()}


def main_zones(names: Sequence[str], region: str | None) -> list[str]:
    """Where a number's people live, out of every zone phonenumbers gives its prefix.

    1. Only the number's own country's zones (zone.tab): +1 800 lists 42 zones across the
       NANP (Guam to Bermuda); a US number keeps the US ones. +61 4 drops Cocos and Christmas
       Island (own ISO codes).
    2. Only the main landmass: zones under Antarctica/, Pacific/, Indian/, Atlantic/, Arctic/
       are dropped when others remain (a US number drops Honolulu, keeps Anchorage..New York).
    Each step is skipped when it would leave nothing.
    """
    keep = list(names)
    own = _country_zones().get(region or "")
    if own and len(keep) > 1:
        keep = [name for name in keep if name in own] or keep
    if len(keep) > 1:
        keep = [name for name in keep if not name.startswith(REMOTE_PREFIXES)] or keep
    return keep


@lru_cache(maxsize=65_536)
def zones_for(e164: str, override: str | None = None, fallback: str = "UTC") -> tuple[ZoneInfo, ...]:
    """The recipient's time zones: the row's own column, else the number's (``main_zones``),
    else the fallback."""
    if override:
        return (ZoneInfo(override),)
    try:
        number = phonenumbers.parse(e164, None)
        names = phone_timezones.time_zones_for_number(number)
        region = phonenumbers.region_code_for_number(number)
    except phonenumbers.NumberParseException:
        names, region = (), None
    known = main_zones([name for name in names if name != "Etc/Unknown"], region)
    return tuple(ZoneInfo(name) for name in known) or (ZoneInfo(fallback),)


def recipient_zones(e164: str, override: str | None, hours: QuietHours | None) -> tuple[ZoneInfo, ...]:
    """The zones a recipient's quiet hours are kept in — the one rule for send, follow-ups, check
    and status: the row's own time zone, else the number's (``zones_for``), else the project's
    fallback. No zones (``()``) without quiet hours: the sending window alone is in the project's zone."""
    return zones_for(e164, override, hours.fallback_zone) if hours is not None else ()


def quiet_ok(zones: Sequence[ZoneInfo], ts: float, hours: QuietHours) -> bool:
    return all(_in_window(dt.datetime.fromtimestamp(ts, zone), hours.start, hours.end) for zone in zones)


SEARCH_DAYS = 8  # a combination of windows that never meets within 8 days never meets this season


def allowed(ts: float, zones: Sequence[ZoneInfo], hours: QuietHours | None, rules: CapacityRules | None) -> bool:
    """Inside quiet hours in every zone and inside the project's sending window."""
    if hours is not None and not quiet_ok(zones, ts, hours):
        return False
    if rules is not None and rules.window_start is not None:
        return _in_window(dt.datetime.fromtimestamp(ts, rules.zone), rules.window_start, rules.window_end)
    return True


def next_allowed(
    ts: float, zones: Sequence[ZoneInfo], hours: QuietHours | None, rules: CapacityRules | None = None
) -> float | None:
    """The first instant >= ts inside every window (quiet hours in each zone, the sending
    window), or None when they never meet within ``SEARCH_DAYS``: such a row can never be sent
    under these settings. A common period always begins where one of the windows begins, so
    the candidates are ``ts`` and every window start, each re-checked at its UTC instant."""
    if allowed(ts, zones, hours, rules):
        return ts
    opens: list[tuple[ZoneInfo, dt.time]] = []
    if hours is not None:
        opens += [(zone, hours.start) for zone in zones]
    if rules is not None and rules.window_start is not None:
        opens.append((rules.zone, rules.window_start))
    candidates: set[float] = set()
    for zone, start in opens:
        first = dt.datetime.fromtimestamp(ts, zone).date() - dt.timedelta(days=1)
        for offset in range(SEARCH_DAYS + 2):
            candidates.update(c for c in _starts(zone, start, first + dt.timedelta(days=offset)) if c > ts)
    horizon = ts + SEARCH_DAYS * DAY
    for candidate in sorted(candidates):
        if candidate > horizon:
            break
        if allowed(candidate, zones, hours, rules):
            return candidate
    return None


def next_quiet_ok(zones: Sequence[ZoneInfo], ts: float, hours: QuietHours) -> float | None:
    """The first moment >= ts at which every zone is inside the delivery window; None: never."""
    return next_allowed(ts, zones, hours)


NEVER_SENDABLE = "never sendable: "  # how a row's note begins when quiet hours and the window never meet


def never_reason(zones: Sequence[ZoneInfo], hours: QuietHours | None, rules: CapacityRules | None) -> str:
    names = ", ".join(zone.key for zone in zones)
    parts = []
    if hours is not None:
        parts.append(f"quiet hours {hours.start:%H:%M}-{_clock_text(hours.end)} in every one of its zones ({names})")
    if rules is not None and rules.window_start is not None:
        parts.append(f"the sending window {rules.window_start:%H:%M}-{_clock_text(rules.window_end)} {rules.timezone}")
    return NEVER_SENDABLE + " and ".join(parts) + " never overlap (set the row's time-zone column to override)"


def season_reason(zones: Sequence[ZoneInfo], hours: QuietHours, rules: CapacityRules) -> str:
    return never_reason(zones, hours, rules).replace(
        " never overlap", " stop overlapping (a daylight-saving change) before capacity reaches this row"
    )


def _clock_text(value: dt.time | None) -> str:
    return "24:00" if value == dt.time.max else f"{value:%H:%M}" if value else "-"


@dataclass(frozen=True)
class Unsendable:
    row: int
    phone: str
    reason: str


def unsendable(
    recipients: Iterable[tuple[int, str, str | None]],
    hours: QuietHours | None,
    rules: CapacityRules | None,
    now: float,
) -> list[Unsendable]:
    """Rows (row, phone, zone override) that can never be sent under the windows, with why."""
    if hours is None and (rules is None or rules.window_start is None):
        return []
    verdicts: dict[tuple[ZoneInfo, ...], bool] = {}
    found = []
    for row, phone, override in recipients:
        zones = recipient_zones(phone, override, hours)
        if zones not in verdicts:
            verdicts[zones] = next_allowed(now, zones, hours, rules) is not None
        if not verdicts[zones]:
            found.append(Unsendable(row, phone, never_reason(zones, hours, rules)))
    return found


@dataclass(frozen=True)
class Calendar:
    lines: int
    per_day: list[tuple[dt.date, int]]
    unplaced: dict[tuple[ZoneInfo, ...], int] = field(default_factory=dict)  # rows per zone set: never sent
    last_at: float | None = None  # when the last send goes; None: beyond the simulated sends (days only)

    @property
    def sending_days(self) -> int:
        return len(self.per_day)

    @property
    def finish(self) -> dt.date | None:
        return self.per_day[-1][0] if self.per_day else None


SIMULATED_SENDS = 20_000


def estimate_calendar(
    rules: CapacityRules,
    lines: Sequence[str],
    count: int,
    start: float,
    history: Iterable[tuple[str, float]] = (),
    groups: Mapping[tuple[ZoneInfo, ...], int] | None = None,
    hours: QuietHours | None = None,
) -> Calendar:
    """Sending days for ``count`` first-touch sends from ``start`` (today's ``history`` counted;
    quiet hours too, given ``groups`` and ``hours``, see ``LinePlanner.calendar``).

    Up to 20,000 sends are simulated slot by slot; beyond that, whole days are added at the
    busiest simulated day's count (which already reflects the window, gap and caps).
    """
    planner = LinePlanner(rules, sorted(set(lines)), history)
    simulated, leftover, last_at = planner.simulate(min(count, SIMULATED_SENDS), start, groups, hours)
    rest = count - min(count, SIMULATED_SENDS)
    if rest and simulated:
        per_day = max(n for _, n in simulated)
        day, last = simulated[-1]
        top_up = min(rest, per_day - last)  # the last simulated day may have room left
        simulated[-1] = (day, last + top_up)
        rest -= top_up
        while rest > 0:
            day += dt.timedelta(days=1)
            simulated.append((day, min(per_day, rest)))
            rest -= per_day
    return Calendar(len(set(lines)), simulated, leftover, None if rest else last_at)
