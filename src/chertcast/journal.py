"""The SQLite journal: one row per planned recipient, its state, and what the API said.

States: ``pending → sending → sent | duplicate | failed``; rows the plan will never send
are ``skipped`` with their reason. A row is marked ``sending`` (committed) *before* its
request and gets its outcome (committed) *after* the answer, so after any crash a row is
either finished or will be sent again with the same idempotency key: the server answers
a repeat of a delivered request with the original response, and nobody is messaged twice.

Every transition is its own committed transaction (autocommit, WAL, synchronous=NORMAL):
a SIGKILL loses nothing; a power cut can lose the last few transitions, which only makes
those rows go out again *with the same key*, which is safe (see the module above).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chertcast.client import Outcome
from chertcast.errors import JournalError
from chertcast.preflight import Plan, Recipient

SCHEMA_VERSION = 1
FINAL = ("sent", "duplicate", "failed")
STATES = ("pending", "sending", "sent", "duplicate", "failed", "skipped")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recipients (
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
);
CREATE INDEX IF NOT EXISTS recipients_state ON recipients (state);
CREATE TABLE IF NOT EXISTS attachments (
    path TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    attachment_id TEXT NOT NULL,
    uploaded_at REAL NOT NULL,
    PRIMARY KEY (path, content_sha256)
);
"""


def message_hash(recipient: Recipient) -> str:
    """Hash of everything the request carries for this recipient (body, name, effect, ...)."""
    fields = [
        recipient.body,
        recipient.name,
        recipient.external_id,
        recipient.phone_line_id,
        recipient.effect,
        [(a.value, a.shape, a.live_photo) for a in recipient.attachments],
    ]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class JournalRow:
    key: str
    row: int
    phone: str | None
    state: str
    reason: str | None
    attempts: int
    error_code: int | None
    error_message: str | None
    message_id: str | None
    lead_id: str | None
    lead_created: bool | None
    convo_id: str | None
    phone_line_id: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class SyncResult:
    new: int
    changed_allowed: int


