"""Issue 13, item 5: `check`'s finish date counts the recipients' quiet hours.

The estimate (`check`'s "estimated send time", the send header and the prompt) planned
first-touch capacity as if every recipient could be messaged whenever the sending window was
open. A West-Coast sheet sent from New York inside 09:00-18:00 New York time can only start at
11:00 (08:00 in Los Angeles), so it takes longer than that estimate said. The truth here is
the real engine, run in virtual time against the capacity-mode sandbox (as in
tests/test_capacity_truth.py): the estimate's finish date is the day its last message went.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import httpx

from chertcast.campaign import load_campaign
from chertcast.capacity import CapacityRules, LinePlanner, QuietHours, estimate_calendar
from chertcast.client import ChertClient, Secret
from chertcast.engine import Engine, EngineSettings, Scheduler
from chertcast.journal import Journal
from chertcast.outlook import CapacityFacts, _sampled_zone_groups, capacity_rules, outlook, quiet_hours, zone_groups
from chertcast.pacing import LoopClock
from chertcast.preflight import Plan, Recipient, build_plan
from chertcast.present import Estimate, calendar_lines, estimate, plan_summary
from chertcast.sandbox import DEFAULT_SECRET, Faults, SandboxConfig, SandboxModel, sandbox_transport
from tests.helpers import write_campaign
from tests.test_realtime_engine import in_virtual_time

NY = ZoneInfo("America/New_York")
START = dt.datetime(2026, 11, 30, 8, 0, tzinfo=NY).timestamp()  # a Monday, 08:00 in New York
CAPACITY = (
    '[capacity]\nlines = ["pl_a"]\nline_gap_minutes = 10\nline_daily_cap = 60\n'
    'window_start = "09:00"\nwindow_end = "18:00"\ntimezone = "America/New_York"\n'
)
SERVER = CapacityRules(
    line_gap_s=600, line_daily_cap=60, window_start=dt.time(9), window_end=dt.time(18), timezone="America/New_York"
)


def west_coast_plan(tmp_path: Path, *, quiet: bool) -> Plan:
    """100 Los Angeles numbers and 4 New York ones, sent from New York."""
    rows = [f"(212) 555-01{i:02d},NY {i}" for i in range(4)] + [f"(310) 555-01{i:02d},LA {i}" for i in range(100)]
    folder = tmp_path / ("quiet" if quiet else "plain")
    folder.mkdir()
    contacts = folder / "contacts.csv"
    contacts.write_text("phone,name\n" + "\n".join(rows) + "\n")
    hours = '[quiet_hours]\nstart = "08:00"\nend = "21:00"\n' if quiet else "[quiet_hours]\nenabled = false\n"
    return build_plan(load_campaign(write_campaign(folder, contacts, extra=CAPACITY + hours, planned=True)))


def send_estimate(plan: Plan, recipients: list[Recipient], *, exact: bool = False) -> Estimate:
    """The estimate for ``recipients`` from START, as the send header (sampled zones) or check (exact) makes it."""
    campaign = plan.campaign
    view = outlook(campaign, recipients, START, CapacityFacts.read(campaign, None, START), exact=exact)
    return estimate(campaign, len(recipients), campaign.send.rate, view, START)


def sender_days(tmp_path: Path, plan: Plan) -> list[tuple[dt.date, int]]:
    """Run the real engine (capacity planning, quiet hours, --wait) against the capacity-mode
    sandbox in virtual time from START: the messages delivered per New York day."""
    campaign = plan.campaign
    delivered: list[float] = []

    async def scenario() -> None:
        clock = LoopClock(START)
        faults = Faults(latency_ms=200, jitter_ms=100, seed=5)
        model = SandboxModel(SandboxConfig(lines=("pl_a",), capacity=SERVER, clock=clock.wall, faults=faults))
        hours: QuietHours | None = quiet_hours(campaign)
        scheduler = Scheduler(LinePlanner(capacity_rules(campaign), list(campaign.capacity.lines)), hours, wait=True)
        settings = EngineSettings(rate=5.0, burst=1, concurrency=4, handle_signals=False, scheduler=scheduler)
        with Journal(campaign.source.with_name("truth.sqlite"), campaign.id, clock=clock.wall) as journal:
            journal.sync_plan(plan)
            async with httpx.AsyncClient(transport=sandbox_transport(model)) as http:
                client = ChertClient(http, "http://sandbox/api/v1", Secret(DEFAULT_SECRET), clock=clock.wall)
                engine = Engine(client, journal, settings, clock, rng=random.Random(7))
                with anyio.fail_after(10 * 86_400):  # virtual time: an endless wait fails, not hangs
                    await engine.run(plan.sendable)
            assert journal.counts()["sent"] == len(plan.sendable)
        delivered.extend(d.time for d in model.deliveries())

    in_virtual_time(scenario)
    return sorted(Counter(dt.datetime.fromtimestamp(t, NY).date() for t in delivered).items())


def test_west_coast_sheet_from_new_york_gets_the_senders_finish_date(tmp_path: Path) -> None:
    quiet = west_coast_plan(tmp_path, quiet=True)
    plain = west_coast_plan(tmp_path, quiet=False)
    assert len(quiet.sendable) == len(plain.sendable) == 104

    truth_quiet = sender_days(tmp_path / "quiet", quiet)
    truth_plain = sender_days(tmp_path / "plain", plain)
    # The sender itself: 09:00-18:00 holds 54 first touches a day, but Los Angeles wakes at 11:00
    # New York time, so a West-Coast sheet gets 42 a day (46 on the first, with 4 New Yorkers).
    assert truth_plain == [(dt.date(2026, 11, 30), 54), (dt.date(2026, 12, 1), 50)]
    assert truth_quiet == [(dt.date(2026, 11, 30), 46), (dt.date(2026, 12, 1), 42), (dt.date(2026, 12, 2), 16)]

    with_hours = send_estimate(quiet, quiet.sendable)
    without = send_estimate(plain, plain.sendable)
    assert send_estimate(quiet, quiet.sendable, exact=True) == with_hours  # check says what send says
    assert with_hours.finish == truth_quiet[-1][0] == dt.date(2026, 12, 2)  # the honest, later date
    assert without.finish == truth_plain[-1][0] == dt.date(2026, 12, 1)
    assert with_hours.seconds is not None and without.seconds is not None and with_hours.seconds > without.seconds

    summary = "\n".join(plan_summary(quiet, with_hours))
    assert "estimated send time: 3 sending days (first-touch capacity on 1 line; expected finish 2026-12-02)" in summary
    exact = outlook(quiet.campaign, quiet.sendable, START, CapacityFacts.read(quiet.campaign, None, START))
    calendar = "\n".join(calendar_lines(quiet.campaign, exact))  # check's calendar line says the same
    assert "3 sending days, expected finish 2026-12-02" in calendar


def test_estimate_of_a_same_day_send_counts_quiet_hours_in_its_duration(tmp_path: Path) -> None:
    """Four Los Angeles numbers at 08:00 New York time: nothing can go before 11:00."""
    plan = west_coast_plan(tmp_path, quiet=True)
    la = [r for r in plan.sendable if r.phone and r.phone.startswith("+1310")][:4]
    result = send_estimate(plan, la)
    three_hours, gaps = 3 * 3600, 3 * 605
    assert result.seconds == three_hours + gaps and result.finish == dt.date(2026, 11, 30)
    assert result.text == "3h 30m (first-touch capacity on 1 line)"


def test_a_long_list_is_estimated_from_a_sample_of_its_zones(tmp_path: Path) -> None:
    """Before the first request, an estimate looks up at most ZONE_SAMPLE recipients' zones
    (~30 µs each) and scales them; a periodic sheet (every 4th row in New York) does not fool
    it, and the calendar matches the one from every recipient's zones."""
    template = west_coast_plan(tmp_path, quiet=True).sendable[0]
    phones = [f"+1{212 if i % 4 == 0 else 310}{200 + i // 10_000}{i % 10_000:04d}" for i in range(12_000)]
    recipients = [dataclasses.replace(template, row=i + 2, phone=p) for i, p in enumerate(phones)]
    hours = QuietHours(dt.time(8), dt.time(21), "America/New_York")
    exact = zone_groups(recipients, hours)
    sampled = _sampled_zone_groups(recipients, hours)
    assert sum(sampled.values()) == 12_000 and set(sampled) == set(exact)
    for zones, count in exact.items():
        assert abs(sampled[zones] - count) <= 12_000 * 0.02
    rules = capacity_rules(load_campaign(tmp_path / "quiet" / "campaign.toml"))
    lines = [f"pl_{i}" for i in range(40)]
    truth = estimate_calendar(rules, lines, 12_000, START, (), exact, hours)
    assert estimate_calendar(rules, lines, 12_000, START, (), sampled, hours).per_day == truth.per_day
