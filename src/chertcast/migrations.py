"""The journal's schema, as a list of named migrations (after sqlite-utils' ``Migrations``).

Each migration is one function of the connection, registered with ``@MIGRATIONS`` below, in
order; its name (the function's name) is recorded in the ``chertcast_migrations`` table in the
same transaction as its changes, so a journal has either both or neither, whatever happens.
The journal's ``schema_version`` (meta) is the number of migrations it has.

To change the schema: add one decorated function at the end of this file, executing its
statements one by one with ``db.execute`` (never ``executescript``, which commits). Never edit
or rename a migration that has shipped: journals out there have recorded its name.

Journals from before this table existed are recognised by their shape: 0.1.0's (schema 1) has
the first migration, a later one (schema 2, with ``maybe_delivered``) the first two. A journal
that records a migration this chertcast does not know, or a higher version, was written by a
newer chertcast and is refused before anything is written.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from chertcast.errors import JournalError

Migration = Callable[[sqlite3.Connection], None]
TABLE = "chertcast_migrations"


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    apply: Migration


@dataclass(frozen=True, slots=True)
class Status:
    """Where one journal stands against a registry (read without writing)."""

    recorded: tuple[str, ...]  # names in the table, or recognised by shape in an older journal
    pending: tuple[Step, ...]
    has_table: bool  # False: an empty file, or a journal from before the table existed
    has_data: bool  # a journal with recipients (worth a backup before it changes)

    @property
    def version(self) -> int:
        return len(self.recorded)

    @property
    def needs_writing(self) -> bool:
        return bool(self.pending) or (self.has_data and not self.has_table)


class Migrations:
    """An ordered registry of named migrations; ``@registry`` adds one."""

    def __init__(self, steps: Sequence[Step] = ()) -> None:
        self.steps: list[Step] = list(steps)

    def __call__(self, fn: Migration) -> Migration:
        if any(step.name == fn.__name__ for step in self.steps):
            raise ValueError(f"migration {fn.__name__!r} is registered twice")
        self.steps.append(Step(fn.__name__, fn))
        return fn

    @property
    def names(self) -> list[str]:
        return [step.name for step in self.steps]

    def status(self, db: sqlite3.Connection, path: Path) -> Status:
        """Read where the journal stands; refuse one written by a newer chertcast."""
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        has_data = "recipients" in tables
        if TABLE in tables:
            recorded = tuple(name for (name,) in db.execute(f"SELECT name FROM {TABLE} ORDER BY position"))
        else:
            recorded = tuple(self.names[: _version_by_shape(db, tables)])
        unknown = [name for name in recorded if name not in self.names]
        stated = _stated_version(db, tables)
        if unknown or stated > len(self.steps) or len(recorded) > len(self.steps):
            raise JournalError(_newer_message(path, max(stated, len(recorded)), unknown, len(self.steps)))
        pending = tuple(step for step in self.steps if step.name not in recorded)
        return Status(recorded, pending, TABLE in tables, has_data)

    def upgrade(self, db: sqlite3.Connection, path: Path) -> list[str]:
        """Apply every pending migration, each in one transaction with its record; returns the names
        this call applied (none when another process applied them while this one waited)."""
        before = self.status(db, path)
        applied: list[str] = []
        if before.has_data and not before.has_table and not before.pending:
            with _immediate(db):
                self._adopt(db, before)
        for step in before.pending:
            try:
                with _immediate(db):
                    self._adopt(db, before)
                    if step.name in self._recorded(db):
                        continue  # another process applied it while we waited for the lock
                    step.apply(db)
                    self._record(db, step)
                applied.append(step.name)
            except (sqlite3.Error, JournalError, ValueError) as exc:
                raise JournalError(
                    f"{path}: could not upgrade the journal at migration {step.name!r} ({exc}); "
                    "that migration was undone and the journal is as it was before it"
                ) from None
        return applied

    def _adopt(self, db: sqlite3.Connection, before: Status) -> None:
        """Create the table and record what an older journal already has (idempotent)."""
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            "(name TEXT PRIMARY KEY, position INTEGER NOT NULL UNIQUE, applied_at REAL NOT NULL)"
        )
        if not before.has_table:
            db.executemany(
                f"INSERT OR IGNORE INTO {TABLE} VALUES (?, ?, ?)",
                [(name, self.names.index(name) + 1, time.time()) for name in before.recorded],
            )

    @staticmethod
    def _recorded(db: sqlite3.Connection) -> set[str]:
        return {name for (name,) in db.execute(f"SELECT name FROM {TABLE}")}

    def _record(self, db: sqlite3.Connection, step: Step) -> None:
        position = self.names.index(step.name) + 1
        db.execute(f"INSERT INTO {TABLE} VALUES (?, ?, ?)", (step.name, position, time.time()))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(position),))


class _immediate:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK when anything in between raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _version_by_shape(db: sqlite3.Connection, tables: set[str]) -> int:
    """How many migrations a journal from before the migrations table has: 0, 1 (0.1.0) or 2."""
    if "recipients" not in tables:
        return 0
    columns = {row[1] for row in db.execute("PRAGMA table_info(recipients)")}
    return 2 if "maybe_delivered" in columns else 1


def _stated_version(db: sqlite3.Connection, tables: set[str]) -> int:
    if "meta" not in tables:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        return int(row[0]) if row else 0
    except ValueError:
        return 0


def _newer_message(path: Path, stated: int, unknown: list[str], known: int) -> str:
    what = f"migration {unknown[0]!r}" if unknown else f"schema version {stated}"
    return (
        f"{path}: written by a newer chertcast ({what} is unknown to chertcast {_our_version()}, "
        f"which knows schema version {known}); upgrade chertcast to use this journal"
    )


def _our_version() -> str:
    try:
        return version("chertcast")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return "(source)"


# ---------------------------------------------------------------------------------- migrations

MIGRATIONS = Migrations()

_V1_RECIPIENT_COLUMNS = """
    key TEXT PRIMARY KEY,
    row INTEGER NOT NULL,
    phone TEXT,
    body_hash TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending','sending','sent','duplicate','failed','skipped')),
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_code INTEGER,
    error_message TEXT,
    message_id TEXT,
    lead_id TEXT,
    lead_created INTEGER,
    convo_id TEXT,
    phone_line_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    first_attempt_at REAL,
    finished_at REAL
