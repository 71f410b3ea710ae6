"""``send``'s pipeline: plan → journal → uploads → engine → result (the public face is ``chertcast.api``)."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from chertcast import rerun
from chertcast.campaign import Campaign, load_campaign
from chertcast.capacity import LinePlanner
from chertcast.client import ChertClient, Secret, UnsafeUploadURL
from chertcast.decide import STOP_CODES, RetryPolicy
from chertcast.engine import Engine, EngineSettings, Progress, RunHooks, RunResult, RunStats
from chertcast.errors import CampaignStopped
from chertcast.followups import FollowUps, FollowUpStats, refresh_replies
from chertcast.journal import RESENDABLE, SANDBOX_ENDPOINT, UNFINISHED, Journal, PlanSync
from chertcast.outlook import (
    LINES_META,
    CapacityFacts,
    CapacityOutlook,
    capacity_rules,
    capacity_snapshot,
    history_since,
    outlook,
    quiet_hours,
)
from chertcast.pacing import Clock, RealClock
from chertcast.preflight import EarlierWork, Plan, Recipient, build_plan, campaign_attachments
from chertcast.runlock import RunLock
from chertcast.schedule import Scheduler


@dataclass
class SendOptions:
    dry_run: bool = False
    sandbox: bool = False
    limit: int | None = None
    rate: float | None = None
    concurrency: int | None = None
    journal: Path | None = None
    allow_changes: bool = False
    retry_failed: bool = False
    encoding: str | None = None
    grace_s: float = 30.0
    handle_signals: bool = True
    wait: bool = False
    yes: bool = False  # confirmed on the command line (kept in the printed resume command)


@dataclass
class Prepared:
    """Everything decided before the first request: the plan, the journal, the work."""

    campaign: Campaign
    plan: Plan | None  # None: no input changed, so the journal's stored check was reused (chertcast.rerun)
    journal_path: Path
    to_send: list[Recipient]
    already_done: int
    new_rows: int
    rate: float
    concurrency: int
    lock: RunLock | None = None  # a real send holds the journal's run lock until execute() ends

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    kept_original: int = 0  # changed in the sheet but maybe delivered: resent with their first message
    status_counts: Counter[str] = field(default_factory=Counter)  # the check's rows by status
    rows_read: int = 0  # the sheet's data rows
    rows_reused: int = 0  # only the sheet or a list changed: rows whose numbers and messages came from the last check
    changed_inputs: tuple[str, ...] = ()  # ... and which inputs changed (chertcast.rerun's parts)

    @property
    def reused_check(self) -> bool:
        return self.plan is None

    step_plans: dict[int, Plan] = field(default_factory=dict)  # follow-up steps (2, 3, …), when any
    planned_at: float = 0.0  # epoch seconds the plan (and its estimate) were made
    outlook: CapacityOutlook | None = None  # the calendar for to_send (None: capacity planning off)
    journal_counts: dict[str, int] = field(default_factory=dict)  # the journal's rows by state, as planned


@dataclass
class SendResult:
    prepared: Prepared
    run: RunResult | None
    sandbox_deliveries: int | None = None
    elapsed_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    follow_ups: FollowUpStats | None = None


def journal_path_for(campaign: Campaign, options: SendOptions) -> Path:
    if options.journal is not None:
        return options.journal
    if options.sandbox:  # a rehearsal never marks real recipients as sent
        return campaign.source.with_name(f"{campaign.source.stem}.sandbox.journal.sqlite")
    return campaign.default_journal


def prepare(campaign_path: Path, options: SendOptions, now: float | None = None) -> Prepared:
    """The plan, checked against the journal, at ``now`` (epoch seconds; default: the wall clock).
    A dry run runs the very same checks (a changed message is refused alike) and writes nothing."""
    campaign = load_campaign(campaign_path)
    if options.sandbox:
        campaign = campaign.rehearsal()
    path = journal_path_for(campaign, options)
    # One run per journal, taken before anything is read for planning or written: a second
    # run (cron) leaves at once instead of planning the same rows (runlock.AlreadyRunning).
    lock = None if options.dry_run else RunLock(path).acquire()
    try:
        prepared = _prepare(campaign, path, options, lock)
        return _with_outlook(prepared, time.time() if now is None else now)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _prepare(campaign: Campaign, path: Path, options: SendOptions, lock: RunLock | None) -> Prepared:
    rate = options.rate or campaign.send.rate
    concurrency = options.concurrency or campaign.send.concurrency
    # Taken before any input is read: an edit made while this run checks is seen by the next one.
    # A campaign with follow-up steps is checked in full each run (its steps' templates are not
    # part of the fingerprint).
    inputs = None if campaign.follow_up else rerun.fingerprint(campaign, options.encoding)
    reused, earlier = _reuse(campaign, path, options, inputs) if inputs is not None else (None, None)
    if reused is not None:
        to_send = reused.to_send[: options.limit] if options.limit is not None else reused.to_send
        return Prepared(
            campaign, None, path, to_send, reused.already_done, 0, rate, concurrency, lock,
            kept_original=reused.kept_original, status_counts=reused.counts, rows_read=reused.total,
        )  # fmt: skip
    keep = inputs is not None and not options.dry_run  # a real send keeps its check for the next run
    plan = build_plan(campaign, encoding=options.encoding, earlier=earlier, keep_work=keep)
    synced, reused_rows = _sync(plan, path, options, inputs)
    retry = RESENDABLE if options.retry_failed else UNFINISHED
    to_send = [r for r in plan.sendable if (synced.states or {}).get(r.key or "", "pending") in retry]
    done = len(plan.sendable) - len(to_send)
    if options.limit is not None:
        to_send = to_send[: options.limit]
    steps = {}
    if campaign.follow_up:
        steps = {1: plan} | {
            n: build_plan(campaign.for_step(n), encoding=options.encoding) for n in range(2, campaign.steps + 1)
        }
    return Prepared(
        campaign, plan, path, to_send, done, synced.new, rate, concurrency, lock,
        kept_original=synced.kept_original, status_counts=plan.counts(), rows_read=len(plan.recipients),
        rows_reused=reused_rows, changed_inputs=earlier.changed if earlier is not None else (),
        step_plans=steps,
    )  # fmt: skip


def _with_outlook(prepared: Prepared, now: float) -> Prepared:
    """The plan with what the journal says now: its rows by state, and the calendar for the rows
    to send from ``now`` on the lines and today's use it knows (``outlook``'s one rule, as check
    and status). The calendar samples a long list's zones: it is shown before the first request."""
    path, campaign = prepared.journal_path, prepared.campaign
    facts, counts = CapacityFacts.read(campaign, None, now), {}
    if path.exists():
        with Journal.open_existing(path, campaign.id) as journal:
            counts = dict(journal.counts())
            if prepared.to_send:  # nothing to send: no calendar to plan
                facts = CapacityFacts.read(campaign, journal, now)
    prepared.planned_at, prepared.journal_counts = now, counts
    prepared.outlook = outlook(campaign, prepared.to_send, now, facts, exact=False)
    return prepared


