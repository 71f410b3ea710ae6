"""After the send: delivery status, replies and opt-outs, fetched from Chert into the journal.

``sync`` does three things, each safe to interrupt at any moment:

1. **Replies** — ``GET /events?type=message.received`` page by page from the stored cursor
   (SPEC §12). Each page's events (``event_id`` as primary key, insert-or-ignore) and the new
   cursor are committed in one transaction, so a SIGKILL loses no page and counts none twice;
   a rerun re-reads at most the last page and changes nothing. Replies are attributed by
   ``lead_id`` (never by phone: the payload need not carry it); a reply whose lead is not in
   the journal yet (a `send` still running) is kept and attributed when it is.
2. **Opt-outs** — each reply is classified (``optout.classify``); opt-outs and replies that
   merely contain an opt-out word are marked in the journal, then *projected* into the shared
   opt-out list (the journal is the truth; a line not yet written is written by the next sync).
3. **Status** — ``GET /messages/{id}`` for sent messages that are not final yet, paced by the
   campaign's token bucket, honouring 429 ``retry_after``; results are committed in batches
   (a status fetched twice is simply the same status).

Chert documents no delivery event (SPEC §9), so status costs one request per message that is
not final; ``read`` and ``failed`` are final, and so is ``delivered`` once
``READ_WATCH_S`` has passed (read receipts are the recipient's choice; most never come).
"""

from __future__ import annotations

import fcntl
import random
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx

from chertcast import optout
from chertcast.campaign import Campaign
from chertcast.client import ChertClient, Lookup, Outcome, Secret
from chertcast.errors import ChertcastError
from chertcast.journal import Journal
from chertcast.pacing import Clock, RealClock, TokenBucket

PAGE_LIMIT = 200  # the most SPEC §12 allows: fewest requests
READ_WATCH_S = 3 * 86_400.0  # a delivered message is polled for its read receipt this long
GIVE_UP_S = 7 * 86_400.0  # a message still `sent` after this is not polled any more
SINCE_OVERLAP_S = 60.0  # resuming by time re-reads this much (deduped): `since` may be exclusive
BATCH = 200  # status results per commit
MAX_RETRY_AFTER_S = 300.0  # a longer retry_after ends this sync (exit 3); what it fetched is kept
FINAL = ("read", "failed")


class SyncRunning(ChertcastError):
    """Another sync of this journal is running; not a failure (cron met the last one)."""

    exit_code = 0


class SyncFailed(ChertcastError):
    """Chert kept refusing or could not be reached; what was fetched so far is kept."""

    exit_code = 3


@dataclass
class SyncStats:
    event_pages: int = 0
    events_new: int = 0
    events_repeated: int = 0
    replies_new: int = 0
    opt_outs_new: int = 0
    review_new: int = 0
    list_added: int = 0
    status_checked: int = 0
    status_requests: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.event_pages + self.status_requests


