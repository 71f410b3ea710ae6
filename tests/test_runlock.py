"""One run per campaign journal: a second `send` leaves at once (exit 0), nothing else is
blocked, `status` shows the run, and a SIGKILLed holder leaves no stale lock."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chertcast.runlock import AlreadyRunning, RunLock, lock_path, running
from chertcast.sandbox import DEFAULT_SECRET, SandboxModel, SandboxServer
from tests.helpers import run_process, write_campaign, write_contacts

HOLD = (
    "import sys, time; from pathlib import Path; from chertcast.runlock import RunLock; "
    "lock = RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(120)"
)


@contextmanager
def holder_process(journal: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the journal's run lock (the real RunLock), until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(journal)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_second_lock_is_refused_with_the_holder_and_sigkill_frees_it(tmp_path: Path) -> None:
    journal = tmp_path / "c.journal.sqlite"
    with holder_process(journal) as proc:
        with pytest.raises(AlreadyRunning) as refused:
            RunLock(journal).acquire()
        holder = refused.value.holder
        assert holder.pid == proc.pid and holder.host == socket.gethostname()
        assert holder.since is not None and abs(holder.since - time.time()) < 60
        assert f"pid {proc.pid} on {socket.gethostname()}, since 20" in str(refused.value)
        assert refused.value.exit_code == 0
        seen = running(journal)
        assert seen is not None and seen.pid == proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert running(journal) is None  # the kernel dropped the lock with the process
        began = time.monotonic()
        with RunLock(journal) as lock:
            assert lock.held and time.monotonic() - began < 1
            assert json.loads(lock_path(journal).read_text())["pid"] == os.getpid()
            with pytest.raises(AlreadyRunning):  # one process, two runs: refused as well
                RunLock(journal).acquire()
    assert running(journal) is None and not lock_path(journal).exists()  # the run that ended deleted it


def test_status_during_a_first_run_before_its_journal_exists(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 2))
    with holder_process(tmp_path / "campaign.journal.sqlite") as proc:
        text = run_process("status", campaign)
        data = run_process("status", campaign, "--json")
    assert text.returncode == 0 and f"run in progress: pid {proc.pid} on " in text.stdout
    assert "no journal written yet" in text.stdout
    assert json.loads(data.stdout)["running"]["pid"] == proc.pid


def test_send_while_another_run_holds_the_journal(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 5)
    campaign = write_campaign(tmp_path, contacts)
    journal = tmp_path / "campaign.journal.sqlite"
    model = SandboxModel()
    with SandboxServer(model) as server:
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        assert run_process("send", campaign, "--yes", "--limit", "2", env=env).returncode == 0
        with holder_process(journal) as proc:
            began = time.monotonic()
            second = run_process("send", campaign, "--yes", env=env)
            took = time.monotonic() - began
            others = {
                "check": run_process("check", campaign, env=env),
                "preview": run_process("preview", campaign, env=env),
                "dry-run": run_process("send", campaign, "--dry-run", env=env),
                "report": run_process("report", campaign, "--out", tmp_path / "r.csv", env=env),
                "status": run_process("status", campaign, env=env),
                "status-json": run_process("status", campaign, "--json", env=env),
            }
            sandbox_rehearsal = run_process("send", campaign, "--yes", "--sandbox", env=env)  # its own journal
    assert second.returncode == 0 and took < 10
    assert second.stdout == ""
    assert second.stderr.strip().count("\n") == 0
    assert second.stderr.startswith(f"chertcast: already sending: pid {proc.pid} on {socket.gethostname()}, since ")
    assert len(model.deliveries()) == 2  # the second run sent nothing
    for name, result in others.items():
        assert result.returncode == 0, (name, result.stdout + result.stderr)
        assert "already sending" not in result.stderr, name
    assert f"run in progress: pid {proc.pid} on {socket.gethostname()}, since " in others["status"].stdout
    assert json.loads(others["status-json"].stdout)["running"]["pid"] == proc.pid
    assert "3 to send now, 2 already done" in others["dry-run"].stdout
    assert sandbox_rehearsal.returncode == 0 and "sent 5" in sandbox_rehearsal.stdout
    after = run_process("status", campaign, "--json", env=env)
    assert json.loads(after.stdout)["running"] is None


# Each worker takes and releases the real RunLock until it has held it `rounds` times, writing
# "<pid> in" and "<pid> out" to a shared log (O_APPEND: one write each, never interleaved)
# while it holds the lock. A short retry (`waits`) on the same open file is the dangerous
# moment: the holder may delete the file meanwhile, so the lock it then gets is on a deleted file.
RACE = """
import os, sys, time
from pathlib import Path
from chertcast.runlock import AlreadyRunning, RunLock
journal, log, rounds, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
held = tries = 0
while not go.exists():  # all start together, once every worker has imported chertcast
    time.sleep(0.001)
deadline = time.monotonic() + 60
while held < rounds and time.monotonic() < deadline:
    tries += 1
    try:
        lock = RunLock(journal, waits=(0.0, 0.0005, 0.001)).acquire()
    except AlreadyRunning:
        continue
    os.write(out, f"{os.getpid()} in\\n".encode())
    time.sleep(0.0005)
    os.write(out, f"{os.getpid()} out\\n".encode())
    lock.release()
    held += 1
print(held, tries)
"""


def test_racing_processes_never_both_hold_the_lock_that_each_run_deletes(tmp_path: Path) -> None:
    journal, log, rounds = tmp_path / "c.journal.sqlite", tmp_path / "held.log", 300
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(journal), str(log), str(rounds), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    time.sleep(1.0)  # let each import chertcast and wait at the start line
    go.touch()
    results = [worker.communicate(timeout=120)[0].split() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert [int(held) for held, _ in results] == [rounds] * 3
    lines = log.read_text().splitlines()
    holders = [line.split()[0] for line in lines[::2]]
    switches = sum(1 for a, b in itertools.pairwise(holders) if a != b)
    assert switches >= 3, "the workers never took turns: the race was not run"
    assert len(lines) == 2 * 3 * rounds
    for entered, left in zip(lines[::2], lines[1::2], strict=True):  # never two holders at once
        pid = entered.split()[0]
        assert entered == f"{pid} in" and left == f"{pid} out", (entered, left)
    assert not lock_path(journal).exists()


def test_a_send_leaves_no_lock_file_and_a_killed_runs_file_is_reused(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 3))
    journal = tmp_path / "campaign.journal.sqlite"
    with SandboxServer(SandboxModel()) as server:
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        sent = run_process("send", campaign, "--yes", "--limit", "1", env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert journal.exists() and not lock_path(journal).exists()
        with holder_process(journal) as proc:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert lock_path(journal).exists()  # a killed run cannot delete it: the next run reuses it
        rest = run_process("send", campaign, "--yes", env=env)
        assert rest.returncode == 0 and "sent 2" in rest.stdout, rest.stdout + rest.stderr
        status = run_process("status", campaign, "--json", env=env)
    assert not lock_path(journal).exists()
    assert json.loads(status.stdout)["running"] is None
