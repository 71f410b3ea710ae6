"""Issue 12: capacity planning that matches Chert, never stalls, and tells the truth about time.

Engine runs go against the capacity-mode sandbox in virtual time (trio's MockClock, see
tests/test_realtime_engine.py): requests take time, answers come back out of order.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import httpx
import pytest

from chertcast import api, present, runner
from chertcast.campaign import gap_margin, load_campaign
from chertcast.capacity import (
    CapacityRules,
    LinePlanner,
    QuietHours,
    estimate_calendar,
    next_allowed,
    unsendable,
    zones_for,
)
from chertcast.client import ChertClient, Secret
from chertcast.engine import Engine, EngineSettings, RunResult
from chertcast.errors import ConfigError
from chertcast.journal import Journal
from chertcast.pacing import LoopClock
from chertcast.preflight import Plan, build_plan
from chertcast.sandbox import DEFAULT_SECRET, Faults, SandboxConfig, SandboxModel, sandbox_transport
from chertcast.schedule import Scheduler
from tests.helpers import run_cli, sandbox_limits, write_campaign
from tests.test_realtime_engine import in_virtual_time

NY = ZoneInfo("America/New_York")
LINES = ("pl_a", "pl_b", "pl_c")
MONDAY = dt.date(2026, 11, 30)
WINDOW = CapacityRules(window_start=dt.time(9), window_end=dt.time(18), timezone="America/New_York")


def ny(hour: int, minute: int = 0, day: dt.date = MONDAY) -> float:
    return dt.datetime.combine(day, dt.time(hour, minute), NY).timestamp()


def plan_of(tmp_path: Path, rows: list[tuple[str, str]], extra: str = "") -> Plan:
    """rows: (phone, phone_line_id or '')."""
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        "phone,name,phone_line_id\n" + "".join(f"{p},Lead {i},{line}\n" for i, (p, line) in enumerate(rows))
    )
    extra = '[columns]\nphone_line_id = "phone_line_id"\n' + extra
    return build_plan(load_campaign(write_campaign(tmp_path, contacts, extra=extra)))


@dataclass
class Outcome:
    model: SandboxModel
    result: RunResult | None = None
    engine: Engine | None = None
    counts: dict[str, int] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    errors: dict[str, str | None] = field(default_factory=dict)


def run_engine(
    tmp_path: Path,
    plan: Plan,
    *,
    start: float,
    server: CapacityRules | None,
    planned: CapacityRules | None,
    lines: tuple[str, ...] = LINES,
    server_lines: tuple[str, ...] | None = None,
    quiet: QuietHours | None = None,
    faults: Faults | None = None,
    known: dict[str, str] | None = None,
    **settings: object,
) -> Outcome:
    out = Outcome(SandboxModel())

    async def scenario() -> None:
        clock = LoopClock(start)
        out.model = SandboxModel(
            SandboxConfig(
                lines=server_lines or lines,
                capacity=None if server is None else sandbox_limits(server),
                clock=clock.wall,
                faults=faults or Faults(latency_ms=300, jitter_ms=300, seed=4),
            )
        )
        for phone, line in (known or {}).items():
            out.model.seed_conversation(phone, line)
        options = {"rate": 5.0, "burst": 1, "concurrency": 4, "handle_signals": False, **settings}
        with Journal(tmp_path / "j.sqlite", plan.campaign.id, clock=clock.wall) as journal:
            journal.sync_plan(plan)
            async with httpx.AsyncClient(transport=sandbox_transport(out.model)) as http:
                client = ChertClient(http, "http://sandbox/api/v1", Secret(DEFAULT_SECRET), clock=clock.wall)
                scheduler = Scheduler(LinePlanner(planned, lines), quiet) if planned is not None else None
                engine = Engine(
                    client,
                    journal,
                    EngineSettings(**options, scheduler=scheduler),  # type: ignore[arg-type]
                    clock,
                    rng=random.Random(7),
                )
                engine.notice = out.notices.append
                out.engine = engine
                with anyio.fail_after(40 * 86_400):  # virtual time: an endless loop fails, not hangs
                    out.result = await engine.run(plan.sendable)
            out.counts = dict(journal.counts())
            out.errors = {row.phone or "": row.error_message for row in journal.rows()}

    in_virtual_time(scenario)
    return out


# ------------------------------------------------------------------ 1. no common window: no crash


def test_toll_free_number_zones_are_its_own_countrys_mainland() -> None:
    """+1 800 maps to 42 zones (Guam to Bermuda): quiet hours 10:00-19:00 had no common time
    and next_quiet_ok raised (ExceptionGroup, exit 70)."""
    zones = [z.key for z in zones_for("+18005550123")]
    assert "America/New_York" in zones and "America/Los_Angeles" in zones
    assert not {"Pacific/Guam", "Pacific/Pago_Pago", "America/Puerto_Rico", "America/Toronto"} & set(zones)
    assert all(z.startswith("America/") for z in zones)
    hours = QuietHours(dt.time(10), dt.time(19))
    at = next_allowed(ny(8), zones_for("+18005550123"), hours)
    assert at is not None and ny(8) < at < ny(8) + 86_400


def test_toll_free_row_is_sent_with_narrow_quiet_hours(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, [("+18005550123", ""), ("(212) 555-0100", "")])
    out = run_engine(
        tmp_path,
        plan,
        start=ny(8),
        server=CapacityRules(line_gap_s=60, timezone="America/New_York"),
        planned=CapacityRules(line_gap_s=66, timezone="America/New_York"),
        quiet=QuietHours(dt.time(10), dt.time(19), "America/New_York"),
    )
    assert out.result is not None and out.counts["sent"] == 2
    assert any("held by quiet hours" in n and "until" in n for n in out.notices)  # a long wait says so


# ------------------------------------------------------------------ 2. never-sendable rows are named


def test_australian_mobile_zones_drop_cocos_and_christmas_island() -> None:
    zones = [z.key for z in zones_for("+61412345678")]
    assert "Australia/Sydney" in zones and "Australia/Perth" in zones
    assert "Indian/Cocos" not in zones and "Indian/Christmas" not in zones
    assert [z.key for z in zones_for("+61412345678", "Australia/Sydney")] == ["Australia/Sydney"]


def test_rows_that_can_never_be_sent_are_held_with_a_reason_not_blamed_on_capacity(tmp_path: Path) -> None:
    """An Australian mobile never meets a 09:00-18:00 New York window inside 08:00-21:00 in
    Australia: the run used to wait forever saying "today's first-touch capacity is used up"."""
    plan = plan_of(tmp_path, [("+61412345678", ""), ("(212) 555-0100", ""), ("(212) 555-0101", "")])
    out = run_engine(
        tmp_path,
        plan,
        start=ny(10),
        server=CapacityRules(line_gap_s=60, timezone="America/New_York"),
        planned=CapacityRules(
            line_gap_s=66, window_start=dt.time(9), window_end=dt.time(18), timezone="America/New_York"
        ),
        quiet=QuietHours(fallback_zone="America/New_York"),
    )
    assert out.result is not None and out.counts["sent"] == 2 and out.counts["pending"] == 1
    assert out.result.stop_kind == "capacity" and out.result.stop_reason is not None
    assert "1 row can never be sent" in out.result.stop_reason and "capacity is used up" not in out.result.stop_reason
    assert out.result.next_possible_at is None  # no false promise of a next send
    reason = out.errors["+61412345678"] or ""
    assert "never sendable" in reason and "Australia/Sydney" in reason and "09:00-18:00 America/New_York" in reason


def test_check_names_rows_that_can_never_be_sent(tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name,tz\n+61412345678,Oz,\n+61412345679,Oz2,Australia/Perth\n(212) 555-0100,NY,\n")
    extra = (
        '[columns]\ntimezone = "tz"\n[capacity]\nlines = ["pl_a"]\nwindow_start = "09:00"\nwindow_end = "18:00"\n'
        'timezone = "America/New_York"\n[quiet_hours]\nstart = "08:00"\nend = "21:00"\n'
    )
    campaign = write_campaign(tmp_path, contacts, extra=extra, planned=True)
    checked = run_cli("check", campaign)
    output = checked.output
    assert checked.exit_code == 1  # not "every row can be sent" (exit 0), as it said before
    assert "unsendable: 2 rows can never be sent" in output
    assert "row 2 (+61412345678): never sendable" in output and "row 3 (+61412345679)" in output
    assert "calendar: 1 first-touch send on 1 line" in output
    data = json.loads(run_cli("check", campaign, "--json").output)["calendar"]
    assert [u["row"] for u in data["unsendable"]] == [2, 3] and data["to_send"] == 1


# ------------------------------------------------------------------ 3. no conversation moves


def test_existing_conversations_keep_their_line_and_capacity_is_fully_used(tmp_path: Path) -> None:
    """Planning sent phone_line_id on every send, which re-pins a known recipient's conversation
    (SPEC §7). Now Chert picks the line (none is sent) and the answer says which it took."""
    phones = [f"+1212555{i:04d}" for i in range(40)]
    known = dict.fromkeys(phones[:10], "pl_c")  # earlier conversations, all on one line
    plan = plan_of(tmp_path, [(p, "") for p in phones])
    out = run_engine(
        tmp_path,
        plan,
        start=ny(10),
        server=CapacityRules(line_gap_s=60, line_daily_cap=5, timezone="America/New_York"),
        planned=CapacityRules(line_gap_s=66, line_daily_cap=5, timezone="America/New_York"),
        known=known,
        faults=Faults(latency_ms=300, jitter_ms=400, seed=9),
    )
    assert out.result is not None and out.result.stop_kind == "capacity"
    ledger = out.model.deliveries()
    assert out.model.repins == [] and out.model.stats()["repins"] == 0  # no conversation moved
    assert {d.phone_line_id for d in ledger if d.phone in known} == {"pl_c"} and out.counts["sent"] == 25
    first_touches = Counter(d.phone_line_id for d in ledger if d.phone not in known)
    assert first_touches == dict.fromkeys(LINES, 5)  # the day's capacity, all of it
    stats = out.model.stats()
    assert stats["capacity_refusals"] == 0 and stats["requests"] == 25  # measured: 15/15 capacity, no 4002


# ------------------------------------------------------------------ 4. 4002 retry_after is honoured


def test_a_rows_own_unplanned_line_waits_out_its_4002(tmp_path: Path) -> None:
    """Rows whose own phone_line_id is not a planned line were handed back on 4002 and resent at
    once: 72 of 74 requests in 14 s were 4002 with retry_after 600."""
    plan = plan_of(tmp_path, [(f"(212) 555-01{i:02d}", "pl_own") for i in range(3)])
    server = CapacityRules(line_gap_s=600, timezone="America/New_York")
    out = run_engine(
        tmp_path,
        plan,
        start=ny(10),
        server=server,
        planned=CapacityRules(line_gap_s=605, timezone="America/New_York"),
        server_lines=(*LINES, "pl_own"),
    )
    assert out.result is not None and out.counts["sent"] == 3
    times = sorted(d.time for d in out.model.deliveries())
    assert all(b - a >= 600 for a, b in itertools.pairwise(times))
    assert out.model.stats()["capacity_refusals"] <= 3  # each refusal's retry_after was waited out
    assert any("4002" in n for n in out.notices)


def test_a_long_4002_with_planning_stops_the_run_for_capacity(tmp_path: Path) -> None:
    """README: a 4002 asking for more than 15 minutes stops the run (exit 0); it sat silently."""
    plan = plan_of(tmp_path, [(f"(212) 555-01{i:02d}", "") for i in range(4)])
    out = run_engine(
        tmp_path,
        plan,
        start=ny(10),
        server=None,
        planned=CapacityRules(line_gap_s=66, timezone="America/New_York"),
        faults=Faults(saturated=1.0, retry_after_s=1800, seed=1),
    )
    assert out.result is not None and out.result.stop_kind == "capacity"
    assert "4002" in (out.result.stop_reason or "") and out.result.next_possible_at == pytest.approx(
        ny(10), abs=5 + 1800
    )
    assert out.model.stats()["requests"] <= 4 and out.counts["pending"] == 4


def test_without_planning_a_4002_is_the_rows_wait_not_the_runs(tmp_path: Path) -> None:
    """Planning off: a 4002 paused the whole run like a 1007; the README says the row waits."""
    plan = plan_of(tmp_path, [(f"(212) 555-01{i:02d}", "") for i in range(30)])
    out = run_engine(
        tmp_path,
        plan,
        start=ny(10),
        server=None,
        planned=None,
        faults=Faults(saturated=0.1, retry_after_s=300, seed=11),
        concurrency=16,  # a waiting row holds its slot: leave room for the others
    )
    assert out.result is not None and out.counts["sent"] == 30
    refused = out.model.stats()["faults"]["saturated"]
    assert refused >= 2
    early = sum(1 for d in out.model.deliveries() if d.time < ny(10) + 60)
    assert early >= 30 - refused  # rows without a 4002 did not wait for the others' retry_after


# ------------------------------------------------------------------ 6. status and check agree with send


def test_calendar_extrapolation_respects_the_window() -> None:
    """Past 20,000 rows the calendar added days at lines x cap, ignoring a short window."""
    rules = CapacityRules(window_start=dt.time(9), window_end=dt.time(11), timezone="America/New_York")
    lines = [f"l{i}" for i in range(25)]
    per_day = 25 * 12  # 2 hours at one first touch per 10 minutes per line
    calendar = estimate_calendar(rules, lines, 30_000, ny(8))
    assert calendar.per_day[0][1] == per_day and calendar.sending_days == 100
    assert {n for _, n in calendar.per_day} == {per_day}
    assert estimate_calendar(rules, ["a", "a"], 10, ny(8)).lines == 1  # a line listed twice is one line


def test_check_and_status_plan_with_send(tmp_path: Path) -> None:
    """check counted rows already sent; status knew only the discovered lines used so far."""
    from chertcast.pacing import FakeClock
    from chertcast.sandbox import SandboxServer
    from tests.test_capacity import run_day

    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name\n" + "".join(f"(212) 555-01{i:02d},L{i}\n" for i in range(8)))
    extra = '[capacity]\nline_daily_cap = 1\ntimezone = "America/New_York"\n[quiet_hours]\nenabled = false\n'
    campaign = write_campaign(tmp_path, contacts, extra=extra, planned=True)
    clock = FakeClock(ny(10))
    model = SandboxModel(
        SandboxConfig(lines=LINES, capacity=sandbox_limits(CapacityRules(line_daily_cap=1)), clock=clock.wall)
    )
    with SandboxServer(model) as server:
        journal = load_campaign(campaign).default_journal
        result = run_day(campaign, clock, server, journal)
    assert result.counts["sent"] == 3
    check = run_cli("check", campaign).output
    assert "calendar: 5 first-touch sends on 3 lines" in check  # the 3 sent are not counted again
    status = json.loads(run_cli("status", campaign, "--json").output)
    assert sorted(status["capacity"]["remaining_today"]) == sorted(LINES)  # every discovered line

    # One source: check's estimate, its calendar and the send header plan the 5 rows left on the
    # lines the send discovered, with today's 3 first touches counted (each line's 1 a day is
    # spent): 3 tomorrow, 2 the day after. check's estimate used to say "list [capacity] lines".
    now = clock.wall()
    checked = api.check(campaign, now=now)
    finish = "2 sending days (first-touch capacity on 3 lines; expected finish 2026-12-02)"
    assert f"estimated send time: {finish}" in "\n".join(present.plan_summary(checked.plan, checked.eta))
    calendar = "\n".join(present.calendar_lines(checked.plan.campaign, checked.outlook))
    assert "5 first-touch sends on 3 lines" in calendar and "2 sending days, expected finish 2026-12-02" in calendar
    options = runner.SendOptions(dry_run=True)
    prepared = runner.prepare(campaign, options, now)
    assert f"estimated {finish}" in "\n".join(present.send_header(prepared, options))
    assert present.send_estimate(prepared) == checked.eta


# ------------------------------------------------------------------ 7. values that mean something else


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        (
            '[quiet_hours]\nstart = "21:00"\nend = "08:00"\n',
            "quiet_hours: start '21:00' is not before end",
        ),
        ('[capacity]\nwindow_start = "09:00"\nwindow_end = "09:00"\n', "window_start '09:00' is not before"),
        ("[capacity]\nline_gap_minutes = inf\n", "capacity.line_gap_minutes: Input should be a finite number"),
        ("[capacity]\nline_gap_minutes = nan\n", "capacity.line_gap_minutes: Input should be a finite number"),
        ('[api]\ntenant = ""\n', "api.tenant"),
        ('[capacity]\nlines = ["pl_a", " "]\n', "capacity.lines.1"),
        ('[capacity]\nlines = ["pl_a", "pl_a"]\n', "'pl_a' is listed more than once"),
    ],
)
def test_values_that_mean_something_else_are_refused(tmp_path: Path, toml: str, words: str) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name\n(212) 555-0100,A\n")
    with pytest.raises(ConfigError, match=r"campaign\.toml") as caught:
        load_campaign(write_campaign(tmp_path, contacts, extra=toml, planned=True))
    assert words in str(caught.value)
    assert run_cli("check", tmp_path / "campaign.toml").exit_code == 2


def test_spring_forward_window_never_schedules_outside_it() -> None:
    """A 02:00-03:00 New York window: on 2027-03-14 02:00 does not exist, and 02:00 EST is
    03:00 EDT, outside the window; the planner sent at 03:00."""
    rules = CapacityRules(window_start=dt.time(2), window_end=dt.time(3), timezone="America/New_York")
    eve = dt.datetime(2027, 3, 13, 23, 0, tzinfo=NY).timestamp()
    _, at = LinePlanner(rules, ["a"]).next_slot(eve)
    local = dt.datetime.fromtimestamp(at, NY)
    assert dt.time(2) <= local.time() < dt.time(3) and local.date() == dt.date(2027, 3, 15)
    assert next_allowed(eve, (), None, rules) == at


def test_unsendable_is_empty_without_windows() -> None:
    assert unsendable([(2, "+61412345678", None)], None, None, ny(10)) == []
    assert gap_margin(600) == 5.0


def test_status_labels_a_never_sendable_row_as_not_sendable_not_a_network_error() -> None:
    """status printed `1 × network: never sendable: …` (second new-user walkthrough)."""
    from chertcast.capacity import QuietHours, never_reason, zones_for
    from chertcast.present import _error_label

    note = never_reason(zones_for("+61412345678"), QuietHours(), WINDOW)
    assert _error_label(None, note) == "not sendable"
    assert _error_label(None, "ReadError talking to chert: peer closed") == "network"


def test_check_names_rows_quiet_hours_never_allow_with_capacity_planning_off(tmp_path: Path) -> None:
    """Quiet hours apply with capacity off, so `check` must say which rows they never allow:
    it said "capacity planning is off" and exited 0 while `send` stopped on them (second
    new-user walkthrough)."""
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name,tz\n(212) 555-0100,NY,\n+61412345678,Oz,\n")
    extra = (
        '[columns]\ntimezone = "tz"\n[capacity]\nenabled = false\n'
        '[quiet_hours]\nstart = "09:00"\nend = "10:00"\n'  # 09-10 in New York and in Sydney never meet
    )
    campaign = write_campaign(tmp_path, contacts, extra=extra, planned=True)
    checked = run_cli("check", campaign)
    assert checked.exit_code == 1
    assert "unsendable: 1 row can never be sent" in checked.output and "row 3 (+61412345678)" in checked.output
    assert "calendar: capacity planning is off" in checked.output
    data = json.loads(run_cli("check", campaign, "--json").output)
    assert [u["row"] for u in data["unsendable"]] == [3] and data["calendar"] is None