"""


@MIGRATIONS
def initial_schema_0_1_0(db: sqlite3.Connection) -> None:
    """chertcast 0.1.0's journal (schema 1), exactly as it wrote it."""
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(f"CREATE TABLE recipients ({_V1_RECIPIENT_COLUMNS})")
    db.execute("CREATE INDEX recipients_state ON recipients (state)")
    db.execute(
        "CREATE TABLE attachments (path TEXT NOT NULL, content_sha256 TEXT NOT NULL, "
        "attachment_id TEXT NOT NULL, uploaded_at REAL NOT NULL, PRIMARY KEY (path, content_sha256))"
    )


_V2_RECIPIENT_COLUMNS = """
    key TEXT PRIMARY KEY,
    row INTEGER NOT NULL,
    phone TEXT,
    body_hash TEXT,
    state TEXT NOT NULL
        CHECK (state IN ('pending','sending','unknown','sent','duplicate','failed','skipped')),
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_code INTEGER,
    error_message TEXT,
    message_id TEXT,
    lead_id TEXT,
    lead_created INTEGER,
    convo_id TEXT,
    phone_line_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    first_attempt_at REAL,
    finished_at REAL,
    timezone TEXT,
    maybe_delivered INTEGER NOT NULL DEFAULT 0,
    sent_payload TEXT,
    sent_endpoint TEXT
"""
_V1_COLUMN_NAMES = (
    "key, row, phone, body_hash, state, reason, attempts, error_code, error_message, message_id, lead_id, "
    "lead_created, convo_id, phone_line_id, created_at, updated_at, first_attempt_at, finished_at"
)


@MIGRATIONS
def unknown_outcomes_and_attachment_endpoints(db: sqlite3.Connection) -> None:
    """Schema 2. The state list grew ('unknown'), which a CHECK constraint pins, so the table is
    rebuilt (SQLite's documented procedure); a row 0.1.0 left 'sending' may have been delivered;
    each row keeps the first request of an attempt that may have been delivered, where it went,
    and its own time zone. Attachments gained the endpoint they were uploaded to (NULL: uploaded
    by 0.1.0 to an endpoint it did not record)."""
    db.execute("ALTER TABLE recipients RENAME TO recipients_v1")
    db.execute(f"CREATE TABLE recipients ({_V2_RECIPIENT_COLUMNS})")
    db.execute(f"INSERT INTO recipients ({_V1_COLUMN_NAMES}) SELECT {_V1_COLUMN_NAMES} FROM recipients_v1")
    db.execute("UPDATE recipients SET maybe_delivered = 1 WHERE state = 'sending'")
    db.execute("DROP TABLE recipients_v1")
    db.execute("CREATE INDEX recipients_state ON recipients (state)")
    db.execute("ALTER TABLE attachments RENAME TO attachments_v1")
    db.execute(
        "CREATE TABLE attachments (endpoint TEXT, path TEXT NOT NULL, content_sha256 TEXT NOT NULL, "
        "attachment_id TEXT NOT NULL, uploaded_at REAL NOT NULL, UNIQUE (endpoint, path, content_sha256))"
    )
    db.execute(
        "INSERT INTO attachments (path, content_sha256, attachment_id, uploaded_at) "
        "SELECT path, content_sha256, attachment_id, uploaded_at FROM attachments_v1"
    )
    db.execute("DROP TABLE attachments_v1")


