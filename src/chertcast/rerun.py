"""Fast reruns: reuse the last check when no input changed.

Cron reruns ``send`` every few minutes; re-reading, normalising and rendering a million-row
sheet each time costs most of a minute before the first request. Each real ``send`` keeps in
its journal what its check produced (counts, and the sendable rows that may still be sent,
with their messages) beside a **fingerprint** of every input the check read:

- ``code``: chertcast's own source files and the versions of phonenumbers, polars, jinja2
  and fastexcel (a new parser or a new rule can read the same sheet differently);
- ``settings``: the campaign's effective settings (every key, paths resolved), the campaign
  file's location, ``--encoding``, and the time-zone database when a time-zone column is used;
- ``template``: the template file's bytes and those of every file it includes or imports;
- ``suppress:<path>``: each suppression list's bytes;
- ``optout:<path>``: the opt-out list's bytes (``absent`` before ``sync`` first writes it):
  ``sync`` appends to it between runs, and an opt-out added since the last run is honoured;
- ``attachment:<path>``: each campaign-wide local attachment's bytes;
- ``contacts``: the contact sheet's bytes.

When every part matches, ``send`` goes from the journal's own rows: no sheet is read, no
number parsed, no message rendered. The journal is still compared with the plan exactly as a
full check's sync would (a changed message is refused alike), but only for rows that can still
be sent. When only ``contacts``, suppression lists or the opt-out list differ, the sheet is
read and every row checked (so a newly listed number is suppressed as a full check would),
but rows whose cells (every phone column's and the template's) did not change take their
parsed numbers and rendered message from the stored per-row work (``check_work``; see
``preflight.RowWork``). Any other difference (the template, a campaign key, the code) means a
full check, as before. A row's phone column (``phone_column``) is stored with its message; a
link warning is a function of the stored message, and ``send`` prints no per-row warning.
The fingerprint is taken *before* the inputs are read, so an edit made while a check
runs is seen by the next run. A campaign whose
rows name their own attachments (``[columns] attachments``) is always checked in full: those
files are known only after reading the sheet.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import sqlite3
import zoneinfo
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from chertcast.campaign import Campaign
from chertcast.errors import ChertcastError, JournalError
from chertcast.journal import (
    RESENDABLE,
    UNFINISHED,
    Journal,
    KnownRow,
    _changed_message,
    compare_row,
    file_sha256,
    message_hash,
)
from chertcast.phones import PhoneResult
from chertcast.preflight import (
    AttachmentRef,
    EarlierWork,
    Plan,
    Recipient,
    campaign_attachments,
)
from chertcast.render import MessageTemplate, TemplateProblem

LIBRARIES = ("phonenumbers", "polars", "jinja2", "fastexcel")


@dataclass(frozen=True)
class Fingerprint:
    parts: dict[str, str]  # input name → sha256 of what the check reads from it

    def changed(self, stored: dict[str, str]) -> list[str]:
        """The parts that differ from ``stored`` (added, removed or edited)."""
        return sorted(name for name in self.parts.keys() | stored.keys() if self.parts.get(name) != stored.get(name))


def fingerprint(campaign: Campaign, encoding: str | None) -> Fingerprint | None:
    """Every input's digest, or None when the campaign cannot reuse a check (a full check then
    runs and reports whatever is wrong, in its own words)."""
    if campaign.columns.attachments is not None:
        return None
    try:
        parts = {"code": _code_digest(), "settings": _settings_digest(campaign, encoding)}
        if campaign.template is not None:
            parts["template"] = _template_digest(campaign)
        for path in campaign.suppress:
            parts[f"suppress:{path}"] = _file_digest(path)
        if campaign.opt_out_list is not None:  # `sync` appends to it between runs; may not exist yet
            path = campaign.opt_out_list
            parts[f"optout:{path}"] = _file_digest(path) if path.exists() else "absent"
        for ref in campaign_attachments(campaign):
            if ref.is_file:
                parts[f"attachment:{ref.value}"] = _file_digest(Path(ref.value))
        parts["contacts"] = _file_digest(campaign.contacts)
    except (OSError, ChertcastError, TemplateProblem):
        return None
    return Fingerprint(parts)


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _code_digest() -> str:
    digest = hashlib.sha256()
    package = Path(__file__).parent  # chertcast's own folder (importing the package here would be a cycle)
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes() + b"\0")
    for name in LIBRARIES:
        digest.update(f"{name}={importlib.metadata.version(name)}\0".encode())
    return digest.hexdigest()


def _settings_digest(campaign: Campaign, encoding: str | None) -> str:
    settings = {
        "campaign": campaign.model_dump(mode="json"),
        "source": str(campaign.source.resolve()),
        "encoding": encoding,
        "zones": sorted(zoneinfo.available_timezones()) if campaign.columns.timezone else None,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _template_digest(campaign: Campaign) -> str:
    assert campaign.template is not None
    folder = campaign.template.parent
    template = MessageTemplate(campaign.template_source()[0], str(campaign.template), folder)
    digest = hashlib.sha256(campaign.template.read_bytes())
    for name in sorted(template.included):
        digest.update(b"\0" + name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- storing


def forget(journal: Journal) -> None:
    """Drop the stored check, before the journal is synced with a new plan: a run that dies
    between the sync and :func:`remember` leaves no stored check that disagrees with the journal."""
    with journal.transaction():
        journal.connection().execute("DELETE FROM input_fingerprint")
        journal.connection().execute("DELETE FROM check_result")
        journal.connection().execute("DELETE FROM check_sendable")
        journal.connection().execute("DELETE FROM check_work")


def remember(journal: Journal, plan: Plan, print_: Fingerprint) -> None:
    """Keep what this check produced, right after the journal was synced with ``plan``.

    Only sendable rows that a later run may still send are kept (delivered rows never are):
    their message, and the hash a sync compares with the journal's."""
    db = journal.connection()
    resendable = {key for (key,) in db.execute(_KEYS_IN_STATES, RESENDABLE)}
    digests: dict[str, str] = {}

    def digest_of(path: str) -> str:
        if path not in digests:
            digests[path] = file_sha256(path)
        return digests[path]

    rows = [_stored(r, message_hash(r, digest_of)) for r in plan.sendable if r.key in resendable]
    (journal_rows,) = db.execute("SELECT COUNT(*) FROM recipients WHERE state != 'skipped'").fetchone()
    counts = json.dumps(dict(plan.counts()))
    with journal.transaction():
        db.execute("DELETE FROM check_sendable")
        db.executemany(f"INSERT INTO check_sendable ({_STORED_COLUMNS}) VALUES ({', '.join('?' * 13)})", rows)
        db.execute(
            "INSERT OR REPLACE INTO check_result VALUES (1, ?, ?, ?, ?)",
            (len(plan.recipients), counts, journal_rows, float(journal.now())),
        )
        db.execute("DELETE FROM input_fingerprint")
        db.executemany("INSERT INTO input_fingerprint VALUES (?, ?)", sorted(print_.parts.items()))


