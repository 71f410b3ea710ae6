"""The journal: upgrade of a 0.1.0 file, sync by key, unknown outcomes, endpoints, content hashes."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from chertcast.campaign import load_campaign
from chertcast.client import Outcome
from chertcast.errors import JournalError
from chertcast.journal import Journal, message_hash
from chertcast.migrations import MIGRATIONS
from chertcast.preflight import Plan, build_plan
from chertcast.sandbox import SandboxServer
from tests.conftest import DATA
from tests.helpers import run_cli, run_process, write_campaign, write_contacts

V010 = DATA / "journal_v010"


def plan_of(campaign: Path) -> Plan:
    return build_plan(load_campaign(campaign))


def legacy_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "legacy"
    shutil.copytree(V010, folder)
    return folder


def test_a_0_1_0_journal_opens_read_only_after_an_upgrade_that_keeps_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = legacy_copy(tmp_path)
    path = folder / "journal.sqlite"
    with Journal.open_existing(path, "legacy-campaign") as journal:
        rows = {r.row: r for r in journal.rows()}
        assert journal.meta("schema_version") == str(len(MIGRATIONS.steps))
        assert journal.meta("created_at") == "1790000000.0"
        assert journal.attachment_id("/campaigns/brochure.pdf", "ab" * 32, "https://chert.example/api/v1") == (
            "att_legacy_1"
        )
        assert journal.attachment_id("/campaigns/brochure.pdf", "ab" * 32, "sandbox:0123") is None
    # every state 0.1.0 had is in the checked-in journal, and survives the upgrade
    assert Counter(r.state for r in rows.values()) == {
        "sent": 2,
        "skipped": 2,
        "sending": 1,
        "failed": 1,
        "duplicate": 1,
        "pending": 1,
    }
    assert rows[2].message_id == "f86ecb3b9015475ca4b8f8a459c51db5"
    assert rows[3].message_id == "8f8917251fd54af6b9dc9e0cb7d71d96"
    assert rows[8].message_id == "ce605731aba7427da9050ca0af3d633e" and rows[8].lead_created is False
    assert rows[4].maybe_delivered  # in flight when 0.1.0 stopped: it may have been delivered
    assert rows[6].error_code == 3001 and not rows[6].maybe_delivered
    assert rows[9].attempts == 0 and not rows[9].maybe_delivered
    backup = folder / "journal.backup-v1.sqlite"
    assert _dump(backup) == _dump(V010 / "journal.sqlite")  # the copy is the journal as 0.1.0 left it
    assert capsys.readouterr().err.count(f"a copy of it as it was is {backup}") == 1
    status = json.loads(run_cli("status", folder / "campaign.toml", "--journal", path, "--json").output)
    assert (status["total"], status["sent"], status["sending"], status["unknown"]) == (8, 2, 1, 0)
    assert not (folder / "journal.backup-v1-2.sqlite").exists()  # upgraded once: no second copy


def test_a_0_1_0_journal_resumes_sending_only_its_unsent_rows_exactly_once(tmp_path: Path) -> None:
    folder = legacy_copy(tmp_path)
    path = folder / "journal.sqlite"
    with SandboxServer() as server:
        env = {**_env(), "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": server.model.config.secret}
        result = run_process("send", folder / "campaign.toml", "--journal", path, "--yes", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 to send now, 4 already done" in result.stdout  # 'sending' and 'pending'; failed stays failed
        assert result.stderr.count("upgraded") == 1 and "journal.backup-v1.sqlite" in result.stderr
        again = run_process("send", folder / "campaign.toml", "--journal", path, "--yes", env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "upgraded" not in again.stderr
        assert sorted(d.body for d in server.model.deliveries()) == ["Hi Barbara", "Hi Linus"]
    with Journal(path, "legacy-campaign", readonly=True) as journal:
        rows = {r.row: r for r in journal.rows()}
    assert rows[2].timezone == "America/New_York" and rows[3].timezone is None
    assert rows[9].timezone == "America/Chicago"
    assert (rows[4].state, rows[9].state, rows[6].state, rows[8].state) == ("sent", "sent", "failed", "duplicate")
    assert (folder / "journal.backup-v1.sqlite").exists()


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_a_newly_suppressed_delivered_recipient_is_counted_once(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 5)
    campaign = write_campaign(tmp_path, contacts, extra='suppress = ["optout.txt"]\n')
    (tmp_path / "optout.txt").write_text("+447400123456\n")  # someone not in the sheet: an empty list is refused
    plan = plan_of(campaign)
    first = plan.sendable[0]
    assert first.key is not None
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        journal.sync_plan(plan)
        journal.mark_sending(first.key, None, first.payload())
        journal.mark_delivered(first.key, Outcome("sent", message_id="m-1"))
        (tmp_path / "optout.txt").write_text(f"{first.phone}\n")
        journal.sync_plan(plan_of(campaign))
        counts = journal.counts()
        rows = {r.key: r for r in journal.rows()}
    assert sum(counts.values()) == 5 and counts["sent"] == 1 and counts["skipped"] == 0
    assert rows[first.key].message_id == "m-1" and rows[first.key].row == first.row


def test_possibly_delivered_rows_end_unknown_never_failed_and_keep_their_first_request(tmp_path: Path) -> None:
    plan = plan_of(write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 3)))
    a, b, c = (r.key for r in plan.sendable)
    assert a is not None and b is not None and c is not None
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        journal.sync_plan(plan)
        journal.use_endpoint("https://chert.example/api/v1")
        for key in (a, b, c):
            journal.mark_sending(key, None, {"body": "first", "idempotency_key": key})
        journal.note_error(a, None, "ReadError", state="sending")  # the answer was lost
        journal.mark_sending(a, None, {"body": "second", "idempotency_key": a})
        assert journal.mark_failed(a, 3001, "internal error after 2 attempts") == "unknown"
        journal.note_error(b, 1007, "rate limited", state="pending")  # Chert said: not sent
        assert journal.mark_failed(b, 4098, "unknown effect") == "failed"
        assert journal.mark_failed(c, None, "ReadError after 6 attempts", outcome_unknown=True) == "unknown"
        assert journal.replay_payload(a) == {"body": "first", "idempotency_key": a}
        assert journal.replay_payload(b) is None
        assert journal.replay_keys() == {a, c}
        states = journal.states()
    assert (states[a], states[b], states[c]) == ("unknown", "failed", "unknown")


def test_attempts_on_another_sandbox_are_forgotten_but_a_real_apis_are_kept(tmp_path: Path) -> None:
    plan = plan_of(write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 2)))
    rehearsed, real = (r.key for r in plan.sendable)
    assert rehearsed is not None and real is not None
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        journal.sync_plan(plan)
        journal.use_endpoint("sandbox:old")
        journal.mark_sending(rehearsed, None, {"body": "x"})
        journal.mark_failed(rehearsed, None, "ReadError", outcome_unknown=True)
        journal.remember_attachment("/a.pdf", "00", "att_old", "sandbox:old")
        journal.use_endpoint("sandbox:new")  # the next rehearsal: a new sandbox, which saw nothing
        assert journal.states()[rehearsed] == "pending" and journal.replay_payload(rehearsed) is None
        assert journal.attachment_id("/a.pdf", "00", "sandbox:new") is None
        journal.use_endpoint("https://chert.example/api/v1")
        journal.mark_sending(real, None, {"body": "y"})
        journal.mark_failed(real, None, "ReadError", outcome_unknown=True)
        journal.use_endpoint("https://console.chert.example/api/v1")  # another URL for the same API
        assert journal.replay_payload(real) == {"body": "y"}
        journal.use_endpoint("sandbox:newer")  # a rehearsal on this journal: that sandbox saw nothing
        assert journal.replay_payload(real) is None and journal.states()[real] == "pending"


def test_a_local_attachment_counts_by_content_not_path(tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(b"one")
    contacts = write_contacts(tmp_path / "contacts.csv", 2)
    campaign = write_campaign(tmp_path, contacts, extra='[send]\nattachments = ["photo.png"]\n')
    plan = plan_of(campaign)
    before = message_hash(plan.sendable[0])
    (tmp_path / "photo.png").write_bytes(b"two")
    assert message_hash(plan.sendable[0]) != before
    first = plan.sendable[0]
    assert first.key is not None
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        (tmp_path / "photo.png").write_bytes(b"one")
        journal.sync_plan(plan)
        journal.mark_sending(first.key, None, first.payload({str((tmp_path / "photo.png").resolve()): "att_1"}))
        journal.mark_failed(first.key, None, "ReadError", outcome_unknown=True)
        (tmp_path / "photo.png").write_bytes(b"two")
        with pytest.raises(JournalError, match=r"1 recipient changed .*1 of them may already have been"):
            journal.sync_plan(plan)
        assert journal.sync_plan(plan, allow_changes=True).kept_original == 1


def test_a_0_1_0_path_hash_is_not_a_change(tmp_path: Path) -> None:
    folder = legacy_copy(tmp_path)
    (folder / "card.png").write_bytes(b"card")
    campaign = folder / "campaign.toml"
    campaign.write_text(campaign.read_text() + '\n[send]\nattachments = ["card.png"]\n')
    plan = plan_of(campaign)
    with Journal(folder / "journal.sqlite", "legacy-campaign") as journal:
        from chertcast.journal import _legacy_message_hash

        # as 0.1.0 journaled it, with the attachment counted by its path
        with journal.transaction():
            for recipient in plan.sendable:
                journal._db.execute(
                    "UPDATE recipients SET body_hash = ? WHERE key = ?",
                    (_legacy_message_hash(recipient), recipient.key),
                )
        journal.sync_plan(plan)  # no refusal for the row left 'sending'


def test_a_dry_run_sync_refuses_alike_and_writes_nothing(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 3)
    campaign = write_campaign(tmp_path, contacts)
    plan = plan_of(campaign)
    key = plan.sendable[0].key
    assert key is not None
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        journal.sync_plan(plan)
        journal.mark_sending(key, None, plan.sendable[0].payload())
    campaign.write_text(campaign.read_text().replace("Hi {{", "Hello {{"))
    changed = plan_of(campaign)
    with Journal.open_existing(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        with pytest.raises(JournalError, match="changed since it was attempted"):
            journal.sync_plan(changed, write=False)
        assert journal.sync_plan(changed, allow_changes=True, write=False).kept_original == 1
        assert [r.maybe_delivered for r in journal.rows()] == [False, False, False]  # nothing written


def _dump(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(db.iterdump())
    finally:
        db.close()