@MIGRATIONS
def sync_outcomes_replies_and_cursor(db: sqlite3.Connection) -> None:
    """What ``chertcast sync`` learns after the send: each recipient's delivery, read receipt,
    replies and opt-out (``outcomes``); every reply event seen, by its id, so none counts twice
    (``sync_events``); and where the event log was left (``sync_state``: the cursor)."""
    db.execute(
        """
        CREATE TABLE outcomes (
            key TEXT PRIMARY KEY,
            status TEXT,
            delivered_at REAL,
            read_at REAL,
            status_error TEXT,
            checked_at REAL,
            replied_at REAL,
            reply TEXT,
            replies INTEGER NOT NULL DEFAULT 0,
            opted_out INTEGER NOT NULL DEFAULT 0,
            needs_review INTEGER NOT NULL DEFAULT 0,
            opt_out_at REAL,
            opt_out_text TEXT,
            listed INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    db.execute(
        """
        CREATE TABLE sync_events (
            event_id TEXT PRIMARY KEY,
            lead_id TEXT,
            key TEXT,
            created_at REAL,
            verdict TEXT,
            text TEXT,
            seen_at REAL NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE sync_state (name TEXT PRIMARY KEY, value TEXT)
        """
    )


@MIGRATIONS
def stored_check_for_fast_reruns(db: sqlite3.Connection) -> None:
    """What ``send`` keeps of its last check, to skip re-checking unchanged inputs
    (``chertcast.rerun``): the inputs' fingerprint (``input_fingerprint``), the check's counts
    (``check_result``), the sendable rows a later run may still send (``check_sendable``) and its
    per-row work (phones, messages) as Arrow IPC frames (``check_work``), for a rerun whose sheet
    changed. A cache: emptied before every sync, rebuilt after it."""
    db.execute("CREATE TABLE input_fingerprint (part TEXT PRIMARY KEY, digest TEXT NOT NULL)")
    db.execute(
        """
        CREATE TABLE check_result (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            total INTEGER NOT NULL,
            counts TEXT NOT NULL,
            journal_rows INTEGER NOT NULL,
            checked_at REAL NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE check_sendable (
            key TEXT PRIMARY KEY,
            row INTEGER NOT NULL,
            raw_phone TEXT NOT NULL,
            phone TEXT NOT NULL,
            body TEXT NOT NULL,
            name TEXT,
            external_id TEXT,
            phone_line_id TEXT,
            effect TEXT,
            attachments TEXT NOT NULL,
            timezone TEXT,
            phone_column TEXT,
            digest TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE TABLE check_work (name TEXT PRIMARY KEY, frame BLOB NOT NULL)")


@MIGRATIONS
def follow_up_steps(db: sqlite3.Connection) -> None:
    """One row per recipient and follow-up step (2, 3, …): its own key, state and delivery, written
    before its request leaves (``chertcast.followups``); step 1 stays in ``recipients``."""
    db.execute(
        """
            CREATE TABLE follow_ups (
                key TEXT NOT NULL,
                step INTEGER NOT NULL CHECK (step >= 2),
                step_key TEXT NOT NULL UNIQUE,
                state TEXT NOT NULL CHECK (state IN ('sending','sent','duplicate','failed')),
                attempts INTEGER NOT NULL DEFAULT 0,
                error_code INTEGER,
                error_message TEXT,
                message_id TEXT,
                phone_line_id TEXT,
                payload TEXT NOT NULL,
                status TEXT,
                delivered_at REAL,
                checked_at REAL,
                sent_at REAL,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                PRIMARY KEY (key, step)
            )
        """
    )