def keep_work(journal: Journal, plan: Plan) -> int:
    """Store the plan's per-row work (after :func:`forget`, before the sync) and drop it from the
    plan, so that it is not held in memory through the sync; returns how many rows it reused.
    It serves a later run only once :func:`remember` has written the fingerprint."""
    work, plan.work = plan.work, None
    if work is None:
        return 0
    frames = [("phones", _ipc(work.phones)), ("renders", _ipc(work.renders))]
    with journal.transaction():
        journal.connection().execute("DELETE FROM check_work")
        journal.connection().executemany("INSERT INTO check_work VALUES (?, ?)", frames)
    return work.reused


def _ipc(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="zstd")
    return buffer.getvalue()


def earlier_work(journal: Journal, print_: Fingerprint) -> EarlierWork | None:
    """The stored check's per-row work, when only the contact sheet changed since it was made."""
    try:
        stored = dict(journal.connection().execute("SELECT part, digest FROM input_fingerprint").fetchall())
        frames = dict(journal.connection().execute("SELECT name, frame FROM check_work").fetchall())
    except sqlite3.OperationalError:  # a journal written before stored checks existed (read-only)
        return None
    changed = print_.changed(stored)
    if not changed or not all(_per_row_work_kept(part) for part in changed):
        return None
    if frames.keys() != {"phones", "renders"}:
        return None
    phones = pl.read_ipc(io.BytesIO(frames["phones"]))
    known = {raw: PhoneResult(*values) for raw, *values in phones.iter_rows()}
    return EarlierWork(known, pl.read_ipc(io.BytesIO(frames["renders"])), tuple(changed))


def _per_row_work_kept(part: str) -> bool:
    """Whether a change to this input leaves the per-row work (parsed numbers, rendered messages)
    as it was: the sheet's rows are matched by their cells, and a suppression or opt-out list
    decides only which rows are sent, which a check redoes for every row."""
    return part == "contacts" or part.startswith(("suppress:", "optout:"))


_KEYS_IN_STATES = f"SELECT key FROM recipients WHERE state IN ({', '.join('?' * len(RESENDABLE))})"
_STORED_COLUMNS = (
    "key, row, raw_phone, phone, body, name, external_id, phone_line_id, effect, attachments, timezone, phone_column, "
    "digest"
)


def _stored(r: Recipient, digest: str) -> tuple[object, ...]:
    attachments = json.dumps([[a.value, a.is_file, a.shape, a.live_photo] for a in r.attachments])
    fields = (r.key, r.row, r.raw_phone, r.phone, r.body, r.name, r.external_id, r.phone_line_id, r.effect)
    return (*fields, attachments, r.timezone, r.phone_column, digest)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------- reusing