def _reuse(
    campaign: Campaign, path: Path, options: SendOptions, inputs: rerun.Fingerprint
) -> tuple[rerun.Reused | None, EarlierWork | None]:
    """The journal's stored check when no input changed since it was made; else, when only the
    sheet changed, its per-row work (see chertcast.rerun)."""
    if not path.exists():
        return None, None
    changes = {"allow_changes": options.allow_changes, "retry_failed": options.retry_failed}
    opened = Journal.open_existing(path, campaign.id) if options.dry_run else Journal(path, campaign.id)
    with opened as journal:
        reused = rerun.reuse(journal, inputs, **changes, write=not options.dry_run)
        return reused, rerun.earlier_work(journal, inputs) if reused is None else None


def _sync(
    plan: Plan, path: Path, options: SendOptions, inputs: rerun.Fingerprint | None = None
) -> tuple[PlanSync, int]:
    """The journal synced with the plan, and how many rows' work came from the last check."""
    changes = {"allow_changes": options.allow_changes, "retry_failed": options.retry_failed}
    if options.dry_run:
        if not path.exists():
            return PlanSync(new=len(plan.sendable), states={}), 0
        with Journal.open_existing(path, plan.campaign.id) as journal:
            return journal.sync_plan(plan, **changes, write=False), 0
    with Journal(path, plan.campaign.id) as journal:
        rerun.forget(journal)
        reused_rows = rerun.keep_work(journal, plan)
        synced = journal.sync_plan(plan, **changes)
        if options.retry_failed:
            journal.reset_failed()
        if inputs is not None:
            rerun.remember(journal, plan, inputs)
        return synced, reused_rows