def parse_time(value: object, fallback: float) -> float:
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return fallback


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reply_text(event: Mapping[str, Any]) -> str:
    """The inbound message's text parts, joined by line breaks (media parts have none)."""
    payload = event.get("payload")
    data = payload.get("data") if isinstance(payload, dict) else None
    message = data.get("message") if isinstance(data, dict) else None
    parts = message.get("parts") if isinstance(message, dict) else None
    if not isinstance(parts, list):
        return ""
    texts = [str(p.get("value", "")) for p in parts if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(t for t in texts if t)


def event_lead(event: Mapping[str, Any]) -> str | None:
    lead = event.get("lead_id")
    if isinstance(lead, str) and lead:
        return lead
    payload = event.get("payload")
    data = payload.get("data") if isinstance(payload, dict) else None
    chat = data.get("chat") if isinstance(data, dict) else None
    value = chat.get("id") if isinstance(chat, dict) else None
    return value if isinstance(value, str) and value else None


@contextmanager
def sync_lock(journal_path: Path) -> Iterator[None]:
    path = journal_path.with_name(journal_path.name + ".sync.lock")
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SyncRunning(f"another sync holds {path}; this one leaves it to finish (exit 0)") from None
        yield


class Syncer:
    """One sync of one campaign's journal against one Chert endpoint."""

    def __init__(
        self,
        campaign: Campaign,
        journal: Journal,
        client: ChertClient,
        *,
        clock: Clock | None = None,
        rate: float | None = None,
        page_size: int = PAGE_LIMIT,
    ) -> None:
        self.campaign = campaign
        self.journal = journal
        self.db = journal.connection()
        self.client = client
        self.clock = clock or RealClock()
        settings = campaign.send
        self.bucket = TokenBucket(rate or settings.rate, settings.burst, self.clock)
        self.concurrency = settings.concurrency
        self.max_attempts = settings.max_attempts
        self.max_backoff_s = settings.max_backoff_s
        self.stats = SyncStats()
        self.stopped: str | None = None  # why this sync ends early (a long retry_after)
        self.page_size = page_size

    # ------------------------------------------------------------------ run

    async def run(self) -> SyncStats:
        self.project_opt_outs()  # lines a killed sync committed but did not write yet
        await self.sync_replies()
        self.project_opt_outs()
        await self.sync_statuses()
        self.journal.set_meta("last_sync_at", str(self.clock.wall()))
        return self.stats

    async def _get(self, fetch: Any, *args: Any) -> Lookup:
        """One paced lookup with retries: 429/5xx/network retried, ``retry_after`` honoured."""
        last: Outcome | None = None
        for attempt in range(1, self.max_attempts + 1):
            await self.bucket.acquire()
            result: Lookup = await fetch(*args)
            if result.failure is None:
                return result
            last = result.failure
            self.stats.errors[_label(last)] = self.stats.errors.get(_label(last), 0) + 1
            if last.retry_after is not None and last.retry_after > MAX_RETRY_AFTER_S:
                # a long pause is better spent by the next sync (cron) than waiting here
                self.stopped = f"Chert asked to wait {last.retry_after:,.0f} s ({_describe(last)})"
                return result
            if not last.retryable or attempt == self.max_attempts:
                return result
            self.stats.retries += 1
            if last.retry_after is not None:
                self.bucket.pause(last.retry_after)  # everyone waits, not just this task
                continue
            await self.clock.sleep(min(self.max_backoff_s, 0.25 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
        assert last is not None
        return Lookup(failure=last)

    # -------------------------------------------------------------- replies

    def _state(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM sync_state WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _leads(self) -> dict[str, str]:
        rows = self.db.execute("SELECT lead_id, key FROM recipients WHERE lead_id IS NOT NULL")
        return dict(rows.fetchall())

    def _first_send(self) -> float | None:
        row = self.db.execute(
            "SELECT MIN(COALESCE(first_attempt_at, finished_at)) FROM recipients WHERE message_id IS NOT NULL"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def sync_replies(self) -> None:
        leads = self._leads()
        if not leads:
            return
        self._attribute_late_leads()  # events a killed sync stored before their lead was known
        cursor = self._state("cursor")
        stored = self._state("newest")
        newest = float(stored) if stored else None
        while True:
            params = {"type": "message.received", "limit": str(self.page_size)}
            if cursor is not None:
                params["cursor"] = cursor
            else:  # first sync: no reply to this campaign predates its first send
                start = newest if newest is not None else (self._first_send() or self.clock.wall())
                params["since"] = iso(max(0.0, start - SINCE_OVERLAP_S))
            result = await self._get(self.client.get_events, params)
            self.stats.event_pages += 1
            if result.failure is not None:
                if cursor is not None and result.failure.http_status == 400:  # a cursor Chert no longer knows
                    cursor = None
                    continue
                why = self.stopped or _describe(result.failure)
                raise SyncFailed(f"reading replies (GET /events): {why}; what was read is saved: run sync again later")
            assert result.data is not None
            events = [e for e in result.data.get("events") or [] if isinstance(e, dict)]
            next_cursor = result.data.get("next_cursor")
            next_cursor = next_cursor if isinstance(next_cursor, str) and next_cursor else None
            # at the end of the log, keep this page's cursor: the next sync re-reads it (deduped)
            newest = self._commit_page(events, leads, next_cursor or cursor, newest)
            if next_cursor is None or not events:  # the end of the log, for now
                break
            cursor = next_cursor
        self._attribute_late_leads()

    def _attribute_late_leads(self) -> None:
        """Replies read before their lead was journaled (a `send` running meanwhile records the
        lead when Chert answers) are attributed now: no reply is lost to that race."""
        leads = self._leads()
        rows = self.db.execute(
            "SELECT event_id, lead_id, created_at, text FROM sync_events WHERE key IS NULL AND lead_id IS NOT NULL"
        ).fetchall()
        late = [(e, leads[lead], at, text or "") for e, lead, at, text in rows if lead in leads]
        if not late:
            return
        with self.journal.transaction():
            for event_id, key, at, text in late:
                verdict = optout.classify(text)
                self.db.execute(
                    "UPDATE sync_events SET key = ?, verdict = ? WHERE event_id = ?", (key, verdict, event_id)
                )
                self._record_reply(key, at, text, verdict)

    def _commit_page(
        self, events: Sequence[Mapping[str, Any]], leads: Mapping[str, str], resume: str | None, newest: float | None
    ) -> float | None:
        """Store a page's events and where to resume, in one transaction."""
        now = self.clock.wall()
        with self.journal.transaction():
            for event in events:
                event_id = event.get("event_id") or event.get("id")
                if not isinstance(event_id, str) or not event_id:
                    continue
                at = parse_time(event.get("created_at"), now)
                newest = at if newest is None else max(newest, at)
                lead = event_lead(event)
                key = leads.get(lead) if lead else None
                text = reply_text(event)
                verdict = optout.classify(text) if key else None
                inserted = self.db.execute(
                    "INSERT OR IGNORE INTO sync_events VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (event_id, lead, key, at, verdict, text, now),
                ).rowcount
                if not inserted:
                    self.stats.events_repeated += 1
                    continue
                self.stats.events_new += 1
                if key is not None and verdict is not None:
                    self._record_reply(key, at, text, verdict)
            state = [("cursor", resume), ("newest", None if newest is None else repr(newest))]
            self.db.executemany("INSERT OR REPLACE INTO sync_state VALUES (?, ?)", state)
        return newest

    def _record_reply(self, key: str, at: float, text: str, verdict: optout.Verdict) -> None:
        self.stats.replies_new += 1
        self.db.execute("INSERT OR IGNORE INTO outcomes (key) VALUES (?)", (key,))
        self.db.execute(
            "UPDATE outcomes SET replies = replies + 1, "
            "reply = CASE WHEN replied_at IS NULL OR :at < replied_at THEN :text ELSE reply END, "
            "replied_at = MIN(COALESCE(replied_at, :at), :at) WHERE key = :key",
            {"at": at, "text": text, "key": key},
        )
        if verdict == "opt_out":
            changed = self.db.execute(
                "UPDATE outcomes SET opted_out = 1, needs_review = 0, opt_out_at = :at, opt_out_text = :text, "
                "listed = CASE WHEN needs_review = 1 THEN listed ELSE 0 END WHERE key = :key AND opted_out = 0",
                {"at": at, "text": text, "key": key},
            ).rowcount
            self.stats.opt_outs_new += changed
        elif verdict == "review":
            changed = self.db.execute(
                "UPDATE outcomes SET needs_review = 1, opt_out_at = :at, opt_out_text = :text, listed = 0 "
                "WHERE key = :key AND opted_out = 0 AND needs_review = 0",
                {"at": at, "text": text, "key": key},
            ).rowcount
            self.stats.review_new += changed

    def project_opt_outs(self) -> None:
        """Write opt-outs the journal holds and the list lacks (after a crash, too)."""
        path = self.campaign.opt_out_list
        if path is None:
            return
        optout.ensure(path)
        rows = self.db.execute(
            "SELECT o.key, r.phone, o.opt_out_at, o.opt_out_text, o.needs_review FROM outcomes o "
            "JOIN recipients r ON r.key = o.key WHERE (o.opted_out = 1 OR o.needs_review = 1) AND o.listed = 0 "
            "AND r.phone IS NOT NULL"
        ).fetchall()
        if not rows:
            return
        entries = [
            optout.Entry(phone, at, self.campaign.id, text or "", bool(review)) for _, phone, at, text, review in rows
        ]
        self.stats.list_added += optout.merge(path, entries, self.campaign.default_region)
        with self.journal.transaction():
            self.db.executemany("UPDATE outcomes SET listed = 1 WHERE key = ?", [(key,) for key, *_ in rows])

    # --------------------------------------------------------------- status

    def due_for_status(self) -> list[tuple[str, str]]:
        """(key, message_id) of sent messages whose status may still change."""
        now = self.clock.wall()
        rows = self.db.execute(
            "SELECT r.key, r.message_id, COALESCE(r.finished_at, r.updated_at), o.status, o.delivered_at "
            "FROM recipients r LEFT JOIN outcomes o ON o.key = r.key "
            "WHERE r.state IN ('sent', 'duplicate') AND r.message_id IS NOT NULL"
        )
        due = []
        for key, message_id, sent_at, status, delivered_at in rows:
            if status in FINAL:
                continue
            if status == "delivered" and delivered_at is not None and now - delivered_at > READ_WATCH_S:
                continue
            if status in (None, "sent") and now - float(sent_at) > GIVE_UP_S:
                continue
            due.append((key, message_id))
        return due

    async def sync_statuses(self, *, undelivered_only: bool = False) -> None:
        """``undelivered_only``: just the messages not known delivered yet (follow-ups wait on those)."""
        due = self.due_for_status()
        if undelivered_only:
            known = {k for (k,) in self.db.execute("SELECT key FROM outcomes WHERE delivered_at IS NOT NULL")}
            due = [(key, message_id) for key, message_id in due if key not in known]
        results: list[tuple[str, Lookup]] = []
        queue = iter(due)
        failures: list[Outcome] = []

        async def worker() -> None:
            for key, message_id in queue:
                if self.stopped:
                    return
                result = await self._get(self.client.get_message, message_id)
                self.stats.status_requests += 1
                results.append((key, result))
                if result.failure is not None and result.failure.retryable:
                    failures.append(result.failure)
                if len(results) >= BATCH:
                    self._commit_statuses(results)

        async with anyio.create_task_group() as group:
            for _ in range(min(self.concurrency, max(1, len(due)))):
                group.start_soon(worker)
        self._commit_statuses(results)
        if self.stopped:
            raise SyncFailed(f"{self.stopped}; replies and the statuses fetched so far are saved: run sync again later")
        if failures:
            raise SyncFailed(
                f"{len(failures):,} message status(es) could not be fetched ({_describe(failures[-1])}); "
                "replies and the other statuses are saved: run sync again"
            )

    def _commit_statuses(self, results: list[tuple[str, Lookup]]) -> None:
        if not results:
            return
        now = self.clock.wall()
        batch = results[:]
        results.clear()
        with self.journal.transaction():
            for key, result in batch:
                self.db.execute("INSERT OR IGNORE INTO outcomes (key) VALUES (?)", (key,))
                if result.failure is not None:
                    self.db.execute(
                        "UPDATE outcomes SET status_error = ?, checked_at = ? WHERE key = ?",
                        (_describe(result.failure), now, key),
                    )
                    continue
                assert result.data is not None
                message = result.data.get("message")
                message = message if isinstance(message, dict) else {}
                status = message.get("status") if isinstance(message.get("status"), str) else None
                delivered = parse_time(message.get("delivered_at"), 0.0) or None
                read = parse_time(message.get("read_at"), 0.0) or None
                error = message.get("error_message") if status == "failed" else None
                self.db.execute(
                    "UPDATE outcomes SET status = ?, delivered_at = COALESCE(?, delivered_at), "
                    "read_at = COALESCE(?, read_at), status_error = ?, checked_at = ? WHERE key = ?",
                    (status, delivered, read, error, now, key),
                )
                self.stats.status_checked += 1


def _label(outcome: Outcome) -> str:
    if outcome.code is not None:
        return str(outcome.code)
    return f"HTTP {outcome.http_status}" if outcome.http_status else outcome.kind


def _describe(outcome: Outcome) -> str:
    status = f"HTTP {outcome.http_status}" if outcome.http_status else outcome.kind
    code = f", code {outcome.code}" if outcome.code is not None else ""
    return f"{status}{code}: {outcome.message}"[:300]


# ------------------------------------------------------------------ reading


def outcome_counts(journal: Journal) -> dict[str, Any]:
    """delivered, read, replied, opted_out, needs_review (and shares of sent) for `status`."""
    db = journal.connection()
    sent = db.execute("SELECT COUNT(*) FROM recipients WHERE state IN ('sent', 'duplicate')").fetchone()[0]
    counts = {"delivered": 0, "read": 0, "failed_after_send": 0, "replied": 0, "opted_out": 0, "needs_review": 0}
    if _has_outcomes(db):
        row = db.execute(
            "SELECT SUM(status IN ('delivered', 'read') OR delivered_at IS NOT NULL), SUM(status = 'read'), "
            "SUM(status = 'failed'), SUM(replies > 0), SUM(opted_out), SUM(needs_review) FROM outcomes"
        ).fetchone()
        counts = dict(zip(counts, (int(v or 0) for v in row), strict=True))
    shares = {f"{name}_share": round(value / sent, 4) if sent else None for name, value in counts.items()}
    last = journal.meta("last_sync_at")
    return {**counts, **shares, "last_sync_at": _iso_or_blank(float(last or 0)) or None}


OUTCOME_HEADERS = ("delivered_at", "read_at", "replied_at", "reply", "opted_out", "delivery")


@dataclass(frozen=True, slots=True)
class AfterSend:
    """What ``sync`` knows of one recipient after the send: the report's outcome columns
    (``OUTCOME_HEADERS``, in that order) and, when delivery failed, Chert's reason."""

    delivered_at: str = ""
    read_at: str = ""
    replied_at: str = ""
    reply: str = ""
    opted_out: str = ""  # "yes", "review" or ""
    delivery: str = ""  # Chert's status at the last lookup: sent, delivered, read, failed; "" never looked up
    delivery_error: str = ""  # Chert's error_message when delivery failed

    @property
    def failed_delivery(self) -> bool:
        """Chert accepted the message (the journal says sent) and then could not deliver it."""
        return self.delivery == "failed"

    def cells(self) -> tuple[str, ...]:
        return (self.delivered_at, self.read_at, self.replied_at, self.reply, self.opted_out, self.delivery)


def outcomes_by_key(journal: Journal) -> dict[str, AfterSend]:
    """key → what sync recorded of that recipient, for the report."""
    db = journal.connection()
    if not _has_outcomes(db):
        return {}
    rows = db.execute(
        "SELECT key, delivered_at, read_at, replied_at, reply, opted_out, needs_review, status, status_error "
        "FROM outcomes"
    )
    out: dict[str, AfterSend] = {}
    for key, delivered, read, replied, reply, opted, review, status, error in rows:
        flag = "yes" if opted else "review" if review else ""
        out[key] = AfterSend(
            _iso_or_blank(delivered),
            _iso_or_blank(read),
            _iso_or_blank(replied),
            reply or "",
            flag,
            status or "",
            (error or "") if status == "failed" else "",
        )
    return out


def _iso_or_blank(value: float | None) -> str:
    return datetime.fromtimestamp(value, tz=UTC).isoformat(timespec="seconds") if value else ""


def _has_outcomes(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outcomes'").fetchone()
    return row is not None


# ------------------------------------------------------------------ entry point


@dataclass
class SyncResult:
    stats: SyncStats
    counts: dict[str, Any]
    seconds: float
    journal: Path
    opt_out_list: Path | None = None  # the campaign's, None when it names none


def run_sync(
    campaign: Campaign,
    journal_path: Path,
    base_url: str,
    secret: Secret,
    *,
    rate: float | None = None,
    clock: Clock | None = None,
    page_size: int = PAGE_LIMIT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SyncResult:
    """Sync one campaign's journal with Chert (or a sandbox at ``base_url``)."""
    if not journal_path.exists():
        raise ChertcastError(f"{journal_path}: no journal yet; nothing has been sent for this campaign")
    started = time.monotonic()

    async def go() -> SyncResult:
        settings = campaign.send
        limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
        timeout = httpx.Timeout(settings.timeout_s, connect=10.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout, transport=transport) as http:
            api = campaign.api
            client = ChertClient(http, base_url, secret, auth=api.auth, tenant=api.tenant)
            with Journal(journal_path, campaign.id) as journal:
                syncer = Syncer(campaign, journal, client, clock=clock, rate=rate, page_size=page_size)
                stats = await syncer.run()
                counts = outcome_counts(journal)
        return SyncResult(stats, counts, time.monotonic() - started, journal_path, campaign.opt_out_list)

    with sync_lock(journal_path):
        return anyio.run(go)


def sent_messages(journal_path: Path, campaign_id: str) -> list[tuple[str, str, str, float]]:
    """(phone, message_id, lead_id, sent at) of every message the journal knows was sent."""
    with Journal.open_existing(journal_path, campaign_id) as journal:
        rows = journal.connection().execute(
            "SELECT phone, message_id, lead_id, COALESCE(finished_at, updated_at) FROM recipients "
            "WHERE state IN ('sent', 'duplicate') AND message_id IS NOT NULL AND lead_id IS NOT NULL"
        )
        return [(phone or "", message_id, lead_id, float(at)) for phone, message_id, lead_id, at in rows]