@dataclass
class Reused:
    """What a full check and sync would have given, read from the journal."""

    to_send: list[Recipient]
    already_done: int
    counts: Counter[str]
    total: int
    kept_original: int


def reuse(
    journal: Journal,
    print_: Fingerprint,
    *,
    allow_changes: bool = False,
    retry_failed: bool = False,
    write: bool = True,
) -> Reused | None:
    """The stored check, when every input matches it and the journal is as that check left it;
    None otherwise. Compares the journal with the stored plan as ``Journal.sync_plan`` does (a changed
    message is refused alike) for the rows that can still be sent, the only ones a sync can change
    when the plan is the same."""
    db = journal.connection()
    try:
        stored = dict(db.execute("SELECT part, digest FROM input_fingerprint").fetchall())
        summary = db.execute("SELECT total, counts, journal_rows FROM check_result WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # a journal written before stored checks existed (read-only)
        return None
    if not stored or summary is None or print_.changed(stored):
        return None
    total, counts_json, journal_rows = summary
    (now_rows,) = db.execute("SELECT COUNT(*) FROM recipients WHERE state != 'skipped'").fetchone()
    if now_rows != journal_rows:  # rows added or removed since that check: not its journal any more
        return None
    counts: Counter[str] = Counter(json.loads(counts_json))
    candidates, stale, updates, changed, kept = _compare(_resendable_rows(db), retry_failed)
    if changed and not allow_changes:
        raise JournalError(_changed_message(changed, kept))
    if write:
        now = journal.now()
        with journal.transaction():
            db.executemany("DELETE FROM recipients WHERE key = ?", [(k,) for k in stale])
            db.execute("UPDATE recipients SET maybe_delivered = 1 WHERE state = 'sending'")
            db.executemany(
                "UPDATE recipients SET row = ?, body_hash = ?, timezone = ?, updated_at = ? WHERE key = ?",
                [(r.row, body_hash, r.timezone, now, r.key) for r, body_hash in updates],
            )
        if retry_failed:
            journal.reset_failed()
    retry = RESENDABLE if retry_failed else UNFINISHED
    to_send = sorted((r for r, state in candidates if state in retry), key=lambda r: r.row)
    return Reused(to_send, counts["sendable"] - len(to_send), counts, int(total), kept)


def _resendable_rows(db: sqlite3.Connection) -> Iterable[tuple[Any, ...]]:
    """Journal rows a run may still send, each with its stored plan row (NULLs: not in the plan)."""
    return db.execute(
        "SELECT r.key, r.body_hash, r.state, r.attempts, r.row, r.maybe_delivered, r.timezone, c.digest, "
        "c.row, c.raw_phone, c.phone, c.body, c.name, c.external_id, c.phone_line_id, c.effect, c.attachments, "
        "c.timezone, c.phone_column FROM recipients r LEFT JOIN check_sendable c ON c.key = r.key "
        f"WHERE r.state IN ({', '.join('?' * len(RESENDABLE))})",
        RESENDABLE,
    )


def _compare(
    rows: Iterable[tuple[Any, ...]], retry_failed: bool
) -> tuple[list[tuple[Recipient, str]], list[str], list[tuple[Recipient, str]], list[Recipient], int]:
    """``Journal.sync_plan``'s comparison, row by row, for the rows a sync can change when the plan is the same."""
    candidates: list[tuple[Recipient, str]] = []
    stale: list[str] = []
    updates: list[tuple[Recipient, str]] = []
    changed: list[Recipient] = []
    kept = 0
    attachments: dict[str, tuple[AttachmentRef, ...]] = {}
    for key, body_hash, state, attempts, row, maybe, zone, digest, *planned in rows:
        if digest is None:  # not sendable in the plan: history kept, or a pending row the plan dropped
            if state == "pending" and not maybe:
                stale.append(key)
            continue
        plan_row, raw_phone, phone, body, name, external_id, line, effect, refs, plan_zone, column = planned
        if refs not in attachments:
            attachments[refs] = tuple(AttachmentRef(v, f, s, lp) for v, f, s, lp in json.loads(refs))
        recipient = Recipient(
            plan_row, raw_phone, phone, body, key, "sendable", "", name, external_id, line, effect,
            attachments[refs], plan_zone, column,
        )  # fmt: skip
        candidates.append((recipient, state))
        if body_hash == digest and row == plan_row and zone == plan_zone:
            continue  # the same message on the same row: nothing to compare or write
        previous = KnownRow(body_hash, state, attempts, row, bool(maybe), zone)
        decision = compare_row(recipient, digest, previous, retry_failed)
        if decision.changed:
            changed.append(recipient)
            kept += decision.kept_original
        if decision.body_hash is not None:
            updates.append((recipient, decision.body_hash))
    changed.sort(key=lambda r: r.row)
    return candidates, stale, updates, changed, kept