@dataclass(frozen=True)
class Endpoint:
    """Where requests go and how they are signed: passed in, never read from the environment here.

    ``name`` identifies the server the journal's attempts and attachment ids belong to: the base
    URL, or a fresh ``sandbox:<id>`` for each built-in sandbox (a new sandbox has no memory).
    ``transport`` lets a test or an embedding program route requests in process (httpx).
    """

    base_url: str
    secret: Secret
    transport: httpx.AsyncBaseTransport | None = None
    name: str = ""

    @property
    def journal_name(self) -> str:
        return self.name or self.base_url.rstrip("/")

    @classmethod
    def sandbox(cls, base_url: str, secret: Secret, transport: httpx.AsyncBaseTransport | None = None) -> Endpoint:
        return cls(base_url, secret, transport, f"{SANDBOX_ENDPOINT}{uuid.uuid4().hex}")


async def execute(
    prepared: Prepared,
    options: SendOptions,
    endpoint: Endpoint,
    progress: Progress | None = None,
    clock: Clock | None = None,
    hooks: RunHooks | None = None,
) -> SendResult:
    """Send the prepared work in the caller's event loop, then release the run lock.
    ``hooks`` hear of long waits and signals (the CLI prints them; by default nothing is printed)."""
    try:
        if options.dry_run or not (prepared.to_send or prepared.step_plans):
            return SendResult(prepared, None)
        started = time.monotonic()
        follow: list[FollowUpStats] = []
        run = await _run(prepared, options, endpoint, progress, clock or RealClock(), hooks, follow)
        elapsed = time.monotonic() - started
        counts = _journal_counts(prepared.journal_path, prepared.campaign.id)
        return SendResult(prepared, run, None, elapsed, counts, follow[0] if follow else None)
    finally:
        prepared.release()


def _journal_counts(path: Path, campaign_id: str) -> dict[str, int]:
    if not path.exists():
        return {}
    with Journal.open_existing(path, campaign_id) as journal:
        return dict(journal.counts())


