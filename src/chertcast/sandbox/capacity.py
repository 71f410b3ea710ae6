"""The sandbox's own model of Chert's first-touch capacity (SPEC §4), kept apart from chertcast.

Chert's published capacity: on each sender line at least 10 minutes between first-touch sends
and at most 30 first-touch sends a day; optionally a per-project daily cap and a sending window,
both in the project's time zone. This model is written independently of chertcast's planner
(``chertcast/capacity.py``) and shares no code with it, on purpose: the capacity tests run the
product against the sandbox, and a mistake shared by both would go unseen.

It works as a predicate, not a plan: ``allows(line, t)`` says whether a line may take a first
touch at ``t``; the earliest such moment is found among the only instants where "no" can turn
into "yes" (now, the end of the line's gap, a local midnight, a window opening).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

LOOKAHEAD_DAYS = 9  # a line is always free again within a day or two; a window opens daily


@dataclass(frozen=True)
class CapacityLimits:
    """Chert's capacity as the sandbox enforces it (defaults: SPEC §4's numbers)."""

    line_gap_s: float = 600.0
    line_daily_cap: int = 30
    project_daily_cap: int | None = None
    window_start: dt.time | None = None  # the sending window, project time zone: [start, end)
    window_end: dt.time | None = None  # dt.time.max means 24:00
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not (self.line_gap_s >= 0 and math.isfinite(self.line_gap_s)):
            raise ValueError(f"line_gap_s must be a number of seconds >= 0, not {self.line_gap_s!r}")
        if self.line_daily_cap < 1:
            raise ValueError(f"line_daily_cap must be at least 1, not {self.line_daily_cap}")
        if self.project_daily_cap is not None and self.project_daily_cap < 1:
            raise ValueError(
                f"project_daily_cap must be at least 1 (None: no project cap), not {self.project_daily_cap}"
            )
        if (self.window_start is None) != (self.window_end is None) or (
            self.window_start is not None and self.window_start == self.window_end
        ):
            raise ValueError("a sending window needs a start and a different end")
        ZoneInfo(self.timezone)  # an unknown zone fails here, not at the first send


class LineCapacity:
    """First touches so far, per line and per project day; when a line may take the next one."""

    def __init__(self, limits: CapacityLimits, lines: Sequence[str]) -> None:
        self.limits = limits
        self.lines = tuple(lines)
        self._zone = ZoneInfo(limits.timezone)
        self._last: dict[str, float] = {}
        self._line_day: Counter[tuple[str, dt.date]] = Counter()
        self._project_day: Counter[dt.date] = Counter()

    def record(self, line: str, at: float) -> None:
        self._last[line] = max(at, self._last.get(line, at))
        day = self._day(at)
        self._line_day[(line, day)] += 1
        self._project_day[day] += 1

    def allows(self, line: str, at: float) -> bool:
        limits, day = self.limits, self._day(at)
        return (
            at >= self._last.get(line, -math.inf) + limits.line_gap_s
            and self._in_window(at)
            and self._line_day[(line, day)] < limits.line_daily_cap
            and (limits.project_daily_cap is None or self._project_day[day] < limits.project_daily_cap)
        )

    def free_at(self, line: str, now: float) -> float:
        """The earliest moment >= now at which ``line`` may take a first touch."""
        candidates = {now, self._last.get(line, -math.inf) + self.limits.line_gap_s, *self._turning_points(now)}
        return min((t for t in candidates if t >= now and self.allows(line, t)), default=math.inf)

    def soonest(self, now: float) -> tuple[str, float]:
        """The line free soonest (ties: the configured order) and when."""
        return min(((line, self.free_at(line, now)) for line in self.lines), key=lambda item: item[1])

    def _turning_points(self, now: float) -> list[float]:
        """Local midnights and window openings in the days ahead: where a 'no' can become 'yes'."""
        today = self._day(now)
        times = [dt.time(0, 0)] + ([self.limits.window_start] if self.limits.window_start is not None else [])
        return [
            dt.datetime.combine(today + dt.timedelta(days=offset), clock, self._zone).timestamp()
            for offset in range(LOOKAHEAD_DAYS)
            for clock in times
        ]

    def _day(self, at: float) -> dt.date:
        return dt.datetime.fromtimestamp(at, self._zone).date()

    def _in_window(self, at: float) -> bool:
        start, end = self.limits.window_start, self.limits.window_end
        if start is None or end is None:
            return True
        local = dt.datetime.fromtimestamp(at, self._zone).time()
        if start < end:
            return start <= local < end
        return local >= start or local < end  # a window across midnight
