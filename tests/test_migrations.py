"""Journal migrations: recorded by name, each atomic with its record, newer journals refused."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from chertcast.errors import JournalError
from chertcast.journal import Journal
from chertcast.migrations import MIGRATIONS, TABLE, Migrations, Step
from tests.conftest import DATA
from tests.helpers import run_cli

V010 = DATA / "journal_v010"


def _legacy(tmp_path: Path) -> Path:
    folder = tmp_path / "legacy"
    shutil.copytree(V010, folder)
    return folder / "journal.sqlite"


def _dump(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def _recorded(path: Path) -> list[tuple[str, int, float]]:
    db = sqlite3.connect(path)
    try:
        return list(db.execute(f"SELECT name, position, applied_at FROM {TABLE} ORDER BY position"))
    finally:
        db.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fresh(path: Path) -> None:
    Journal(path, "test-campaign", notice=_no_notice).close()


def _no_notice(text: str) -> None:
    raise AssertionError(f"unexpected notice: {text}")


def test_a_new_journal_gets_every_migration_recorded_in_order(tmp_path: Path) -> None:
    _fresh(tmp_path / "j.sqlite")
    recorded = _recorded(tmp_path / "j.sqlite")
    assert [(name, position) for name, position, _ in recorded] == [
        ("initial_schema_0_1_0", 1),
        ("unknown_outcomes_and_attachment_endpoints", 2),
        ("sync_outcomes_replies_and_cursor", 3),
        ("stored_check_for_fast_reruns", 4),
        ("follow_up_steps", 5),
    ]
    assert list(tmp_path.iterdir()) != [] and not list(tmp_path.glob("*backup*"))  # nothing to back up


def test_reopening_an_up_to_date_journal_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    _fresh(path)
    before, digest = _recorded(path), _sha(path)
    calls: list[str] = []
    spying = Migrations([Step(s.name, lambda db, name=s.name: calls.append(name)) for s in MIGRATIONS.steps])
    Journal(path, "test-campaign", migrations=spying, notice=_no_notice).close()
    with Journal.open_existing(path, "test-campaign") as journal:
        assert not journal.outdated
    assert calls == [] and _recorded(path) == before and _sha(path) == digest
    assert not list(tmp_path.glob("*backup*"))


def test_a_journal_from_before_the_migrations_table_is_recognised_by_its_shape(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    _fresh(path)
    db = sqlite3.connect(path)
    db.execute(f"DROP TABLE {TABLE}")  # as the schema-2 chertcast before this registry wrote it
    later_tables = ("outcomes", "sync_events", "sync_state", "input_fingerprint", "check_result", "check_sendable")
    for later in (*later_tables, "check_work", "follow_ups"):  # tables of migrations after schema 2
        db.execute(f"DROP TABLE {later}")
    db.commit()
    db.close()
    with Journal(path, "test-campaign", readonly=True) as journal:
        assert journal.outdated  # the record is missing, and the later migrations: a writer adds them
    notices: list[str] = []
    Journal(path, "test-campaign", notice=notices.append).close()
    assert [name for name, _, _ in _recorded(path)] == MIGRATIONS.names
    assert len(notices) == 1 and "from schema version 2" in notices[0]  # recognised as schema 2, not 0 or 1
    assert [p.name for p in tmp_path.glob("*backup*")] == ["j.backup-v2.sqlite"]


@pytest.mark.parametrize("step", MIGRATIONS.steps, ids=lambda s: s.name)
def test_each_migration_is_atomic_with_its_record(tmp_path: Path, step: Step) -> None:
    """A failure after a migration did all its work leaves the journal exactly as it was."""
    legacy = step.name != MIGRATIONS.names[0]  # the 0.1.0 journal already has the first migration
    path = _legacy(tmp_path) if legacy else tmp_path / "new.sqlite"
    before = _dump(path) if legacy else []

    def fails_at_the_end(db: sqlite3.Connection) -> None:
        step.apply(db)
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    broken = Migrations([s if s is not step else Step(s.name, fails_at_the_end) for s in MIGRATIONS.steps])
    with pytest.raises(JournalError, match=rf"at migration '{step.name}' .*undone.*as it was") as caught:
        Journal(path, "legacy-campaign", migrations=broken, notice=_no_notice)
    assert "\n" not in str(caught.value)
    if legacy:
        index = MIGRATIONS.steps.index(step)
        if index == 1:
            assert _dump(path) == before
        else:  # the steps before it stay applied, each whole with its record; this one is undone
            assert [name for name, _, _ in _recorded(path)] == MIGRATIONS.names[:index]
        assert "journal.backup-v1.sqlite" in str(caught.value)
    else:
        db = sqlite3.connect(path)
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
        db.close()
    Journal(path, "legacy-campaign", notice=lambda text: None).close()  # the real one then succeeds
    assert [name for name, _, _ in _recorded(path)] == MIGRATIONS.names


def test_a_journal_written_by_a_newer_chertcast_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "campaign.journal.sqlite"
    _fresh(path)
    db = sqlite3.connect(path)
    newer = len(MIGRATIONS.steps) + 1
    db.execute(f"INSERT INTO {TABLE} VALUES ('replies_and_events', {newer}, 0)")
    db.execute(f"UPDATE meta SET value = '{newer}' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    digest = _sha(path)
    for readonly in (False, True):
        with pytest.raises(JournalError) as caught:
            Journal(path, "test-campaign", readonly=readonly)
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{path}: written by a newer chertcast")
        assert "migration 'replies_and_events' is unknown" in message and "upgrade chertcast" in message
    assert _sha(path) == digest


def test_a_higher_schema_version_alone_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    _fresh(path)
    db = sqlite3.connect(path)
    db.execute(f"DROP TABLE {TABLE}")  # a newer chertcast that keeps its record elsewhere
    db.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    known = len(MIGRATIONS.steps)
    with pytest.raises(JournalError, match=rf"schema version 7 is unknown to chertcast .*knows schema version {known}"):
        Journal.open_existing(path, "test-campaign")


def test_the_cli_refuses_a_newer_journal_with_one_line_and_exit_2(tmp_path: Path) -> None:
    from tests.helpers import write_campaign, write_contacts

    campaign = write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 2))
    path = tmp_path / "campaign.journal.sqlite"
    _fresh(path)
    db = sqlite3.connect(path)
    db.execute(f"INSERT INTO {TABLE} VALUES ('opt_outs', {len(MIGRATIONS.steps) + 1}, 0)")
    db.commit()
    db.close()
    for command in (["status"], ["report", "--out", tmp_path / "out.csv"], ["send", "--dry-run"]):
        result = run_cli(command[0], campaign, *command[1:])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line]
        assert len(lines) == 1 and "written by a newer chertcast" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "out.csv").exists()


def test_a_migration_name_is_registered_once() -> None:
    registry = Migrations()

    @registry
    def add_column(db: sqlite3.Connection) -> None:
        """A migration."""

    with pytest.raises(ValueError, match="registered twice"):
        registry(add_column)
    assert registry.names == ["add_column"]
