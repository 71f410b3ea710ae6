"""A real `chertcast sync` SIGKILLed three times — while paging replies, while fetching statuses,
and once more — then rerun: every reply the sandbox made is recorded once, every opt-out is in
the shared list once, no ordinary reply is an opt-out, and a second campaign sharing the list
skips every number on it."""

from __future__ import annotations

import csv
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from benchmarks.common import sandbox

from tests.helpers import run_process, write_campaign, write_contacts

COUNT = 2_000
# Every delivered message is read (a rerun has no status left to fetch); 30 % of the delivered
# reply, 10 % of replies opt out, 5 % merely contain a word; all within 0.3 s of the send.
OUTCOMES = (
    *("--outcome-seed", "5", "--reply-share", "0.3", "--opt-out-share", "0.1", "--contains-word-share", "0.05"),
    *("--read-share", "1", "--outcome-delay-s", "0.1", "--latency-ms", "1"),
)


def count(journal: Path, sql: str) -> int:
    try:
        with sqlite3.connect(journal, timeout=5) as db:
            return int(db.execute(sql).fetchone()[0] or 0)
    except sqlite3.OperationalError:  # the sync has not created its tables yet
        return 0


def kill_when(command: list[str], env: dict[str, str], ready: Callable[[], bool], timeout: float = 20) -> bool:
    """Start a sync and SIGKILL it the moment ``ready()`` holds; False if it finished first."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.003)
    proc.wait()
    return False


def second_campaign(tmp_path: Path, replies: list[dict[str, str]], settings: str) -> Path:
    directory = tmp_path / "second"
    directory.mkdir()
    repliers = {r["phone"] for r in replies}
    others = [p for p in (f"+1212555{i:04d}" for i in range(COUNT)) if p not in repliers][:100]
    contacts = directory / "contacts.csv"
    contacts.write_text("phone,name\n" + "".join(f"{p},Lead\n" for p in [*sorted(repliers), *others]))
    extra = 'opt_out_list = "../optouts.csv"\n' + settings
    return write_campaign(directory, contacts, body="Second: hi {{ name }}", campaign_id="second", extra=extra)


def test_sync_killed_three_times_then_rerun(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", COUNT)
    settings = "[send]\nrate = 5000\nburst = 100\nconcurrency = 16\n"
    campaign = write_campaign(tmp_path, contacts, extra='opt_out_list = "optouts.csv"\n' + settings)
    journal = tmp_path / "j.sqlite"
    with sandbox(*OUTCOMES) as server:  # the sandbox in its own process
        env = server.env()
        sent = run_process("send", campaign, "--yes", "--journal", journal, env=env)
        assert sent.returncode == 0, sent.stderr
        time.sleep(0.5)  # every reply has been made by now
        replies = httpx.get(f"{server.root}/_sandbox/replies", timeout=30).json()["replies"]
        sync = [sys.executable, "-m", "chertcast", "sync", str(campaign), "--journal", str(journal)]
        paging = [*sync, "--page-size", "10", "--rate", "2000"]
        events = "SELECT COUNT(*) FROM sync_events"
        statuses = "SELECT COUNT(*) FROM outcomes WHERE status IS NOT NULL"
        kills = [
            kill_when(paging, env, lambda: count(journal, events) > 0),
            kill_when(paging, env, lambda: count(journal, statuses) > 0),
            kill_when(paging, env, lambda: count(journal, statuses) >= 600),
        ]
        killed_with = (count(journal, events), count(journal, statuses))
        final = subprocess.run([*sync, "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stderr
        rerun = subprocess.run([*sync, "--json"], env=env, capture_output=True, text=True, timeout=60)
        second = second_campaign(tmp_path, replies, settings)  # everyone who replied, and 100 who did not
        second_send = run_process("send", second, "--yes", "--journal", tmp_path / "j2.sqlite", env=env)
        assert second_send.returncode == 0, second_send.stderr
        deliveries = server.deliveries()
    assert sum(kills) == 3, kills
    assert killed_with[0] < len(replies) or killed_with[1] < COUNT  # the kills left work to do
    assert '"replies_new": 0' in rerun.stdout and '"opt_out_list_added": 0' in rerun.stdout

    with sqlite3.connect(journal) as db:
        recorded = db.execute("SELECT event_id FROM sync_events WHERE key IS NOT NULL").fetchall()
        counted = db.execute("SELECT SUM(replies), COUNT(*) FROM outcomes WHERE replies > 0").fetchone()
        looked_up = db.execute("SELECT COUNT(*) FROM outcomes WHERE status IS NOT NULL").fetchone()[0]
    assert 500 <= len(replies) <= 700  # 30 % of ~1,960 delivered
    assert sorted(e for (e,) in recorded) == sorted(r["event_id"] for r in replies)  # each recorded once
    assert counted == (len(replies), len(replies))  # ... and counted once
    assert looked_up == COUNT

    listed = list(csv.DictReader((tmp_path / "optouts.csv").open(encoding="utf-8")))
    phones = [row["phone"] for row in listed]
    assert len(phones) == len(set(phones))  # every opt-out in the list once
    opt_outs = {r["phone"] for r in replies if r["kind"] == "opt_out"}
    ambiguous = {r["phone"] for r in replies if r["kind"] == "contains_word"}
    ordinary = {r["phone"] for r in replies if r["kind"] == "ordinary"}
    assert len(opt_outs) >= 40 and len({r["text"] for r in replies if r["kind"] == "opt_out"}) >= 10
    assert {row["phone"] for row in listed if not row["review"]} == opt_outs
    assert {row["phone"] for row in listed if row["review"] == "yes"} == ambiguous
    assert not ordinary & set(phones)  # 0 false opt-outs

    second_phones = {d["phone"] for d in deliveries if d["body"].startswith("Second:")}
    assert len(second_phones) == len({r["phone"] for r in replies}) + 100 - len(phones)
    assert not second_phones & set(phones)  # a second campaign skips every opted-out number
