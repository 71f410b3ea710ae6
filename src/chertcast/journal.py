"""The SQLite journal: one row per recipient, its state, and what the API said.

States: ``pending → sending → sent | duplicate | failed | unknown``; rows the plan will never
send are ``skipped`` with their reason. A row is marked ``sending`` (committed) *before* its
request and gets its outcome (committed) *after* the answer, so after any crash a row is
either finished or will be sent again with the same idempotency key: the server answers
a repeat of a delivered request with the original response, and nobody is messaged twice.

An attempt whose request may have reached Chert without an answer we could read (a dropped
connection, a gateway timeout, a crash mid-request) leaves the row *maybe delivered*: the
journal keeps the exact request of its first attempt (``sent_payload``) and every later
attempt, in this run or the next, resends exactly that under the same key, so Chert's replay
tells the truth. Such a row is never ``failed``: when its retries run out it is ``unknown``
("outcome unknown") and the next run resolves it. Only a row known to be undelivered (an
error answer from Chert) may get a new message.

Every transition is its own committed transaction (autocommit, WAL, synchronous=NORMAL):
a SIGKILL loses nothing; a power cut can lose the last few transitions, which only makes
those rows go out again *with the same key*, which is safe (see above).

The schema is the list of named migrations in ``migrations.py``, each recorded in the journal
in the same transaction as its changes. Opening a journal written by an older chertcast (0.1.0
included) first copies it beside itself (``<name>.backup-v<version>.sqlite``, said once on
stderr) and then applies what it lacks; a journal written by a newer chertcast is refused
before anything is written.

One ``send`` at a time per journal: ``runlock.py`` holds an exclusive lock on
``<journal>.lock`` for the whole run (taken before the journal is read); readers such as
``status`` and ``report`` need no lock (WAL lets them read while a run writes). Migrations
take SQLite's write lock (BEGIN IMMEDIATE) one at a time, so two processes opening one old
journal together apply each migration once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from chertcast.client import Outcome
from chertcast.errors import InputError, JournalError
from chertcast.migrations import MIGRATIONS, Migrations
from chertcast.preflight import Plan, Recipient

STATES = ("pending", "sending", "unknown", "sent", "duplicate", "failed", "skipped")
UNFINISHED = ("pending", "sending", "unknown")  # resent, with the same key, by the next run
DELIVERED = ("sent", "duplicate")
RESENDABLE = (*UNFINISHED, "failed")  # what a later run may still send (failed ones with --retry-failed)
SANDBOX_ENDPOINT = "sandbox:"  # prefix of a built-in sandbox's endpoint: new with every run


def file_sha256(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the attachment: {exc.strerror}") from None


def message_hash(recipient: Recipient, file_digest: Callable[[str], str] = file_sha256) -> str:
    """Hash of everything the request carries for this recipient (body, name, effect, ...).

    A local attachment counts by its *content*: the same path with new bytes is a new message.
    """
    return _hash(recipient, lambda path: "sha256:" + file_digest(path))


def _legacy_message_hash(recipient: Recipient) -> str:
    """chertcast 0.1.0's hash, which counted a local attachment by its path (kept to read its journals)."""
    return _hash(recipient, lambda path: path)


def _hash(recipient: Recipient, file_identity: Callable[[str], str]) -> str:
    fields = [
        recipient.body,
        recipient.name,
        recipient.external_id,
        recipient.phone_line_id,
        recipient.effect,
        [(file_identity(a.value) if a.is_file else a.value, a.shape, a.live_photo) for a in recipient.attachments],
    ]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()[:32]


def _to_stderr(text: str) -> None:
    print(f"chertcast: {text}", file=sys.stderr, flush=True)


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
    timezone: str | None = None  # the row's own time-zone column, for quiet hours
    maybe_delivered: bool = False  # an attempt may have been delivered: resent only as first sent


@dataclass(frozen=True, slots=True)
class PlanSync:
    """What syncing the journal with the plan found."""

    new: int  # sendable rows the journal did not know yet
    states: dict[str, str]  # key → state of every row the journal now holds (skipped rows aside)
    kept_original: int = 0  # changed in the sheet, but maybe delivered: resent as first sent


class KnownRow(NamedTuple):
    body_hash: str | None
    state: str
    attempts: int
    row: int
    maybe_delivered: bool
    timezone: str | None


class RowDecision(NamedTuple):
    changed: bool  # the message changed since it was attempted, and it would be sent again
    kept_original: bool  # ... and it may have been delivered: resent with its first message
    body_hash: str | None  # the hash to write when the row must be updated, else None