async def _run(
    prepared: Prepared,
    options: SendOptions,
    endpoint: Endpoint,
    progress: Progress | None,
    clock: Clock,
    hooks: RunHooks | None,
    follow: list[FollowUpStats],
) -> RunResult:
    settings = prepared.campaign.send
    limits = httpx.Limits(max_connections=prepared.concurrency, max_keepalive_connections=prepared.concurrency)
    timeout = httpx.Timeout(settings.timeout_s, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, transport=endpoint.transport) as http:
        api = prepared.campaign.api
        client = ChertClient(
            http, endpoint.base_url, endpoint.secret, auth=api.auth, tenant=api.tenant, clock=clock.wall
        )
        with Journal(prepared.journal_path, prepared.campaign.id, clock=clock.wall) as journal:
            journal.use_endpoint(endpoint.journal_name)
            replays = journal.replay_keys()  # these resend their first request, attachment ids included
            fresh = [r for r in prepared.to_send if r.key not in replays]
            uploaded = await upload_attachments(client, journal, fresh, endpoint.journal_name)
            engine_settings = _engine_settings(prepared, options)
            engine_settings.scheduler = await build_scheduler(prepared.campaign, client, journal, options.wait)
            engine = Engine(
                client,
                journal,
                engine_settings,
                clock,
                progress,
                random.Random(),
                payload_for=lambda r: r.payload(uploaded),
                hooks=hooks,
            )
            journal.set_meta("last_run_started_at", str(clock.wall()))
            if prepared.step_plans:
                result = await _run_with_follow_ups(prepared, options, journal, client, clock, engine, follow)
            else:
                result = await engine.run(prepared.to_send)
            if engine_settings.scheduler is not None and engine_settings.scheduler.planner is not None:
                result.capacity = capacity_snapshot(engine_settings.scheduler.planner, clock.wall())
            return result


async def _run_with_follow_ups(
    prepared: Prepared,
    options: SendOptions,
    journal: Journal,
    client: ChertClient,
    clock: Clock,
    engine: Engine,
    follow: list[FollowUpStats],
) -> RunResult:
    """First touches (the engine, with their capacity) and follow-ups (due, pinned, paced) side by side."""
    campaign = prepared.campaign
    follow_ups = FollowUps(
        campaign,
        prepared.step_plans,
        journal,
        client,
        clock,
        refresh=lambda: refresh_replies(campaign, journal, client, clock, prepared.journal_path),
        rules=capacity_rules(campaign) if campaign.capacity.enabled else None,
        quiet=quiet_hours(campaign),
        rate=prepared.rate,
        bucket=engine.bucket,
        notice=engine.notice,
    )
    follow.append(follow_ups.stats)
    engine.progress = _Nudging(engine.progress, follow_ups)
    # Ctrl-C must be heard for the whole run, not only while first touches go: one watcher for
    # both phases stops the engine and the follow-ups alike (the engine's own would end with it).
    watch, engine.settings.handle_signals = engine.settings.handle_signals, False

    async def first_touches() -> None:
        result = await engine.run(prepared.to_send)
        if result.stop_kind in ("interrupted", "campaign"):
            follow_ups.halt()  # Ctrl-C or a campaign-wide problem stops follow-ups too
        follow_ups.first_touches_done()

    async with anyio.create_task_group() as run:
        if watch:
            run.start_soon(engine.watch_signals, run.cancel_scope, follow_ups.halt)
        async with anyio.create_task_group() as group:
            group.start_soon(first_touches)
            await follow_ups.run(wait=options.wait)
        run.cancel_scope.cancel()  # both phases are over: stop watching
    return engine.result


@dataclass
class _Nudging:
    """The engine's progress, also waking the follow-ups: a first touch went out."""

    inner: Progress
    follow_ups: FollowUps

    def update(self, stats: RunStats) -> None:
        self.inner.update(stats)
        self.follow_ups.nudge()

    def close(self, stats: RunStats) -> None:
        self.inner.close(stats)


async def build_scheduler(campaign: Campaign, client: ChertClient, journal: Journal, wait: bool) -> Scheduler | None:
    """Capacity planning, unless the campaign turns it off (lines from the file or from Chert),
    and recipients' quiet hours, kept whether capacity is planned or not; None when both are off."""
    settings = campaign.capacity
    if not settings.enabled:
        hours = quiet_hours(campaign)
        return Scheduler(None, hours, wait, journal.planned_lines()) if hours is not None else None
    lines = list(settings.lines) or await discover_lines(client)
    journal.set_meta(LINES_META, json.dumps(lines))  # status and check plan with the same lines
    rules = capacity_rules(campaign)
    planner = LinePlanner(rules, lines, journal.first_touch_history(history_since(rules, journal.now())))
    return Scheduler(planner, quiet_hours(campaign), wait, journal.planned_lines())


