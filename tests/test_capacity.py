"""Capacity: the planner's rules, quiet hours, the sandbox's capacity mode, and a multi-day
campaign run like cron on an injected clock."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter, defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import httpx
import pytest

import chertcast
from chertcast import Endpoint, Secret, runner
from chertcast.campaign import gap_margin, load_campaign
from chertcast.capacity import CapacityRules, LinePlanner, QuietHours, next_quiet_ok, quiet_ok, zones_for
from chertcast.journal import Journal
from chertcast.pacing import FakeClock
from chertcast.sandbox import DEFAULT_SECRET, SandboxConfig, SandboxModel, SandboxServer, sandbox_transport
from tests.helpers import sandbox_limits, write_campaign

NY = ZoneInfo("America/New_York")
LINES = tuple(f"pl_line_{i}" for i in range(1, 6))
RULES = CapacityRules(window_start=dt.time(9), window_end=dt.time(18), timezone="America/New_York")


def at(day: int, hour: int, minute: int = 0) -> float:
    """Epoch seconds of hour:minute New York time, `day` days after Monday 2026-11-30."""
    return (dt.datetime(2026, 11, 30, hour, minute, tzinfo=NY) + dt.timedelta(days=day)).timestamp()


def test_planner_gap_cap_window_and_project_cap() -> None:
    planner = LinePlanner(RULES, ["a", "b"])
    assert planner.next_slot(at(0, 8)) == ("a", at(0, 9))  # before the window: wait for it
    planner.record("a", at(0, 9))
    assert planner.next_slot(at(0, 9)) == ("b", at(0, 9))
    planner.record("b", at(0, 9))
    assert planner.next_slot(at(0, 9, 1)) == ("a", at(0, 9, 10))  # the 10-minute gap
    for i in range(1, 30):
        planner.record("a", at(0, 9, 10) + 600 * i)
    assert planner.earliest("a", at(0, 15)) == at(1, 9)  # 30 today: tomorrow's window
    assert planner.remaining_today(at(0, 15)) == {"a": 0, "b": 29}
    capped = LinePlanner(CapacityRules(project_daily_cap=3, timezone="America/New_York"), ["a", "b"])
    for t in (at(0, 10), at(0, 10), at(0, 11)):
        capped.record(capped.next_slot(t)[0], t)
    assert capped.next_slot(at(0, 12))[1] == at(1, 0)


def test_calendar_estimate() -> None:
    planner = LinePlanner(RULES, LINES)
    days = planner.calendar(1000, at(0, 8))
    assert [n for _, n in days] == [150] * 6 + [100]
    assert days[-1][0] == dt.date(2026, 12, 6)


def test_quiet_hours_most_restrictive_zone() -> None:
    hours = QuietHours()
    ny = zones_for("+12125550100")
    la = zones_for("+14155550100")
    assert [z.key for z in ny] == ["America/New_York"] and [z.key for z in la] == ["America/Los_Angeles"]
    assert quiet_ok(ny, at(0, 9), hours) and not quiet_ok(la, at(0, 9), hours)  # 06:00 in LA
    assert next_quiet_ok(la, at(0, 9), hours) == at(0, 11)  # 08:00 in LA
    both = (*ny, *la)
    assert next_quiet_ok(both, at(0, 22), hours) == at(1, 11)  # NY closed at 21:00; LA opens at 11:00 NY time
    assert zones_for("+12125550100", "Asia/Tokyo")[0].key == "Asia/Tokyo"


def test_sandbox_capacity_mode_answers_4002_with_truthful_retry_after() -> None:
    clock = FakeClock(at(0, 9))
    model = SandboxModel(SandboxConfig(lines=("a",), capacity=sandbox_limits(RULES), clock=clock.wall))

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=sandbox_transport(model), base_url="http://s/api/v1") as http:
            headers = {"authorization": f"Bearer {DEFAULT_SECRET}"}
            out = [await http.post("/send", json={"phone": "+12125550100", "body": "one"}, headers=headers)]
            out.append(await http.post("/send", json={"phone": "+12125550101", "body": "two"}, headers=headers))
            out.append(await http.post("/send", json={"phone": "+12125550100", "body": "follow-up"}, headers=headers))
            clock.time += 600
            out.append(await http.post("/send", json={"phone": "+12125550101", "body": "two"}, headers=headers))
            return out

    import anyio

    first, refused, follow_up, later = anyio.run(scenario)
    assert first.json()["status"] == "sent"
    assert refused.status_code == 503 and refused.json()["code"] == 4002
    assert refused.json()["retry_after"] == 600 and refused.headers["retry-after"] == "600"
    assert follow_up.json()["status"] == "sent"  # not a first touch: no capacity needed
    assert later.json()["status"] == "sent"


def run_day(campaign: Path, clock: FakeClock, server: SandboxServer, journal: Path) -> runner.SendResult:
    endpoint = Endpoint(server.base_url, Secret(DEFAULT_SECRET))
    options = runner.SendOptions(journal=journal, handle_signals=False)
    outcome = chertcast.send(campaign, endpoint=endpoint, options=options, clock=clock)
    assert outcome.result is not None
    return outcome.result


EASTERN = ("212", "646", "917", "718", "617", "305", "404", "202")


def test_five_lines_thousand_recipients_across_simulated_days(tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        "phone,name\n" + "".join(f"({EASTERN[i % 8]}) 555-{i // 8:04d},Lead {i}\n" for i in range(1000))
    )
    lines = ", ".join(f'"{line}"' for line in LINES)
    extra = (
        f'[send]\nrate = 50\n[capacity]\nlines = [{lines}]\nwindow_start = "09:00"\nwindow_end = "18:00"\n'
        'timezone = "America/New_York"\n'
    )
    campaign = write_campaign(tmp_path, contacts, extra=extra, planned=True)
    clock = FakeClock(at(0, 8))
    model = SandboxModel(SandboxConfig(lines=LINES, capacity=sandbox_limits(RULES), clock=clock.wall))
    planned_finish = LinePlanner(RULES, LINES).calendar(1000, clock.wall())[-1][0]
    runs = 0
    with SandboxServer(model) as server:
        while True:
            result = run_day(campaign, clock, server, tmp_path / "j.sqlite")
            runs += 1
            if result.run is None or result.run.stop_kind != "capacity":
                break
            assert result.run.next_possible_at is not None and runs < 20
            clock.time = result.run.next_possible_at  # what cron does: run again when capacity returns
    ledger = model.deliveries()
    assert Counter(d.phone for d in ledger).most_common(1)[0][1] == 1 and len(ledger) == 1000
    by_line: dict[str, list[float]] = defaultdict(list)
    for delivery in ledger:
        by_line[delivery.phone_line_id].append(delivery.time)
    for times in by_line.values():
        times.sort()
        assert min(b - a for a, b in itertools.pairwise(times)) >= 600
        assert max(Counter(dt.datetime.fromtimestamp(t, NY).date() for t in times).values()) <= 30
    local = [dt.datetime.fromtimestamp(d.time, NY) for d in ledger]
    assert all(dt.time(9) <= t.time() < dt.time(18) for t in local)
    assert max(t.date() for t in local) == planned_finish == dt.date(2026, 12, 6)
    assert runs == 7
    stats = model.stats()
    assert stats["capacity_refusals"] / stats["requests"] < 0.01
    with Journal(tmp_path / "j.sqlite", "test-campaign", readonly=True) as journal:
        counts = journal.counts()
    assert counts["sent"] == 1000 and counts["failed"] == 0


# [capacity] enabled = false used to turn quiet hours off with it: a Los Angeles number got its
# message at 04:13 local time (new-user walkthrough). Quiet hours are kept either way.
PLANNING = pytest.mark.parametrize(
    "capacity",
    [
        '[capacity]\nline_gap_minutes = 0\ntimezone = "America/New_York"\n',
        '[capacity]\nenabled = false\ntimezone = "America/New_York"\n',
    ],
    ids=["capacity-planned", "capacity-off"],
)


@PLANNING
def test_quiet_hours_hold_rows_pending(tmp_path: Path, capacity: str) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name\n(212) 555-0001,NY\n(415) 555-0002,LA\n")
    campaign = write_campaign(tmp_path, contacts, extra=capacity, planned=True)
    clock = FakeClock(at(0, 9, 30))  # 06:30 in Los Angeles
    model = SandboxModel(SandboxConfig(clock=clock.wall))
    with SandboxServer(model) as server:
        result = run_day(campaign, clock, server, tmp_path / "j.sqlite")
    assert [d.phone for d in model.deliveries()] == ["+12125550001", "+14155550002"]
    la_time = dt.datetime.fromtimestamp(model.deliveries()[1].time, ZoneInfo("America/Los_Angeles"))
    assert la_time.time() == dt.time(8, 0)  # waited for 08:00 local, the same day
    assert result.run is not None and result.run.stop_kind is None
    if "enabled = false" in capacity:  # no calendar: the estimate does not pretend it is all paced
        eta = chertcast.check(campaign, now=at(0, 9, 30)).eta.text
        assert eta == "0s, longer for rows quiet hours hold (they wait for their morning)"


@PLANNING
def test_quiet_hours_past_today_end_the_run_and_keep_rows_pending(tmp_path: Path, capacity: str) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name\n(212) 555-0001,NY\n")
    campaign = write_campaign(tmp_path, contacts, extra=capacity, planned=True)
    clock = FakeClock(at(0, 22))  # 22:00 in New York: held until 08:00 tomorrow
    with SandboxServer(SandboxModel(SandboxConfig(clock=clock.wall))) as server:
        result = run_day(campaign, clock, server, tmp_path / "j.sqlite")
        assert server.model.deliveries() == []
    assert result.run is not None and result.run.stop_kind == "capacity"
    assert result.run.stop_reason == "1 row is held by quiet hours"
    assert result.run.next_possible_at == pytest.approx(at(1, 8))
    assert result.counts["pending"] == 1 and result.counts.get("failed", 0) == 0
    status = chertcast.status(campaign, journal=tmp_path / "j.sqlite", now=at(0, 22))
    if "enabled = false" in capacity:  # status says so without capacity planning too
        assert status.as_json()["held_by_quiet_hours"] == 1
        assert "Quiet hours: 1 row held right now" in status.lines()
    else:
        assert status.as_json()["capacity"]["held_by_quiet_hours"] == 1


def test_a_rehearsal_sends_on_the_listed_lines_and_an_unlisted_line_is_named(tmp_path: Path) -> None:
    """`send --sandbox` used the sandbox's own lines, so a rehearsal never exercised [capacity]
    lines and status counted nothing on them; a first touch on a line the plan does not know is
    counted for the project only, which the user is now told (once per line)."""
    import json

    from chertcast.engine import RunHooks
    from tests.helpers import run_cli, write_contacts

    contacts = write_contacts(tmp_path / "contacts.csv", 2)
    extra = '[capacity]\nlines = ["pl_a", "pl_b"]\n[quiet_hours]\nenabled = false\n'
    campaign = write_campaign(tmp_path, contacts, extra=extra, planned=True)
    sent = run_cli("send", campaign, "--sandbox", "--yes")
    assert sent.exit_code == 0, sent.output
    assert "not in [capacity] lines" not in sent.output
    status = json.loads(run_cli("status", campaign, "--sandbox", "--json").output)
    assert status["capacity"]["sent_today"] == {"pl_a": 1, "pl_b": 1}

    notices: list[str] = []
    other = tmp_path / "other"
    other.mkdir()
    elsewhere = write_campaign(other, contacts, extra=extra, planned=True)
    with SandboxServer(SandboxModel(SandboxConfig(lines=("pl_x",)))) as server:
        endpoint = Endpoint(server.base_url, Secret(DEFAULT_SECRET))
        options = runner.SendOptions(journal=other / "j.sqlite", handle_signals=False)
        chertcast.send(elsewhere, endpoint=endpoint, options=options, hooks=RunHooks(notice=notices.append))
    warnings = [n for n in notices if "not in [capacity] lines" in n]
    assert warnings == [
        "warning: Chert sent on line pl_x, which is not in [capacity] lines (pl_a, pl_b): list every active line, "
        "or leave [capacity] lines out to discover them"
    ]


def test_send_stops_for_the_day_then_status_and_check_show_capacity(tmp_path: Path) -> None:
    import json
    import os
    import re
    import sys

    from tests.helpers import run_cli, run_process, write_contacts

    contacts = write_contacts(tmp_path / "contacts.csv", 5)
    extra = (
        '[capacity]\nlines = ["pl_a", "pl_b"]\nline_daily_cap = 1\nhorizon_days = 2\n[quiet_hours]\nenabled = false\n'
    )
    campaign = write_campaign(tmp_path, contacts, extra=extra, planned=True)
    check = run_cli("check", campaign)
    assert "calendar: 5 first-touch sends on 2 lines (1/line/day, 10 min apart, UTC): 3 sending days" in check.output
    assert "beyond the 2-day horizon" in check.output
    assert json.loads(run_cli("check", campaign, "--json").output)["calendar"]["sending_days"] == 3
    model = SandboxModel(
        SandboxConfig(lines=("pl_a", "pl_b"), capacity=sandbox_limits(CapacityRules(line_daily_cap=1)))
    )
    with SandboxServer(model) as server:
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        result = run_process("send", campaign, "--yes", env=env)
        again = run_process("send", campaign, "--yes", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Stopped: today's first-touch capacity is used up" in result.stdout
    assert "First-touch sends today per line: pl_a 1, pl_b 1" in result.stdout
    assert "Next send possible at " in result.stdout and "3 rows remain" in result.stdout
    assert f"*/15 * * * * cd {tmp_path} && CHERT_BASE_URL={server.base_url} {sys.executable} -m chertcast " in (
        result.stdout
    )
    assert f"-m chertcast send {campaign} --yes >> {tmp_path / 'send.log'} 2>&1" in result.stdout
    assert "cron does not see CHERT_SIGNING_SECRET from this shell" in result.stdout
    assert again.returncode == 0 and "This run: sent 0" in again.stdout  # nothing possible until tomorrow
    assert sorted(d.phone_line_id for d in model.deliveries()) == ["pl_a", "pl_b"]
    assert model.stats()["capacity_refusals"] == 0  # chertcast knew its capacity: no wasted 4002
    status = run_cli("status", campaign)
    assert "Capacity:" in status.output and "Capacity left today: 0" in status.output
    data = json.loads(run_cli("status", campaign, "--json").output)
    assert data["pending"] == 3 and data["capacity"]["sent_today"] == {"pl_a": 1, "pl_b": 1}
    # every moment in status --json is one ISO form, the next slot too (it was a raw epoch float)
    moments = [data["capacity"]["next_possible_at"], data["created_at"], data["last_progress_at"]]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", m) for m in moments), moments
    zone = ZoneInfo(data["capacity"]["timezone"])
    shown = dt.datetime.fromisoformat(data["capacity"]["next_possible_at"]).astimezone(zone)
    assert f"next first-touch send possible at {shown.strftime('%Y-%m-%d %H:%M %Z')}" in status.output


def test_lines_are_discovered_from_phone_numbers(tmp_path: Path) -> None:
    import os

    from tests.helpers import run_process, write_contacts

    contacts = write_contacts(tmp_path / "contacts.csv", 3)
    campaign = write_campaign(tmp_path, contacts, extra="[quiet_hours]\nenabled = false\n", planned=True)
    model = SandboxModel(SandboxConfig(capacity=sandbox_limits(CapacityRules())))
    with SandboxServer(model) as server:
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        result = run_process("send", campaign, "--yes", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(d.phone_line_id for d in model.deliveries()) == sorted(model.config.lines)
    assert model.stats()["capacity_refusals"] == 0


def test_wait_stays_up_across_days(tmp_path: Path) -> None:

    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name\n" + "".join(f"({EASTERN[i % 8]}) 555-{i:04d},L{i}\n" for i in range(100)))
    extra = '[capacity]\nlines = ["pl_a", "pl_b"]\ntimezone = "America/New_York"\n'
    campaign = write_campaign(tmp_path, contacts, extra=extra, planned=True)
    clock = FakeClock(at(0, 9))
    model = SandboxModel(
        SandboxConfig(
            lines=("pl_a", "pl_b"),
            capacity=sandbox_limits(CapacityRules(timezone="America/New_York")),
            clock=clock.wall,
        )
    )
    with SandboxServer(model) as server:
        options = runner.SendOptions(journal=tmp_path / "j.sqlite", handle_signals=False, wait=True)
        endpoint = Endpoint(server.base_url, Secret(DEFAULT_SECRET))
        result = chertcast.send(campaign, endpoint=endpoint, options=options, clock=clock).result
    assert result is not None
    assert result.run is not None and result.run.stop_kind is None  # one run, no stop for the day
    days = Counter(dt.datetime.fromtimestamp(d.time, NY).date() for d in model.deliveries())
    assert sorted(days.values()) == [40, 60] and len(model.deliveries()) == 100


def test_gap_margin_scales_with_the_gap(tmp_path: Path) -> None:
    """A flat 5 s margin made a rehearsal gap of a second or two useless (1.2 s became 6.2 s)."""
    assert gap_margin(600.0) == 5.0  # Chert's 10 minutes: 5 s, as before
    assert gap_margin(1.2) == pytest.approx(0.12)
    assert gap_margin(0.0) == 0.0
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name\n(212) 555-0001,NY\n")
    extra = '[capacity]\nlines = ["pl_a"]\nline_gap_minutes = 0.02\n'
    campaign = load_campaign(write_campaign(tmp_path, contacts, extra=extra, planned=True))
    with Journal(tmp_path / "j.sqlite", campaign.id) as journal:
        scheduler = anyio.run(runner.build_scheduler, campaign, None, journal, False)
    assert scheduler is not None and scheduler.planner.rules.line_gap_s == pytest.approx(1.2 * 1.1)