def compare_row(recipient: Recipient, digest: str, previous: KnownRow, retry_failed: bool) -> RowDecision:
    """One known row against the plan's message (``digest``): changed or not, and what to write."""
    same = previous.body_hash == digest or (
        any(a.is_file for a in recipient.attachments) and previous.body_hash == _legacy_message_hash(recipient)
    )
    resent = previous.state in UNFINISHED or (previous.state == "failed" and retry_failed)
    attempted = previous.attempts > 0 or previous.state != "pending"
    changed = not same and resent and attempted
    kept = changed and (previous.maybe_delivered or previous.state in ("sending", "unknown"))
    # a delivered message, or one attempted and not sent this run, keeps the hash of what was attempted
    held = previous.state in DELIVERED or (not same and attempted and not resent)
    body_hash = previous.body_hash if held else digest
    moved = (recipient.row, body_hash, recipient.timezone) != (previous.row, previous.body_hash, previous.timezone)
    return RowDecision(changed, kept, body_hash if moved else None)


class Journal:
    """One campaign's journal file. Use as a context manager."""

    def __init__(
        self,
        path: Path,
        campaign_id: str,
        *,
        clock: Any = time.time,
        readonly: bool = False,
        migrations: Migrations = MIGRATIONS,
        notice: Callable[[str], None] = _to_stderr,
    ) -> None:
        self.path = path
        self.endpoint: str | None = None  # where this run sends; see use_endpoint()
        self._clock = clock
        try:
            if readonly:
                uri = f"file:{path.resolve()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA busy_timeout=5000")
                self.outdated = migrations.status(self._db, path).needs_writing
            else:
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA busy_timeout=5000")
                self._migrate(migrations, notice)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self.outdated = False
            self._claim(campaign_id, readonly)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{path}: not a usable chertcast journal ({exc})") from None
        except JournalError:
            self._db.close()
            raise

    def _migrate(self, migrations: Migrations, notice: Callable[[str], None]) -> None:
        status = migrations.status(self._db, self.path)
        backup = None
        if status.pending and status.has_data:
            backup = self._backup(status.version)
        try:
            applied = migrations.upgrade(self._db, self.path)
        except JournalError as exc:
            if backup is None:
                raise
            raise JournalError(f"{exc}; a copy from before the upgrade is {backup}") from None
        if backup is not None and not applied:  # another process upgraded it meanwhile (and said so)
            backup.unlink()
        elif backup is not None:
            notice(
                f"upgraded {self.path} from schema version {status.version} (an older chertcast) to "
                f"{len(migrations.steps)}; a copy of it as it was is {backup}"
            )

    def _backup(self, version: int) -> Path:
        """A consistent copy (WAL included) beside the journal, named for the user to see."""
        stem = self.path.name.removesuffix(".sqlite")
        target = self.path.with_name(f"{stem}.backup-v{version}.sqlite")
        number = 1
        while target.exists():
            number += 1
            target = self.path.with_name(f"{stem}.backup-v{version}-{number}.sqlite")
        copy = sqlite3.connect(target)
        try:
            self._db.backup(copy)
        finally:
            copy.close()
        return target

    def _claim(self, campaign_id: str, readonly: bool) -> None:
        owner = self.meta("campaign_id")
        if owner is None and not readonly:
            now = str(self._clock())
            self._db.executemany(
                "INSERT OR IGNORE INTO meta VALUES (?, ?)", [("campaign_id", campaign_id), ("created_at", now)]
            )
        elif owner is not None and owner != campaign_id:
            raise JournalError(
                f"{self.path} belongs to campaign {owner!r}, not {campaign_id!r}; use --journal to choose another file"
            )

    @classmethod
    def open_existing(cls, path: Path, campaign_id: str) -> Journal:
        """Read-only; a journal written by an older chertcast is upgraded first (once)."""
        if not path.exists():
            rehearsal = path.with_name(path.name.removesuffix(".journal.sqlite") + ".sandbox.journal.sqlite")
            hint = (
                " (a --sandbox rehearsal's journal exists: add --sandbox to read it)"
                if rehearsal != path and path.name.endswith(".journal.sqlite") and rehearsal.exists()
                else ""
            )
            raise JournalError(f"{path}: no journal yet; nothing has been sent for this campaign{hint}")
        journal = cls(path, campaign_id, readonly=True)
        if journal.outdated:
            journal.close()
            try:
                cls(path, campaign_id).close()
            except JournalError as exc:
                raise JournalError(f"{exc}; it was written by an older chertcast and must be upgraded") from None
            journal = cls(path, campaign_id, readonly=True)
        return journal

    def close(self) -> None:
        self._db.close()

    def now(self) -> float:
        return float(self._clock())

    def connection(self) -> sqlite3.Connection:
        """For modules that keep their own tables in the journal (``sync``, ``rerun``, ``followups``)."""
        return self._db

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

    def sync_plan(
        self, plan: Plan, *, allow_changes: bool = False, retry_failed: bool = False, write: bool = True
    ) -> PlanSync:
        """Bring the journal up to the plan in one transaction; refuse changed messages.

        Rows are matched by key (who the recipient is), never by sheet row. A delivered row is
        never a reason to refuse: its history stays as it was sent. ``write=False`` (a dry run)
        runs every check and writes nothing.
        """
        now = self._clock()
        known = {
            key: KnownRow(body_hash, state, attempts, row, bool(maybe), zone)
            for key, body_hash, state, attempts, row, maybe, zone in self._db.execute(
                "SELECT key, body_hash, state, attempts, row, maybe_delivered, timezone FROM recipients "
                "WHERE state != 'skipped'"
            )
        }
        digests: dict[str, str] = {}

        def digest_of(path: str) -> str:
            if path not in digests:
                digests[path] = file_sha256(path)
            return digests[path]

        inserts, updates, changed = [], [], []
        kept_original = 0
        for recipient in plan.sendable:
            assert recipient.key is not None
            digest = message_hash(recipient, digest_of)
            previous = known.get(recipient.key)
            if previous is None:
                inserts.append(
                    (recipient.key, recipient.row, recipient.phone, digest, recipient.timezone, "pending", now, now)
                )
                continue
            decision = compare_row(recipient, digest, previous, retry_failed)
            if decision.changed:
                changed.append(recipient)
                kept_original += decision.kept_original
            if decision.body_hash is not None:
                updates.append((recipient.row, decision.body_hash, recipient.timezone, now, recipient.key))
        if changed and not allow_changes:
            raise JournalError(_changed_message(changed, kept_original))
        sendable_keys = {r.key for r in plan.sendable}
        stale = {
            k for k, v in known.items() if k not in sendable_keys and v.state == "pending" and not v.maybe_delivered
        }
        moves, skipped = self._unsendable(plan, known.keys() - stale - sendable_keys, now)
        if write:
            self._write_sync(inserts, updates, moves, skipped, stale, now)
        states = {k: v.state for k, v in known.items() if k not in stale} | {r[0]: "pending" for r in inserts}
        return PlanSync(len(inserts), states, kept_original)

    @staticmethod
    def _unsendable(plan: Plan, history: set[str], now: float) -> tuple[list[Any], list[Any]]:
        """Rows not sent this time. A recipient with history (sent, unknown, failed) keeps its journal
        row, moved to the sheet row it is on now; any other such row is journaled as skipped."""
        moves, skipped = [], []
        for recipient in plan.recipients:
            if recipient.status == "sendable":
                continue
            if recipient.key in history:
                history.discard(recipient.key)  # the first sheet row of that number carries it
                moves.append((recipient.row, now, recipient.key))
                continue
            skipped.append(
                (
                    f"skip:{recipient.row}",
                    recipient.row,
                    recipient.phone,
                    f"{recipient.status}: {recipient.reason}",
                    now,
                    now,
                )
            )
        return moves, skipped

    def _write_sync(
        self, inserts: list[Any], updates: list[Any], moves: list[Any], skipped: list[Any], stale: set[str], now: float
    ) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM recipients WHERE state = 'skipped'")
            self._db.executemany("DELETE FROM recipients WHERE key = ?", [(k,) for k in stale])
            # rows found 'sending' were in flight when a run ended: they may have been delivered
            self._db.execute("UPDATE recipients SET maybe_delivered = 1 WHERE state = 'sending'")
            self._db.executemany(
                "INSERT INTO recipients (key, row, phone, body_hash, timezone, state, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                inserts,
            )
            self._db.executemany(
                "UPDATE recipients SET row = ?, body_hash = ?, timezone = ?, updated_at = ? WHERE key = ?", updates
            )
            self._db.executemany(
                "UPDATE recipients SET row = ?, updated_at = ? WHERE key = ? AND row != ?",
                [(row, at, key, row) for row, at, key in moves],
            )
            self._db.executemany(
                "INSERT INTO recipients (key, row, phone, state, reason, created_at, updated_at) "
                "VALUES (?, ?, ?, 'skipped', ?, ?, ?)",
                skipped,
            )

    def transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # ----------------------------------------------------------- transitions

    def states(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, state FROM recipients WHERE state != 'skipped'").fetchall())

    def use_endpoint(self, endpoint: str) -> None:
        """Say where this run sends (a base URL, or ``sandbox:<id>`` for a built-in sandbox).

        A built-in sandbox lives only as long as its run: what earlier attempts sent to another
        sandbox (or to a real API, when this run is a rehearsal) cannot have reached this one,
        so those rows are plain pending rows here, sent with the current message.
        """
        self.endpoint = endpoint
        self._db.execute(
            "UPDATE recipients SET state = CASE WHEN state IN ('sending', 'unknown') THEN 'pending' ELSE state END, "
            "maybe_delivered = 0, sent_payload = NULL, sent_endpoint = NULL, updated_at = ? "
            "WHERE state IN ('pending', 'sending', 'unknown', 'failed') AND sent_endpoint IS NOT NULL "
            "AND sent_endpoint != ? AND (sent_endpoint LIKE 'sandbox:%' OR ? LIKE 'sandbox:%')",
            (self._clock(), endpoint, endpoint),
        )

    def replay_payload(self, key: str) -> dict[str, Any] | None:
        """The exact request of the first attempt, when that attempt may have been delivered."""
        row = self._db.execute(
            "SELECT sent_payload FROM recipients WHERE key = ? AND maybe_delivered = 1 AND sent_payload IS NOT NULL",
            (key,),
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def replay_keys(self) -> set[str]:
        rows = self._db.execute(
            "SELECT key FROM recipients WHERE maybe_delivered = 1 AND sent_payload IS NOT NULL "
            "AND state IN ('pending', 'sending', 'unknown')"
        )
        return {key for (key,) in rows}

    def mark_sending(self, key: str, line: str | None = None, payload: dict[str, Any] | None = None) -> None:
        """Committed before the request. The first attempt's request is kept (a resend must repeat it),
        and a planned line too, so a resume reuses it."""
        now = self._clock()
        raw = None if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        self._db.execute(
            "UPDATE recipients SET state = 'sending', attempts = attempts + 1, updated_at = ?, "
            "first_attempt_at = COALESCE(first_attempt_at, ?), phone_line_id = COALESCE(?, phone_line_id), "
            "sent_endpoint = CASE WHEN sent_payload IS NULL THEN ? ELSE sent_endpoint END, "
            "sent_payload = COALESCE(sent_payload, ?) WHERE key = ?",
            (now, now, line, self.endpoint, raw, key),
        )

    def planned_lines(self) -> dict[str, str]:
        """Lines already used by attempted, unfinished rows: a resend must use the same one."""
        rows = self._db.execute(
            "SELECT key, COALESCE(json_extract(sent_payload, '$.phone_line_id'), phone_line_id) AS line "
            "FROM recipients WHERE state IN ('sending', 'pending', 'unknown') AND attempts > 0 AND line IS NOT NULL"
        )
        return dict(rows.fetchall())

    def first_touch_history(self, since: float = 0.0) -> list[tuple[str, float]]:
        """(line, time) of every first-touch send from ``since`` on, and of unresolved attempts
        (conservative). Planning needs only today's and the last gap's (``outlook.history_since``):
        a journal of a million sends replays a few hundred, not a million."""
        rows = self._db.execute(
            "SELECT phone_line_id, at FROM (SELECT phone_line_id, COALESCE(finished_at, updated_at) AS at "
            "FROM recipients WHERE phone_line_id IS NOT NULL "
            "AND ((state IN ('sent', 'duplicate') AND lead_created = 1) OR state IN ('sending', 'unknown'))) "
            "WHERE at >= ?",
            (since,),
        )
        return [(line, float(at)) for line, at in rows]

    def first_touch_lines(self) -> list[str]:
        """Every line a first touch (or an unresolved attempt) went out on, ever."""
        rows = self._db.execute(
            "SELECT DISTINCT phone_line_id FROM recipients WHERE phone_line_id IS NOT NULL "
            "AND ((state IN ('sent', 'duplicate') AND lead_created = 1) OR state IN ('sending', 'unknown'))"
        )
        return sorted(line for (line,) in rows)

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

    def mark_failed(self, key: str, code: int | None, message: str, *, outcome_unknown: bool = False) -> str:
        """Retries are spent; returns the state written.

        A row that this or any earlier attempt may have delivered (``outcome_unknown``, or journaled
        so) is ``unknown``, never ``failed``: the next run resends its first request with the same key.
        """
        now = self._clock()
        self._db.execute(
            "UPDATE recipients SET maybe_delivered = maybe_delivered OR :unknown, "
            "state = CASE WHEN maybe_delivered OR :unknown THEN 'unknown' ELSE 'failed' END, "
            "sent_payload = CASE WHEN maybe_delivered OR :unknown THEN sent_payload END, "
            "sent_endpoint = CASE WHEN maybe_delivered OR :unknown THEN sent_endpoint END, "
            "finished_at = CASE WHEN maybe_delivered OR :unknown THEN NULL ELSE :now END, "
            "error_code = :code, error_message = :message, updated_at = :now WHERE key = :key",
            {"unknown": outcome_unknown, "code": code, "message": message, "now": now, "key": key},
        )
        self.set_meta("last_progress_at", str(now))
        row = self._db.execute("SELECT state FROM recipients WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else "failed"

    def note_error(self, key: str, code: int | None, message: str, *, state: str) -> None:
        """A non-final answer: remember it. ``state`` is 'sending' when this attempt may have been
        delivered, 'pending' when it was not; a row that an earlier attempt may have delivered stays
        'sending' (its outcome is still unknown) and keeps its first request."""
        self._db.execute(
            "UPDATE recipients SET maybe_delivered = maybe_delivered OR :unknown, "
            "state = CASE WHEN maybe_delivered OR :unknown THEN 'sending' ELSE 'pending' END, "
            "sent_payload = CASE WHEN maybe_delivered OR :unknown THEN sent_payload END, "
            "sent_endpoint = CASE WHEN maybe_delivered OR :unknown THEN sent_endpoint END, "
            "error_code = :code, error_message = :message, updated_at = :now WHERE key = :key",
            {"unknown": state == "sending", "code": code, "message": message, "now": self._clock(), "key": key},
        )

    def reset_failed(self) -> int:
        cursor = self._db.execute(
            "UPDATE recipients SET state = 'pending', updated_at = ? WHERE state = 'failed'", (self._clock(),)
        )
        return cursor.rowcount

    # ------------------------------------------------------------ attachments

    def attachment_id(self, path: str, content_sha256: str, endpoint: str) -> str | None:
        """The id this file's content got at ``endpoint``; an upload by chertcast 0.1.0 (endpoint not
        recorded) counts for a real API, never for a built-in sandbox (gone with its run)."""
        row = self._db.execute(
            "SELECT attachment_id FROM attachments WHERE path = ? AND content_sha256 = ? "
            "AND (endpoint = ? OR (endpoint IS NULL AND ? NOT LIKE 'sandbox:%')) ORDER BY endpoint IS NULL LIMIT 1",
            (path, content_sha256, endpoint, endpoint),
        ).fetchone()
        return row[0] if row else None

    def remember_attachment(self, path: str, content_sha256: str, attachment_id: str, endpoint: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO attachments (endpoint, path, content_sha256, attachment_id, uploaded_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (endpoint, path, content_sha256, attachment_id, self._clock()),
        )

    # ---------------------------------------------------------------- reading

    def rows(self) -> Iterator[JournalRow]:
        cursor = self._db.execute(
            "SELECT key, row, phone, state, reason, attempts, error_code, error_message, message_id, "
            "lead_id, lead_created, convo_id, phone_line_id, updated_at, timezone, maybe_delivered "
            "FROM recipients ORDER BY row"
        )
        for values in cursor:
            values = list(values)
            values[10] = None if values[10] is None else bool(values[10])
            values[15] = bool(values[15])
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


def _changed_message(changed: list[Recipient], kept_original: int) -> str:
    rows = ", ".join(str(r.row) for r in changed[:10]) + (" …" if len(changed) > 10 else "")
    kept = (
        f"; {kept_original} of them may already have been delivered and would be resent with their original message"
        if kept_original
        else ""
    )
    who = "1 recipient" if len(changed) == 1 else f"{len(changed)} recipients"
    return (
        f"the message for {who} changed since it was attempted (sheet rows {rows}){kept}. "
        "Rerun with --allow-changes to send the new text to those known not to have received a message "
        "(delivered ones are never re-sent)"
    )


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