class Journal:
    """One campaign's journal file. Use as a context manager."""

    def __init__(self, path: Path, campaign_id: str, *, clock: Any = time.time, readonly: bool = False) -> None:
        self.path = path
        self._clock = clock
        try:
            if readonly:
                uri = f"file:{path.resolve()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
            self._db.execute("PRAGMA busy_timeout=5000")
            self._claim(campaign_id, readonly)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{path}: not a usable chertcast journal ({exc})") from None

    def _claim(self, campaign_id: str, readonly: bool) -> None:
        owner = self.meta("campaign_id")
        if owner is None and not readonly:
            now = str(self._clock())
            self._db.executemany(
                "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                [("campaign_id", campaign_id), ("schema_version", str(SCHEMA_VERSION)), ("created_at", now)],
            )
        elif owner is not None and owner != campaign_id:
            raise JournalError(
                f"{self.path} belongs to campaign {owner!r}, not {campaign_id!r}; use --journal to choose another file"
            )

    @classmethod
    def open_existing(cls, path: Path, campaign_id: str) -> Journal:
        if not path.exists():
            raise JournalError(f"{path}: no journal yet; nothing has been sent for this campaign")
        return cls(path, campaign_id, readonly=True)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ meta

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ plan

    def sync(self, plan: Plan, *, allow_changes: bool = False) -> SyncResult:
        """Bring the journal up to the plan in one transaction; refuse changed messages."""
        now = self._clock()
        known = {
            key: (body_hash, state, attempts, row)
            for key, body_hash, state, attempts, row in self._db.execute(
                "SELECT key, body_hash, state, attempts, row FROM recipients WHERE state != 'skipped'"
            )
        }
        inserts, updates, changed = [], [], []
        sendable_keys = set()
        for recipient in plan.recipients:
            if recipient.status != "sendable":
                continue
            assert recipient.key is not None
            sendable_keys.add(recipient.key)
            digest = message_hash(recipient)
            previous = known.get(recipient.key)
            if previous is None:
                inserts.append((recipient.key, recipient.row, recipient.phone, digest, "pending", now, now))
                continue
            if previous[0] != digest and (previous[1] != "pending" or previous[2] > 0):
                changed.append(recipient)
            if previous[0] != digest or previous[3] != recipient.row:  # only what moved or changed
                updates.append((recipient.row, digest, now, recipient.key))
        if changed and not allow_changes:
            rows = ", ".join(str(r.row) for r in changed[:10]) + (" …" if len(changed) > 10 else "")
            raise JournalError(
                f"the message for {len(changed)} recipient(s) changed since it was attempted "
                f"(sheet rows {rows}); they keep their idempotency keys, so Chert may refuse or "
                "ignore the new text. Rerun with --allow-changes to send the new text to those "
                "not yet delivered (delivered ones are never re-sent)"
            )
        stale = [
            k
            for k, (_, state, attempts, _row) in known.items()
            if k not in sendable_keys and state == "pending" and attempts == 0
        ]
        self._write_sync(plan, inserts, updates, stale, now)
        return SyncResult(new=len(inserts), changed_allowed=len(changed))

    def _write_sync(self, plan: Plan, inserts: list[Any], updates: list[Any], stale: list[str], now: float) -> None:
        skipped = [
            (f"skip:{r.row}", r.row, r.phone, f"{r.status}: {r.reason}", now, now)
            for r in plan.recipients
            if r.status != "sendable"
        ]
        with self.transaction():
            self._db.execute("DELETE FROM recipients WHERE state = 'skipped'")
            self._db.executemany("DELETE FROM recipients WHERE key = ?", [(k,) for k in stale])
            self._db.executemany(
                "INSERT INTO recipients (key, row, phone, body_hash, state, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                inserts,
            )
            self._db.executemany("UPDATE recipients SET row = ?, body_hash = ?, updated_at = ? WHERE key = ?", updates)
            self._db.executemany(
                "INSERT INTO recipients (key, row, phone, state, reason, created_at, updated_at) "
                "VALUES (?, ?, ?, 'skipped', ?, ?, ?)",
                skipped,
            )

    def transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # ----------------------------------------------------------- transitions

    def states(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        rows = self._db.execute("SELECT key, state FROM recipients WHERE state != 'skipped'")
        wanted = set(keys) if keys is not None else None
        return {k: s for k, s in rows if wanted is None or k in wanted}

    def mark_sending(self, key: str, line: str | None = None) -> None:
        """Committed before the request; a planned line is kept so a resume reuses it (same request)."""
        now = self._clock()
        self._db.execute(
            "UPDATE recipients SET state = 'sending', attempts = attempts + 1, updated_at = ?, "
            "first_attempt_at = COALESCE(first_attempt_at, ?), phone_line_id = COALESCE(?, phone_line_id) "
            "WHERE key = ?",
            (now, now, line, key),
        )

    def planned_lines(self) -> dict[str, str]:
        """Lines already used by attempted, unfinished rows: a resend must use the same one."""
        rows = self._db.execute(
            "SELECT key, phone_line_id FROM recipients WHERE state IN ('sending', 'pending') "
            "AND attempts > 0 AND phone_line_id IS NOT NULL"
        )
        return dict(rows.fetchall())

    def first_touch_history(self) -> list[tuple[str, float]]:
        """(line, time) of every first-touch send so far, and of unresolved attempts (conservative)."""
        rows = self._db.execute(
            "SELECT phone_line_id, COALESCE(finished_at, updated_at) FROM recipients WHERE phone_line_id IS NOT NULL "
            "AND ((state IN ('sent', 'duplicate') AND lead_created = 1) OR state = 'sending')"
        )
        return [(line, float(at)) for line, at in rows]

    def mark_delivered(self, key: str, outcome: Outcome) -> None:
        now = self._clock()
        self._db.execute(
            "UPDATE recipients SET state = ?, message_id = ?, lead_id = ?, lead_created = ?, "
            "convo_id = ?, phone_line_id = ?, error_code = NULL, error_message = NULL, "
            "updated_at = ?, finished_at = ? WHERE key = ?",
            (
                outcome.kind,
                outcome.message_id,
                outcome.lead_id,
                None if outcome.lead_created is None else int(outcome.lead_created),
                outcome.convo_id,
                outcome.phone_line_id,
                now,
                now,
                key,
            ),
        )
        self.set_meta("last_progress_at", str(now))

    def mark_failed(self, key: str, code: int | None, message: str) -> None:
        now = self._clock()
        self._db.execute(
            "UPDATE recipients SET state = 'failed', error_code = ?, error_message = ?, "
            "updated_at = ?, finished_at = ? WHERE key = ?",
            (code, message, now, now, key),
        )
        self.set_meta("last_progress_at", str(now))

    def note_error(self, key: str, code: int | None, message: str, *, state: str) -> None:
        """A non-final answer: remember it; ``state`` is 'pending' (not delivered) or 'sending' (unknown)."""
        self._db.execute(
            "UPDATE recipients SET state = ?, error_code = ?, error_message = ?, updated_at = ? WHERE key = ?",
            (state, code, message, self._clock(), key),
        )

    def reset_failed(self) -> int:
        cursor = self._db.execute(
            "UPDATE recipients SET state = 'pending', updated_at = ? WHERE state = 'failed'", (self._clock(),)
        )
        return cursor.rowcount

    # ------------------------------------------------------------ attachments

    def attachment_id(self, path: str, content_sha256: str) -> str | None:
        row = self._db.execute(
            "SELECT attachment_id FROM attachments WHERE path = ? AND content_sha256 = ?", (path, content_sha256)
        ).fetchone()
        return row[0] if row else None

    def remember_attachment(self, path: str, content_sha256: str, attachment_id: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO attachments VALUES (?, ?, ?, ?)",
            (path, content_sha256, attachment_id, self._clock()),
        )

    # ---------------------------------------------------------------- reading

    def rows(self) -> Iterator[JournalRow]:
        cursor = self._db.execute(
            "SELECT key, row, phone, state, reason, attempts, error_code, error_message, message_id, "
            "lead_id, lead_created, convo_id, phone_line_id, updated_at FROM recipients ORDER BY row"
        )
        for values in cursor:
            values = list(values)
            values[10] = None if values[10] is None else bool(values[10])
            yield JournalRow(*values)

    def counts(self) -> Counter[str]:
        return Counter(dict(self._db.execute("SELECT state, COUNT(*) FROM recipients GROUP BY state").fetchall()))

    def top_errors(self, limit: int = 5) -> list[tuple[int | None, str, int]]:
        return [
            (r[0], r[1], r[2])
            for r in self._db.execute(
                "SELECT error_code, MIN(error_message), COUNT(*) AS n FROM recipients "
                "WHERE error_message IS NOT NULL AND state != 'skipped' "
                "GROUP BY error_code ORDER BY n DESC LIMIT ?",
                (limit,),
            )
        ]


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
