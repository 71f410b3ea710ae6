"""What capacity planning expects of a campaign — one source for `check`, the send header,
`status` and the report page: the same rules, lines, today's use and calendar code. (The send
header looks up the zones of a sample of a list over 5,000 rows, so there its count of rows
that can never be sent is "about"; `check` names each one.)

- ``capacity_rules``: the rules (with the planning margin) send, status and check plan with;
- ``CapacityFacts.read``: what a journal knows that planning needs — the sender lines (listed
  in ``[capacity] lines``, else the ones the last send discovered, else the ones the journal's
  first touches went out on) and the first-touch sends so far (today's use);
- ``outlook``: the calendar for the rows still to send, and the rows that can never be sent;
- ``capacity_status``: today's use per line, the next slot, and how many waiting rows quiet
  hours hold right now (``held_by_quiet_hours``, the row's own time zone first).

Reading the journal happens here (``CapacityFacts.read``, ``unfinished``); what the
commands print from it is ``chertcast.present``'s, which reads nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from chertcast.campaign import Campaign
from chertcast.capacity import (
    DAY,
    Calendar,
    CapacityRules,
    LinePlanner,
    QuietHours,
    Unsendable,
    estimate_calendar,
    quiet_ok,
    recipient_zones,
    season_reason,
    unsendable,
)
from chertcast.journal import UNFINISHED, Journal
from chertcast.preflight import Plan, Recipient

LINES_META = "capacity_lines"  # the sender lines the last send discovered (GET /phone-numbers)


def capacity_rules(campaign: Campaign) -> CapacityRules:
    """The rules send, status and check all plan with (one place, one gap).

    The engine already counts a line's gap from the *answer* to its last first touch (the
    latest moment Chert can have timed it); the margin (campaign.gap_margin) covers Chert
    timing a send a little after answering it (a queue, a clock's resolution)."""
    return campaign.capacity.planning_rules()


def quiet_hours(campaign: Campaign) -> QuietHours | None:
    return campaign.quiet_hours.hours(campaign.capacity.timezone) if campaign.quiet_hours.enabled else None


def history_since(rules: CapacityRules, now: float) -> float:
    """The earliest first touch that can still bear on a plan from ``now``: the planner counts
    today's sends (the project's day) and waits a line's gap after its last one; a day more is
    kept for safety. Older sends change nothing."""
    today = dt.datetime.combine(dt.datetime.fromtimestamp(now, rules.zone).date(), dt.time(0), rules.zone)
    return min(today.timestamp(), now - rules.line_gap_s) - DAY


@dataclass(frozen=True)
class CapacityFacts:
    """What the journal knows that capacity planning needs."""

    lines: list[str]  # empty: not known yet (discovered at the first send)
    history: list[tuple[str, float]]  # (line, time) of the first touches (and unresolved attempts) that bear on now

    @classmethod
    def read(cls, campaign: Campaign, journal: Journal | None, now: float) -> CapacityFacts:
        """The one rule for which lines a campaign plans with: ``[capacity] lines``, else those the
        last send discovered (journal meta), else those the journal's first touches went out on
        (a journal from before discovered lines were remembered)."""
        if journal is None or not campaign.capacity.enabled:
            return cls(list(campaign.capacity.lines), [])
        history = journal.first_touch_history(history_since(capacity_rules(campaign), now))
        if campaign.capacity.lines:
            return cls(list(campaign.capacity.lines), history)
        stored = journal.meta(LINES_META)
        if stored:
            return cls([str(line) for line in json.loads(stored)], history)
        return cls(journal.first_touch_lines(), history)


@dataclass(frozen=True)
class CapacityOutlook:
    """The rows still to send under capacity planning: the calendar they need, and those that can
    never be sent (quiet hours and the sending window never meet)."""

    lines: list[str]
    to_send: int  # first-touch sends the calendar places
    never: int  # rows that can never be sent
    unsendable: list[Unsendable]  # ... named, row by row (an exact outlook; a sampled one only counts them)
    calendar: Calendar | None  # None: no line known, or nothing to place
    sampled: bool = False  # zones looked up for a sample of the rows: ``never`` is an estimate


def outlook(
    campaign: Campaign, waiting: Sequence[Recipient], now: float, facts: CapacityFacts, *, exact: bool = True
) -> CapacityOutlook | None:
    """The calendar for sending ``waiting`` from ``now`` (today's use in ``facts`` counted, each
    recipient's quiet hours kept as the engine keeps them); None when capacity planning is off.

    ``exact`` (check) names every row that can never be sent; otherwise (the send header, before
    the first request) the zones of a fixed sample of a long list are looked up and scaled, and
    those rows are only counted."""
    if not campaign.capacity.enabled:
        return None
    rules = capacity_rules(campaign)
    hours = quiet_hours(campaign)
    lines = facts.lines
    waiting = [r for r in waiting if r.phone]
    never: list[Unsendable] = []
    if exact:
        never = unsendable(((r.row, r.phone or "", r.timezone) for r in waiting), hours, rules, now)
        excluded = {u.row for u in never}
        waiting = [r for r in waiting if r.row not in excluded]
        groups = zone_groups(waiting, hours)
    else:
        groups = _sampled_zone_groups(waiting, hours)
    count = sum(groups.values())
    calendar = estimate_calendar(rules, lines, count, now, facts.history, groups, hours) if lines and count else None
    counted = len(never)
    if calendar is not None and calendar.unplaced:
        late_rows = sum(calendar.unplaced.values())
        count -= late_rows
        counted += late_rows
        if exact and hours is not None:  # the last rows of a zone set: name them
            late = dict(calendar.unplaced)
            for r in reversed(waiting):
                zones = recipient_zones(r.phone or "", r.timezone, hours)
                if late.get(zones, 0) > 0:
                    late[zones] -= 1
                    never.append(Unsendable(r.row, r.phone or "", season_reason(zones, hours, rules)))
            never.sort(key=lambda u: u.row)
    sampled = not exact and hours is not None and len(waiting) > ZONE_SAMPLE
    return CapacityOutlook(lines, count, counted, never, calendar, sampled)


def quiet_hours_never(campaign: Campaign, waiting: Sequence[Recipient], now: float) -> list[Unsendable]:
    """With capacity planning off: the rows whose quiet hours never open (in every one of their
    zones at once), which send holds for ever; none when quiet hours are off."""
    hours = quiet_hours(campaign)
    if hours is None:
        return []
    return unsendable(((r.row, r.phone or "", r.timezone) for r in waiting if r.phone), hours, None, now)


def unfinished(plan: Plan, journal: Journal | None) -> list[Recipient]:
    """The plan's sendable rows that ``journal`` (None: none yet) has not finished."""
    states = journal.states() if journal is not None else {}
    return [r for r in plan.sendable if states.get(r.key or "", "pending") in UNFINISHED]


def zone_groups(recipients: Sequence[Recipient], hours: QuietHours | None) -> Counter[tuple[ZoneInfo, ...]]:
    """Recipients per set of time zones their quiet hours are kept in — the zones the engine's
    scheduler holds each of them by (``recipient_zones``: the row's own zone, else the
    number's). Without quiet hours every recipient is in one group."""
    return Counter(recipient_zones(r.phone or "", r.timezone, hours) if hours is not None else () for r in recipients)


ZONE_SAMPLE = 5_000  # recipients whose zones an estimate looks up (~30 µs each): the rest are in proportion


def _sampled_zone_groups(recipients: Sequence[Recipient], hours: QuietHours | None) -> Counter[tuple[ZoneInfo, ...]]:
    """``zone_groups`` of every recipient, or of a fixed random sample of a long list scaled to its
    length: an estimate shown before the first request must not parse 100,000 numbers."""
    total = len(recipients)
    if total <= ZONE_SAMPLE or hours is None:
        return zone_groups(recipients, hours)
    # A fixed random sample, not a stride (a sorted sheet has patterns), with the first row in it:
    # the calendar offers a slot to the zone groups in the order the sheet first names them.
    picked = [0, *sorted(random.Random(0).sample(range(1, total), ZONE_SAMPLE - 1))]
    sample = zone_groups([recipients[i] for i in picked], hours)
    scaled = Counter({zones: n * total // ZONE_SAMPLE for zones, n in sample.items()})
    scaled[max(sample, key=lambda zones: sample[zones])] += total - sum(scaled.values())  # rounding
    return scaled


def capacity_snapshot(planner: LinePlanner, now: float) -> dict[str, object]:
    _, next_at = planner.next_slot(now)
    return {
        "sent_today": planner.sent_today(now),
        "remaining_today": planner.remaining_today(now),
        "next_possible_at": next_at,
        "timezone": planner.rules.timezone,
    }


def capacity_status(campaign: Campaign, journal: Journal, now: float) -> dict[str, object] | None:
    """For `status`: today's first-touch use per line, what is left, the next slot, rows held now."""
    if not campaign.capacity.enabled:
        return None
    facts = CapacityFacts.read(campaign, journal, now)
    if not facts.lines:
        return {"lines_known": False}
    snapshot = capacity_snapshot(LinePlanner(capacity_rules(campaign), facts.lines, facts.history), now)
    return {"lines_known": True, **snapshot, "held_by_quiet_hours": held_now(campaign, journal, now) or 0}


def held_now(campaign: Campaign, journal: Journal, now: float) -> int | None:
    """How many unfinished rows quiet hours hold at ``now`` (the row's own zone first); None
    when quiet hours are off."""
    hours = quiet_hours(campaign)
    if hours is None:
        return None
    waiting = [(r.phone, r.timezone) for r in journal.rows() if r.state in UNFINISHED and r.phone]
    return held_by_quiet_hours(waiting, now, hours)


def held_by_quiet_hours(waiting: Sequence[tuple[str, str | None]], now: float, hours: QuietHours) -> int:
    """How many of these (phone, row time zone) recipients quiet hours hold at ``now``."""
    return sum(1 for phone, zone in waiting if not quiet_ok(recipient_zones(phone, zone, hours), now, hours))
