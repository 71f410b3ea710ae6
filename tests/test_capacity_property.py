"""Issue 12, done-when: random sheets against the capacity-mode sandbox on the injected clock.

A seeded random generator (not hypothesis, to keep the run to a few seconds) draws sheets with
numbers from many regions phonenumbers knows (toll-free and multi-zone ones included), per-row
zones, existing conversations, sending windows, quiet hours, gaps, caps and DST days; each
campaign runs through `send`'s own planning (runner.build_scheduler's rules) against the
capacity-mode sandbox in virtual time, with requests taking time. For every sheet: no
exception; every row is sent on or before the day `check` predicted (plus one day), or named by
`check` as unsendable and never sent; no send outside a window; no line over its cap; no
existing conversation moved.
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
import phonenumbers
import pytest

from chertcast import runner
from chertcast.campaign import load_campaign
from chertcast.capacity import zones_for
from chertcast.client import ChertClient, Secret
from chertcast.engine import Engine, EngineSettings, RunResult
from chertcast.journal import Journal
from chertcast.outlook import CapacityFacts, outlook, quiet_hours
from chertcast.pacing import LoopClock
from chertcast.preflight import build_plan
from chertcast.sandbox import DEFAULT_SECRET, Faults, SandboxConfig, SandboxModel, sandbox_transport
from chertcast.schedule import Scheduler
from tests.helpers import sandbox_limits, write_campaign
from tests.test_realtime_engine import in_virtual_time

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
ZONES = ("America/New_York", "Europe/London", "Australia/Sydney", "UTC", "Asia/Tokyo", "America/Los_Angeles")
DST_DAYS = (
    dt.date(2027, 3, 14),
    dt.date(2026, 11, 1),
    dt.date(2027, 3, 28),
    dt.date(2026, 10, 4),
    dt.date(2026, 12, 1),
)
SPECIAL = ("+18005550123", "+18885550199", "+61412345678", "+79161234567", "+5511987654321", "+12125550100")


def mobile(region: str) -> str | None:
    number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    return None if number is None else phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def clock_text(hour: int) -> str:
    return "24:00" if hour == 24 else f"{hour:02d}:00"


@dataclasses.dataclass
class Sheet:
    toml: str
    rows: list[tuple[str, str]]  # phone, own zone ("" for none)
    known: dict[str, str]
    start: float
    lines: tuple[str, ...]


def draw(rng: random.Random) -> Sheet:
    lines = tuple(f"pl_{i}" for i in range(rng.randint(1, 3)))
    zone = rng.choice(ZONES)
    toml = [f"[capacity]\nlines = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in lines)}]"]
    toml.append(f"line_gap_minutes = {rng.choice([0.5, 2, 10, 30])}")
    toml.append(f"line_daily_cap = {rng.randint(1, 5)}")
    if rng.random() < 0.3:
        toml.append(f"project_daily_cap = {rng.randint(1, 6)}")
    if rng.random() < 0.7:
        begin = rng.randint(0, 20)
        toml.append(f'window_start = "{clock_text(begin)}"\nwindow_end = "{clock_text(rng.randint(begin + 1, 24))}"')
    toml.append(f'timezone = "{zone}"')
    toml.append('[columns]\ntimezone = "tz"')
    if rng.random() < 0.8:
        begin = rng.randint(0, 14)
        toml.append(f'[quiet_hours]\nstart = "{clock_text(begin)}"\nend = "{clock_text(rng.randint(begin + 3, 24))}"')
    else:
        toml.append("[quiet_hours]\nenabled = false")
    phones: list[str] = []
    for region in rng.sample(REGIONS, 12):
        number = mobile(region)
        if number is not None and number not in phones:
            phones.append(number)
    phones += [p for p in rng.sample(SPECIAL, 3) if p not in phones]
    rows = [(p, rng.choice(ZONES) if rng.random() < 0.15 else "") for p in phones]
    known = {p: rng.choice(lines) for p in phones if rng.random() < 0.2}
    day = rng.choice(DST_DAYS) - dt.timedelta(days=rng.randint(0, 1))
    start = dt.datetime.combine(day, dt.time(rng.randint(0, 23), rng.choice([0, 17, 45])), ZoneInfo(zone))
    return Sheet("\n".join(toml) + "\n", rows, known, start.timestamp(), lines)


def run_sheet(tmp_path: Path, sheet: Sheet) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name,tz\n" + "".join(f"{p},Lead {i},{z}\n" for i, (p, z) in enumerate(sheet.rows)))
    campaign = load_campaign(write_campaign(tmp_path, contacts, extra=sheet.toml, planned=True))
    plan = build_plan(campaign)
    view = outlook(
        campaign, plan.sendable, sheet.start, CapacityFacts.read(campaign, None, sheet.start)
    )  # what `check` says
    assert view is not None
    never = {u.phone for u in view.unsendable if "stop overlapping" not in u.reason}
    seasonal = {u.phone for u in view.unsendable} - never  # depends on which row a slot reaches first
    finish = view.calendar.finish if view.calendar else None
    rules = campaign.capacity.rules()
    hours = quiet_hours(campaign)
    result: list[RunResult] = []
    model = SandboxModel()

    async def scenario() -> None:
        nonlocal model
        clock = LoopClock(sheet.start)
        model = SandboxModel(
            SandboxConfig(
                lines=sheet.lines,
                capacity=sandbox_limits(rules),
                clock=clock.wall,
                faults=Faults(latency_ms=200, jitter_ms=300, seed=1),
            )
        )
        for phone, line in sheet.known.items():
            model.seed_conversation(phone, line)
        with Journal(tmp_path / "j.sqlite", campaign.id, clock=clock.wall) as journal:
            journal.sync_plan(plan)
            async with httpx.AsyncClient(transport=sandbox_transport(model)) as http:
                client = ChertClient(http, "http://sandbox/api/v1", Secret(DEFAULT_SECRET), clock=clock.wall)
                scheduler = await runner.build_scheduler(campaign, client, journal, True)
                assert isinstance(scheduler, Scheduler)
                settings = EngineSettings(rate=5.0, burst=1, concurrency=4, handle_signals=False, scheduler=scheduler)
                engine = Engine(client, journal, settings, clock, rng=random.Random(3))
                engine.notice = lambda text: None
                with anyio.fail_after(60 * 86_400):
                    result.append(await engine.run(plan.sendable))

    in_virtual_time(scenario)
    ledger = model.deliveries()
    sent = {d.phone: d for d in ledger}
    zone = ZoneInfo(rules.timezone)
    for recipient in plan.sendable:
        phone = recipient.phone or ""
        if phone in never:
            assert phone not in sent, f"{phone}: named unsendable by check, yet sent"
            continue
        if phone in seasonal and phone not in sent:
            continue
        assert phone in sent, f"{phone}: neither sent nor named unsendable ({result[0].stop_reason})"
        if phone not in sheet.known:
            day = dt.datetime.fromtimestamp(sent[phone].time, zone).date()
            assert finish is not None and day <= finish + dt.timedelta(days=1), (
                f"{phone}: sent {day}, check said {finish}"
            )
    for delivery in ledger:
        local = dt.datetime.fromtimestamp(delivery.time, zone).time()
        if rules.window_start is not None and rules.window_end is not None:
            assert rules.window_start <= local < rules.window_end or (
                rules.window_end == dt.time.max and local >= rules.window_start
            )
        if hours is not None:
            own = dict(sheet.rows)[delivery.phone] or None
            for recipient_zone in zones_for(delivery.phone, own, hours.fallback_zone):
                there = dt.datetime.fromtimestamp(delivery.time, recipient_zone).time()
                assert hours.start <= there < hours.end or (hours.end == dt.time.max and there >= hours.start)
    first_touches = Counter(
        (d.phone_line_id, dt.datetime.fromtimestamp(d.time, zone).date()) for d in ledger if d.phone not in sheet.known
    )
    assert max(first_touches.values(), default=0) <= rules.line_daily_cap
    assert model.repins == []
    assert all(sent[p].phone_line_id == line for p, line in sheet.known.items() if p in sent)


@pytest.mark.parametrize("seed", range(20))
def test_random_sheets_keep_every_promise(tmp_path: Path, seed: int) -> None:
    run_sheet(tmp_path, draw(random.Random(seed)))
