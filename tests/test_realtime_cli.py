"""Real time, end to end: `chertcast send` against `chertcast sandbox` in its own process, in
capacity mode with a second-scale gap and a small per-line cap, 5 lines, and latency plus
jitter longer than the spacing of the lines' slots. Seconds, not minutes."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import ExternalSandbox, sandbox

from chertcast.journal import Journal
from chertcast.runlock import running
from tests.helpers import run_process, start_process, write_campaign, write_contacts

GAP_S = 1.5
CAP = 3
LINES = 5
SANDBOX_FLAGS = (
    *("--lines", str(LINES), "--line-gap-s", str(GAP_S), "--line-daily-cap", str(CAP)),
    *("--latency-ms", "300", "--jitter-ms", "400", "--seed", "4"),
)
EXTRA = (
    f"[send]\nrate = 10\nburst = 1\n[capacity]\nline_gap_minutes = {GAP_S / 60}\nline_daily_cap = {CAP}\n"
    "[quiet_hours]\nenabled = false\n"
)


def campaign_with(tmp_path: Path, rows: int) -> Path:
    contacts = write_contacts(tmp_path / "contacts.csv", rows)
    return write_campaign(tmp_path, contacts, extra=EXTRA, planned=True)


def assert_capacity_respected(ledger: list[dict[str, Any]]) -> None:
    by_line: dict[str, list[float]] = defaultdict(list)
    for delivery in ledger:
        by_line[delivery["phone_line_id"]].append(delivery["time"])
    assert len(by_line) == LINES
    for times in by_line.values():
        times.sort()
        assert len(times) <= CAP
        assert all(b - a >= GAP_S for a, b in itertools.pairwise(times))


def journal_counts(tmp_path: Path) -> dict[str, int]:
    with Journal(tmp_path / "campaign.journal.sqlite", "test-campaign", readonly=True) as journal:
        return dict(journal.counts())


def start_send(campaign: Path, server: ExternalSandbox) -> subprocess.Popen[str]:
    return start_process("send", campaign, "--yes", env=server.env())


def wait_for(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_day_of_capacity_in_real_time(tmp_path: Path) -> None:
    campaign = campaign_with(tmp_path, 20)
    with sandbox(*SANDBOX_FLAGS) as server:
        result = run_process("send", campaign, "--yes", env=server.env(), timeout=60)
        ledger, stats = server.deliveries(), server.stats()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "internal error" not in result.stderr
    assert "Stopped: today's first-touch capacity is used up" in result.stdout
    assert len(ledger) == LINES * CAP  # the day's capacity, all of it
    assert_capacity_respected(ledger)
    assert max(Counter(d["phone"] for d in ledger).values()) == 1
    assert stats["capacity_refusals"] == 0
    counts = journal_counts(tmp_path)
    assert counts["sent"] == LINES * CAP and counts.get("failed", 0) == 0 and counts["pending"] == 5


def test_cron_overlap_second_send_leaves_at_once(tmp_path: Path) -> None:
    campaign = campaign_with(tmp_path, 20)
    journal = tmp_path / "campaign.journal.sqlite"
    with sandbox(*SANDBOX_FLAGS) as server:
        first = start_send(campaign, server)
        try:
            wait_for(lambda: running(journal) is not None, "the first run to take the lock")
            began = time.monotonic()
            second = run_process("send", campaign, "--yes", env=server.env(), timeout=60)
            took = time.monotonic() - began
            first_out, first_err = first.communicate(timeout=60)
        finally:
            first.kill()
        ledger, stats = server.deliveries(), server.stats()
    assert second.returncode == 0 and took < 10
    assert second.stderr.startswith(f"chertcast: already sending: pid {first.pid} on ")
    assert first.returncode == 0, first_out + first_err
    assert "internal error" not in first_err + second.stderr
    assert stats["replays"] == 0 and stats["capacity_refusals"] == 0  # the server saw one run only
    assert len(ledger) == LINES * CAP and max(Counter(d["phone"] for d in ledger).values()) == 1
    assert_capacity_respected(ledger)


def test_sigkilled_run_is_taken_over_at_once(tmp_path: Path) -> None:
    campaign = campaign_with(tmp_path, 20)
    with sandbox(*SANDBOX_FLAGS) as server:
        first = start_send(campaign, server)
        try:
            wait_for(lambda: len(server.deliveries()) >= LINES + 1, "the second round of first touches")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            first.kill()
        began = time.monotonic()
        second = run_process("send", campaign, "--yes", env=server.env(), timeout=60)
        ledger, stats = server.deliveries(), server.stats()
    assert first.returncode == -signal.SIGKILL
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already sending" not in second.stderr and "internal error" not in second.stderr
    assert time.monotonic() - began < 30
    assert stats["duplicates"] == 0 and max(Counter(d["phone"] for d in ledger).values()) == 1
    assert len(ledger) == LINES * CAP
    assert_capacity_respected(ledger)
    counts = journal_counts(tmp_path)
    assert counts["sent"] == LINES * CAP and counts.get("failed", 0) == 0 and counts.get("sending", 0) == 0


def _zone_at(hour: int) -> str:
    """A fixed-offset zone where the local hour is ``hour`` right now (Etc/GMT-5 is UTC+5)."""
    offset = ((hour - time.gmtime().tm_hour + 12) % 24) - 12
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def test_quiet_hours_without_capacity_planning_in_real_time(tmp_path: Path) -> None:
    """Capacity planning off, quiet hours on (a new user's Los Angeles numbers got a message at
    04:13): the row whose local time is 14:00 goes, the one at 03:00 is held and the run ends
    (its 08:00 is past the project's day, which is at 22:00), to be sent by a later run."""
    day, night, project = _zone_at(14), _zone_at(3), _zone_at(22)
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(f"phone,name,tz\n(212) 555-0101,Day,{day}\n(212) 555-0102,Night,{night}\n")
    extra = f'[columns]\ntimezone = "tz"\n[capacity]\nenabled = false\ntimezone = "{project}"\n'
    campaign = write_campaign(tmp_path, contacts, extra=extra + "[quiet_hours]\nenabled = true\n", planned=True)
    with sandbox("--latency-ms", "300", "--jitter-ms", "300", "--seed", "3") as server:
        result = run_process("send", campaign, "--yes", env=server.env(), timeout=60)
        ledger = server.deliveries()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [d["phone"] for d in ledger] == ["+12125550101"]
    assert "Stopped: 1 row is held by quiet hours" in result.stdout
    assert "Next send possible at " in result.stdout and "To resume, run: chertcast send" in result.stdout
    counts = journal_counts(tmp_path)
    assert counts["sent"] == 1 and counts["pending"] == 1