async def discover_lines(client: ChertClient) -> list[str]:
    try:
        status, body = await client.get_json("/phone-numbers")
    except httpx.TransportError as exc:
        raise CampaignStopped(
            f"cannot list sender lines (GET {client.base_url}/phone-numbers): {client.describe_transport_error(exc)}"
        ) from None
    numbers = body.get("phone_numbers") if isinstance(body, dict) else None
    if status >= 300 or not isinstance(numbers, list):
        raise CampaignStopped(
            f"cannot list sender lines (GET {client.base_url}/phone-numbers answered HTTP {status}{_meaning(body)})"
        )
    lines = [
        str(n.get("phone_line_id") or n.get("id"))
        for n in numbers
        if isinstance(n, dict) and n.get("is_active", True) and "send" in n.get("capabilities", ["send"])
    ]
    if not lines:
        raise CampaignStopped("Chert lists no active sender line for this tenant; set [capacity] lines")
    return lines


def _meaning(body: object) -> str:
    """What a Chert error body says, e.g. ': 2004: authentication failed: CHERT_SIGNING_SECRET is wrong …'."""
    error = body.get("error", body) if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if not isinstance(code, int):
        return " without a Chert error code: check [api] base_url / CHERT_BASE_URL" if body is None else ""
    assert isinstance(error, dict)
    meaning = STOP_CODES.get(code) or str(error.get("message") or "")
    return f": {code}: {meaning}" if meaning else f": {code}"


def _engine_settings(prepared: Prepared, options: SendOptions) -> EngineSettings:
    send = prepared.campaign.send
    return EngineSettings(
        rate=prepared.rate,
        burst=send.burst,
        concurrency=prepared.concurrency,
        retry=RetryPolicy(max_attempts=send.max_attempts, max_delay_s=send.max_backoff_s),
        failure_threshold=send.failure_threshold,
        failure_window=send.failure_window,
        grace_s=options.grace_s,
        campaign_effect=send.effect,
        campaign_line=send.phone_line_id,
        campaign_attachments=campaign_attachments(prepared.campaign),
        handle_signals=options.handle_signals,
    )


async def upload_attachments(
    client: ChertClient, journal: Journal, recipients: list[Recipient], endpoint: str
) -> dict[str, str]:
    """Upload each local file's content once per endpoint; the journal remembers its id across runs."""
    ids: dict[str, str] = {}
    files = sorted({a.value for r in recipients for a in r.attachments if a.is_file})
    for path in files:
        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        known = journal.attachment_id(path, digest, endpoint)
        if known is None:
            known = await upload_file(client, Path(path), data)
            journal.remember_attachment(path, digest, known, endpoint)
        ids[path] = known
    return ids


async def upload_file(client: ChertClient, path: Path, data: bytes) -> str:
    """``POST /attachments`` then the ``PUT`` of the bytes; the new attachment id."""
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        status, body = await client.post_json(
            "/attachments", {"filename": path.name, "content_type": content_type, "size_bytes": len(data)}
        )
        if status >= 300 or not isinstance(body, dict) or "attachment_id" not in body:
            error = body.get("error", body) if isinstance(body, dict) else {}
            raise CampaignStopped(
                f"uploading {path.name} failed: HTTP {status} "
                f"{error.get('code', '')} {error.get('message', '')}".rstrip()
            )
        put_status = await client.put_bytes(str(body["upload_url"]), data, content_type)
    except UnsafeUploadURL as exc:
        raise CampaignStopped(f"uploading {path.name} failed: {exc}") from None
    except httpx.HTTPError as exc:
        raise CampaignStopped(f"uploading {path.name} failed: {type(exc).__name__}") from None
    if put_status >= 300:
        raise CampaignStopped(f"uploading {path.name} failed: the PUT answered HTTP {put_status}")
    return str(body["attachment_id"])
