"""`send CAMPAIGN --to +1…`: one row's message to the operator's own number, against a loopback sandbox.

The campaign's journal is compared before and after (every table, and the files' bytes): a
test send never writes it, takes no run lock and counts in no capacity plan.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from chertcast.preflight import KEY_PREFIX, idempotency_key
from chertcast.runlock import RunLock
from chertcast.sandbox import DEFAULT_SECRET, SandboxServer
from chertcast.testsend import TEST_KEY_PREFIX, key_for
from tests.helpers import run_cli, run_process, write_campaign

OPERATOR = "+14155550199"
CONTACTS = """phone,name,crm
(212) 555-0100,Ada,CRM-1
n/a,Bob,CRM-2
(646) 555-0102,Grace,CRM-3
(312) 555-0103,Alan,CRM-4
"""


def env_for(server: SandboxServer) -> dict[str, str]:
    return {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}


def campaign(tmp_path: Path, extra: str = "", *, planned: bool = False) -> Path:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(CONTACTS, encoding="utf-8")
    columns = '[columns]\nname = "name"\nexternal_id = "crm"\n'
    return write_campaign(
        tmp_path, contacts, body="Hi {{ name }}, this is Maya.", extra=columns + extra, planned=planned
    )


def journal_snapshot(path: Path) -> tuple[dict[str, bytes | None], list[str]]:
    """Every journal file's bytes (None: absent) and every table's rows, in SQL."""
    files = {suffix: None for suffix in ("", "-wal", "-shm", ".lock")}
    for suffix in files:
        target = path.with_name(path.name + suffix)
        files[suffix] = target.read_bytes() if target.exists() else None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        dump = list(db.iterdump())
    return files, dump


def test_the_key_is_its_own_deterministic_and_never_a_campaign_key() -> None:
    request = {"phone": OPERATOR, "body": "Hi Ada"}
    key = key_for("spring", 2, request)
    assert key == key_for("spring", 2, dict(request)) and len(key) == 44
    assert key.startswith(TEST_KEY_PREFIX) and not key.startswith(KEY_PREFIX)
    assert key != idempotency_key("spring", OPERATOR)
    others = {
        key_for("autumn", 2, request),
        key_for("spring", 3, request),
        key_for("spring", 2, {**request, "phone": "+14155550198"}),
        key_for("spring", 2, {**request, "body": "Hi Ada!"}),
        key_for("spring", 2, {**request, "effect": "confetti"}),
    }
    assert key not in others and len(others) == 5


def test_a_test_send_delivers_one_row_once_and_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    path = campaign(tmp_path)
    journal = tmp_path / "campaign.journal.sqlite"
    with SandboxServer() as server:
        env = env_for(server)
        first = run_process("send", path, "--yes", "--limit", "1", env=env)  # a campaign under way
        assert first.returncode == 0, first.stdout + first.stderr
        before = journal_snapshot(journal)
        with RunLock(journal):  # a campaign run holds the lock: a test send does not need it
            result = run_cli("send", path, "--to", "(415) 555-0199", "--row", "4", env=env)
            again = run_cli("send", path, "--to", "415.555.0199", "--row", "4", env=env)
        ledger = server.model.deliveries()
        stats = server.model.stats()
    assert result.exit_code == 0, result.output
    assert "test send of row 4's message (Grace) to +14155550199" in result.output
    assert "│ Hi Grace, this is Maya." in result.output
    assert f"test send to {OPERATOR}; the campaign journal is unchanged ({journal})" in result.output
    assert journal_snapshot(journal) == before
    to_operator = [d for d in ledger if d.phone == OPERATOR]
    assert len(to_operator) == 1 and len(ledger) == 2  # the campaign's first row, then the test send
    (test,) = to_operator
    assert test.body == "Hi Grace, this is Maya." and test.idempotency_key is not None
    assert test.idempotency_key.startswith(TEST_KEY_PREFIX) and test.idempotency_key in result.output
    assert (test.name, test.external_id) == (None, None)  # a customer's name and CRM id never label our number
    # the rerun is the same request under the same key: Chert answers it from its idempotency store
    assert again.exit_code == 0, again.output
    assert stats["replays"] == 1 and stats["deliveries"] == 2
    assert f"sent: message_id {test.message_id}" in result.output and f"message_id {test.message_id}" in again.output


def test_the_default_row_is_the_first_sendable_and_attachments_and_effect_go_too(tmp_path: Path) -> None:
    (tmp_path / "card.png").write_bytes(b"a card")
    path = campaign(tmp_path, '[send]\neffect = "confetti"\nattachments = ["card.png"]\n')
    with SandboxServer() as server:
        result = run_cli("send", path, "--to", OPERATOR, "--json", env=env_for(server))
        (delivery,) = server.model.deliveries()
    summary = json.loads(result.output)
    assert result.exit_code == 0 and summary["exit_code"] == 0, result.output
    assert (summary["row"], summary["to"], summary["status"]) == (2, OPERATOR, "sent")
    assert summary["journal_unchanged"] is True and summary["idempotency_key"] == delivery.idempotency_key
    assert (delivery.phone, delivery.body, delivery.effect) == (OPERATOR, "Hi Ada, this is Maya.", "confetti")
    (uploaded,) = delivery.attachments
    assert uploaded.startswith("att_")  # the local file, uploaded for the test send
    assert not (tmp_path / "campaign.journal.sqlite").exists()  # and recorded in no journal


def test_a_capacity_planned_campaign_is_not_touched(tmp_path: Path) -> None:
    """With capacity planning on, a test send asks for no line list and writes no first touch anywhere."""
    path = campaign(tmp_path, planned=True)
    with SandboxServer() as server:
        result = run_cli("send", path, "--to", OPERATOR, env=env_for(server))
        assert server.model.stats()["requests"] == 1  # the /send itself, no GET /phone-numbers
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "campaign.journal.sqlite").exists()


def test_a_sandbox_test_send_uses_its_own_sandbox_and_no_journal(tmp_path: Path) -> None:
    path = campaign(tmp_path)
    result = run_process("send", path, "--sandbox", "--to", "415 555 0199", "--row", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SANDBOX: test send of row 5's message (Alan) to +14155550199" in result.stdout
    assert "Sandbox ledger: 1 delivery (a rehearsal; nothing reached a phone)" in result.stdout
    assert "the campaign journal is unchanged" in result.stdout
    assert not list(tmp_path.glob("*.sqlite*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", OPERATOR, "--row", "3"], "contacts.csv: row 3 is not sendable (error: 'n/a' is not a phone number)"),
        (["--to", OPERATOR, "--row", "9"], "contacts.csv: --row 9 is not a data row (data rows are 2-5"),
        (["--to", "555-01"], "--to '555-01': "),
        (["--to", "not a phone"], "--to 'not a phone': "),
        (["--row", "2"], "--row 2 chooses whose message a test send uses: add --to YOUR_NUMBER"),
        (
            ["--to", OPERATOR, "--limit", "1", "--dry-run"],
            "--to sends one test message; it does not take --dry-run, --limit",
        ),
    ],
)
def test_bad_test_sends_are_one_line_errors_and_send_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    path = campaign(tmp_path)
    with SandboxServer() as server:
        result = run_process("send", path, *args, env=env_for(server))
        assert server.model.stats()["requests"] == 0
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"chertcast: error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_a_refused_test_send_says_why_and_exits_1(tmp_path: Path) -> None:
    path = campaign(tmp_path, '[send]\neffect = "sparkle"\n')
    with SandboxServer() as server:
        result = run_cli("send", path, "--to", OPERATOR, env=env_for(server))
        assert server.model.deliveries() == []
    assert result.exit_code == 1
    assert "not delivered: 4098: Unknown effect: sparkle" in result.output
    assert "the campaign journal is unchanged" in result.output


def test_a_broken_setup_ends_a_test_send_after_three_identical_answers(tmp_path: Path) -> None:
    """As it stops a campaign: a host that cannot be reached is said so, not retried six times."""
    path = campaign(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        env = {
            **os.environ,
            "CHERT_BASE_URL": f"http://127.0.0.1:{port}/api/v1",
            "CHERT_SIGNING_SECRET": DEFAULT_SECRET,
        }
        started = time.monotonic()
        result = run_cli("send", path, "--to", OPERATOR, "--json", env=env)
        elapsed = time.monotonic() - started
    summary = json.loads(result.output)
    assert result.exit_code == 1 and summary["status"] == "failed" and summary["attempts"] == 3
    assert summary["error_message"].startswith("no connection could be made to the API 3 times")
    assert elapsed < 10
