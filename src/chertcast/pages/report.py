"""The report page: funnel, sends per day per line against capacity, failures, what is to come, every row.

The funnel shows what the journal knows. Stages past "sent" come from what ``chertcast sync``
recorded (``sync.outcomes_by_key``; ``LATER_STAGES`` names each stage's field of it); a
journal never synced says "not synced yet" instead of a number. "Opted out" counts clean
opt-outs, as ``status`` does; replies flagged for review are counted by ``status`` apart.
The failures count rows Chert refused and, once synced, messages it accepted and then could
not deliver (their journal state stays ``sent``).
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
import plotly.io as pio
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from chertcast.journal import DELIVERED, STATES, JournalRow
from chertcast.outlook import CapacityOutlook
from chertcast.pages.base import no_cycle_collection, render
from chertcast.preflight import Plan
from chertcast.present import _error_label, calendar_json, report_rows
from chertcast.sync import AfterSend

LATER_STAGES = (  # (stage, label, its field of a sync outcome, ``sync.AfterSend``)
    ("delivered", "delivered", "delivered_at"),
    ("read", "read", "read_at"),
    ("replied", "replied", "replied_at"),
    ("opted_out", "opted out", "opted_out"),
)
FAILED_DELIVERY = "sent, then failed delivery"  # the failures' label for messages Chert accepted
PAGE_SIZE = 200
_CHART_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class Stage:
    name: str
    label: str
    count: int | None  # None: not synced yet


@dataclass(frozen=True)
class Failure:
    label: str
    count: int
    messages: list[tuple[str, int]]  # distinct messages, most common first


def report_page(
    plan: Plan,
    journal_rows: list[JournalRow],
    now: float,
    outlook: CapacityOutlook | None = None,
    outcomes: Mapping[str, AfterSend] | None = None,
) -> str:
    """``outlook``: the calendar of what is still to come (``chertcast.outlook``, from the
    journal ``journal_rows`` came from), None when capacity planning is off.
    ``outcomes``: what ``sync`` recorded, None when the journal was never synced."""
    with no_cycle_collection():
        return _page(plan, journal_rows, now, outlook, outcomes)


def _page(
    plan: Plan,
    journal_rows: list[JournalRow],
    now: float,
    outlook: CapacityOutlook | None,
    outcomes: Mapping[str, AfterSend] | None,
) -> str:
    headers, rows = report_rows(plan, journal_rows, None, outcomes)
    stages = funnel(journal_rows, outcomes)
    zone = plan.campaign.capacity.timezone
    per_day = sends_per_day(journal_rows, zone)
    calendar = calendar_json(plan.campaign, outlook)
    cap = plan.campaign.capacity.line_daily_cap if plan.campaign.capacity.enabled else None
    counts = Counter(row.state for row in journal_rows)
    return render(
        "report.html.j2",
        campaign=plan.campaign.id,
        as_of=datetime.fromtimestamp(now, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z"),
        states=[(state, counts.get(state, 0)) for state in STATES],
        stages=stages,
        planned=stages[0].count or 0,
        funnel_chart=_chart(_funnel_figure(stages), "chart-funnel") if stages[0].count else None,
        per_day=per_day,
        per_day_chart=_chart(_per_day_figure(per_day, cap), "chart-per-day") if per_day else None,
        cap=cap,
        zone=zone,
        failures=failures(journal_rows, outcomes),
        synced=outcomes is not None,
        failed_delivery=FAILED_DELIVERY,
        calendar=calendar,
        calendar_chart=_chart(_calendar_figure(calendar["per_day"]), "chart-calendar")
        if calendar and calendar["per_day"]
        else None,
        headers=headers,
        rows=[["" if cell is None else str(cell) for cell in row] for row in rows],
        page_size=PAGE_SIZE,
        plotly_js=Markup(get_plotlyjs()),  # the library itself, inlined: the page fetches nothing
    )


def _counts(value: object) -> bool:
    """A time, or a clean opt-out ("yes"); a reply flagged for review is not an opt-out here."""
    return bool(value) and value != "review"


def funnel(journal_rows: list[JournalRow], outcomes: Mapping[str, AfterSend] | None = None) -> list[Stage]:
    """planned → sent → delivered → read → replied → opted out, each a count of recipients.

    ``outcomes`` is what ``sync`` recorded (``sync.outcomes_by_key``); None when the journal was
    never synced, and then the later stages say "not synced yet" instead of a number."""
    planned = [row for row in journal_rows if row.state != "skipped"]
    stages = [
        Stage("planned", "planned", len(planned)),
        Stage("sent", "sent", sum(1 for row in planned if row.state in DELIVERED)),
    ]
    for name, label, field in LATER_STAGES:
        count = None
        if outcomes is not None:
            count = sum(
                1 for row in planned if (seen := outcomes.get(row.key)) is not None and _counts(getattr(seen, field))
            )
        stages.append(Stage(name, label, count))
    return stages


def sends_per_day(journal_rows: list[JournalRow], zone: str) -> dict[str, dict[date, tuple[int, int]]]:
    """line → day (in the campaign's time zone) → (sends, first touches); capacity counts the latter."""
    tz = ZoneInfo(zone)
    table: dict[str, dict[date, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for row in journal_rows:
        if row.state not in DELIVERED:
            continue
        day = datetime.fromtimestamp(row.updated_at, UTC).astimezone(tz).date()
        cell = table[row.phone_line_id or "(line not known)"][day]
        cell[0] += 1
        cell[1] += 1 if row.lead_created else 0
    return {line: {day: (c[0], c[1]) for day, c in sorted(days.items())} for line, days in sorted(table.items())}


def failures(journal_rows: list[JournalRow], outcomes: Mapping[str, AfterSend] | None = None) -> list[Failure]:
    """Rows that failed (or whose outcome is unknown), grouped by Chert code, HTTP status or network
    trouble; and, from ``sync``'s ``outcomes``, messages Chert accepted and then failed to deliver."""
    grouped: dict[str, Counter[str]] = defaultdict(Counter)
    for row in journal_rows:
        if row.state in ("failed", "unknown") and row.error_message:
            grouped[_error_label(row.error_code, row.error_message)][row.error_message] += 1
        seen = (outcomes or {}).get(row.key)
        if row.state in DELIVERED and seen is not None and seen.failed_delivery:
            grouped[FAILED_DELIVERY][seen.delivery_error or "(Chert gave no reason)"] += 1
    found = [Failure(label, sum(c.values()), c.most_common()) for label, c in grouped.items()]
    return sorted(found, key=lambda f: (-f.count, f.label))


def _chart(figure: go.Figure, div_id: str) -> Markup:
    """plotly's own div and call; its JSON writes ``<`` as ``\\u003c``, so no label can close the script."""
    figure.update_layout(margin={"l": 40, "r": 20, "t": 30, "b": 40}, height=320, template="plotly_white")
    return Markup(pio.to_html(figure, full_html=False, include_plotlyjs=False, div_id=div_id, config=_CHART_CONFIG))


def _label(text: str) -> str:
    """Plotly reads a few HTML tags in labels; escaped, a label is shown as the text it is."""
    return html.escape(text)


def _funnel_figure(stages: list[Stage]) -> go.Figure:
    known = [stage for stage in stages if stage.count is not None]
    trace = go.Funnel(y=[s.label for s in known], x=[s.count for s in known], textinfo="value+percent initial")
    return go.Figure(trace)


def _per_day_figure(per_day: dict[str, dict[date, tuple[int, int]]], cap: int | None) -> go.Figure:
    figure = go.Figure()
    days = sorted({day for by_day in per_day.values() for day in by_day})
    for line, by_day in per_day.items():
        figure.add_bar(
            name=_label(line),
            x=[day.isoformat() for day in days],
            y=[by_day.get(day, (0, 0))[0] for day in days],
            customdata=[by_day.get(day, (0, 0))[1] for day in days],
            hovertemplate="%{x}: %{y} sends, %{customdata} first touches<extra>%{fullData.name}</extra>",
        )
    if cap is not None:
        figure.add_scatter(
            name=f"capacity: {cap} first touches per line per day",
            x=[day.isoformat() for day in days],
            y=[cap] * len(days),
            mode="lines",
            line={"dash": "dash", "color": "#c62828"},
        )
    figure.update_layout(barmode="group", xaxis={"type": "category", "title": "day"}, yaxis={"title": "sends"})
    return figure


def _calendar_figure(per_day: list[list[Any]]) -> go.Figure:
    figure = go.Figure(go.Bar(x=[day for day, _ in per_day], y=[n for _, n in per_day], marker_color="#0b84fe"))
    figure.update_layout(xaxis={"type": "category", "title": "day"}, yaxis={"title": "first-touch sends planned"})
    return figure
