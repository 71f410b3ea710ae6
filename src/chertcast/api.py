"""chertcast as a library: check, send, status, sync and report are each one call returning a
typed result (preview's page, `send --to` and `report --html` live in ``pages`` and ``testsend``).

Each result's ``as_json()`` is exactly what the command's ``--json`` prints, so a script can use
either. Nothing here reads the environment: the endpoint and its secret are passed in (only the
command line reads ``CHERT_*``), and the caller decides what to print::

    from chertcast import Endpoint, Secret, SendOptions, check, send
    checked = check("campaign.toml")  # raises ChertcastError when the campaign cannot run at all
    if checked.exit_code == 0:
        outcome = send("campaign.toml", endpoint=Endpoint(url, Secret(token)), options=SendOptions())
        print(outcome.as_json())
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from chertcast import present, runlock
from chertcast.campaign import Campaign, journal_files, load_campaign
from chertcast.capacity import Unsendable
from chertcast.engine import RunHooks
from chertcast.errors import CampaignStopped, ChertcastError, ConfigError
from chertcast.export import guard_output, write_table
from chertcast.followups import report_columns, sequence_status
from chertcast.journal import Journal
from chertcast.outlook import (
    CapacityFacts,
    CapacityOutlook,
    capacity_status,
    held_now,
    outlook,
    quiet_hours_never,
    unfinished,
)
from chertcast.pacing import Clock
from chertcast.preflight import Plan, build_plan
from chertcast.runner import Endpoint, Prepared, SendOptions, SendResult, execute, journal_path_for, prepare
from chertcast.sync import PAGE_LIMIT, SyncResult, outcome_counts, outcomes_by_key, run_sync

PlanHook = Callable[[Prepared], bool]


@dataclass
class CheckResult:
    """What ``check`` found: the plan (every row, its phone, message and problems), and what is
    left to send with its calendar: with capacity planning on, the sendable rows the campaign's
    journal has not finished; with it off, every sendable row (check then reads no journal)."""

    plan: Plan
    now: float
    steps: dict[int, Plan] = field(default_factory=dict)  # follow-up steps 2, 3, … checked alike
    to_send: int = 0
    outlook: CapacityOutlook | None = None  # None: capacity planning off
    unplanned: list[Unsendable] = field(default_factory=list)  # capacity off: rows quiet hours never allow

    @property
    def eta(self) -> present.Estimate:
        campaign = self.plan.campaign
        return present.estimate(campaign, self.to_send, campaign.send.rate, self.outlook, self.now)

    @property
    def exit_code(self) -> int:
        """0: every row can be sent; 1: some rows have problems, in the first touch or a follow-up step,
        or can never be sent (quiet hours and the sending window never meet for them) (a campaign
        that cannot run at all raises ChertcastError instead: exit 2 on the command line)."""
        never = 1 if (self.outlook is not None and self.outlook.never) or self.unplanned else 0
        return max([self.plan.exit_code(), never, *(step.exit_code() for step in self.steps.values())])

    def as_json(self) -> dict[str, Any]:
        data = present.check_json(self.plan, self.eta, self.outlook)
        if self.unplanned:  # capacity planning off: no calendar to hold them, so they are listed here
            data["unsendable"] = [{"row": u.row, "phone": u.phone, "reason": u.reason} for u in self.unplanned]
        if self.steps:
            data["follow_up"] = present.sequence_json(self.plan, self.steps, self.now, self.outlook, self.eta)
        return data


@dataclass
class SendOutcome:
    """What ``send`` did: the plan against the journal, and the run's result when one ran."""

    prepared: Prepared
    options: SendOptions
    result: SendResult | None
    exit_code: int
    declined: bool = False  # the plan hook said no: nothing was sent

    def as_json(self) -> dict[str, Any]:
        return present.send_json(self.prepared, self.result, self.options, self.exit_code)


@dataclass
class StatusResult:
    """Where a campaign stands, read from its journal (and its run lock)."""

    campaign_id: str
    journal: Path
    data: dict[str, Any]
    running: runlock.Holder | None = None
    journal_exists: bool = True
    campaign: Path | None = None  # as given, for the commands the text shows
    sandbox: bool = False
    journal_given: Path | None = None  # --journal as given, likewise

    def as_json(self) -> dict[str, Any]:
        return self.data

    def lines(self) -> list[str]:
        if not self.journal_exists and self.running is not None:
            return [
                f"Campaign {self.campaign_id} ({self.journal}): run in progress: {self.running.describe()}; "
                "no journal written yet"
            ]
        campaign = self.campaign or "CAMPAIGN"
        return present.status_lines(self.data, self.journal, campaign, self.sandbox, self.journal_given)


@dataclass
class ReportResult:
    out: Path
    rows: int
    headers: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "rows": self.rows}


def check(campaign: Path | str, *, encoding: str | None = None, now: float | None = None) -> CheckResult:
    """Read and check every row; send nothing. Raises ChertcastError when the campaign cannot run at all."""
    loaded = load_campaign(Path(campaign))
    plan = build_plan(loaded, encoding=encoding)
    steps = {n: _step_plan(loaded, n, encoding) for n in range(2, loaded.steps + 1)}
    moment = time.time() if now is None else now
    if not loaded.capacity.enabled:  # paced only: every sendable row counted, no journal read
        never = quiet_hours_never(loaded, plan.sendable, moment)
        return CheckResult(plan, moment, steps, len(plan.sendable), None, never)
    path = loaded.default_journal
    with Journal.open_existing(path, loaded.id) if path.exists() else contextlib.nullcontext() as journal:
        waiting = unfinished(plan, journal)
        view = outlook(loaded, waiting, moment, CapacityFacts.read(loaded, journal, moment))
    return CheckResult(plan, moment, steps, len(waiting), view)


def _step_plan(campaign: Campaign, step: int, encoding: str | None) -> Plan:
    """A follow-up's plan; a problem that stops the campaign names the step."""
    try:
        return build_plan(campaign.for_step(step), encoding=encoding)
    except ChertcastError as exc:
        raise type(exc)(f"follow_up step {step}: {exc}") from None


def send(
    campaign: Path | str,
    *,
    endpoint: Endpoint | None = None,
    options: SendOptions | None = None,
    on_plan: PlanHook | None = None,
    progress: Any = None,
    clock: Clock | None = None,
    hooks: RunHooks | None = None,
) -> SendOutcome:
    """Plan against the journal, then send what is left, exactly once. Blocking: runs its own
    event loop (``asend`` is the same inside yours).

    ``on_plan`` sees the plan before any request (the CLI prints it and asks to confirm);
    returning False sends nothing. ``hooks`` hear of long waits and of Ctrl-C (the CLI prints
    them); without them nothing is printed but the one-line notice of an older journal's
    upgrade. A dry run needs no endpoint; a real one does.
    """
    call = functools.partial(
        asend,
        campaign,
        endpoint=endpoint,
        options=options,
        on_plan=on_plan,
        progress=progress,
        clock=clock,
        hooks=hooks,
    )
    return anyio.run(call)


async def asend(
    campaign: Path | str,
    *,
    endpoint: Endpoint | None = None,
    options: SendOptions | None = None,
    on_plan: PlanHook | None = None,
    progress: Any = None,
    clock: Clock | None = None,
    hooks: RunHooks | None = None,
) -> SendOutcome:
    """``send`` inside the caller's event loop (anyio: asyncio or trio)."""
    opts = _options_for(endpoint, options)
    prepared = prepare(Path(campaign), opts, clock.wall() if clock is not None else None)
    try:
        early = _before_sending(prepared, opts, endpoint, on_plan)
        if early is not None:
            return early
        assert endpoint is not None  # _options_for refuses a real run without one
        try:
            result = await execute(prepared, opts, endpoint, progress, clock, hooks)
        except CampaignStopped as exc:  # before the first /send: nothing was sent, every row waits
            resume = present.resume_command(prepared.campaign.source, opts)
            raise CampaignStopped(f"{exc}. Nothing was sent; fix it, then resume with: {resume}") from None
        return SendOutcome(prepared, opts, result, present.final_exit_code(result.run))
    finally:
        prepared.release()


def _options_for(endpoint: Endpoint | None, options: SendOptions | None) -> SendOptions:
    """The options, once it is sure the call can run: a real send needs an endpoint (checked
    before the journal is touched); a dry run sends nothing and needs none."""
    opts = options or SendOptions()
    if endpoint is None and not opts.dry_run:
        raise ConfigError("send: no endpoint given (pass endpoint=Endpoint(base_url, Secret(...)))")
    return opts


def _before_sending(
    prepared: Prepared, options: SendOptions, endpoint: Endpoint | None, on_plan: PlanHook | None
) -> SendOutcome | None:
    """The outcome when nothing is to be sent (dry run, nothing left, declined); None to go on."""
    if options.dry_run or not (prepared.to_send or prepared.step_plans):
        if on_plan is not None:
            on_plan(prepared)
        code = 0 if options.dry_run else present.final_exit_code(None)
        return SendOutcome(prepared, options, None, code)
    if on_plan is not None and not on_plan(prepared):
        return SendOutcome(prepared, options, None, 0, declined=True)
    return None


def status(
    campaign: Path | str, *, journal: Path | None = None, sandbox: bool = False, now: float | None = None
) -> StatusResult:
    """Counts by state, common errors, capacity today, and whether a run holds the journal."""
    loaded = load_campaign(Path(campaign))
    path = journal_path_for(loaded, SendOptions(journal=journal, sandbox=sandbox))
    holder = runlock.running(path)
    if holder is not None and not path.exists():  # a first run, still planning: no journal yet
        data: dict[str, Any] = {"campaign": loaded.id, "journal": str(path), "running": holder.as_json()}
        return StatusResult(loaded.id, path, data, holder, journal_exists=False)
    with Journal.open_existing(path, loaded.id) as opened:
        times = {name: opened.meta(name) for name in present.STATUS_TIMES}
        data = present.status_json(loaded.id, opened.counts(), opened.top_errors(), times)
        data.update(outcome_counts(opened))
        listed = (loaded.rehearsal() if sandbox else loaded).opt_out_list
        data["opt_out_list"] = None if listed is None else str(listed)
        moment = time.time() if now is None else now
        data["capacity"] = present.capacity_json(capacity_status(loaded, opened, moment))
        if not loaded.capacity.enabled:  # quiet hours hold rows without capacity planning too
            data["held_by_quiet_hours"] = held_now(loaded, opened, moment)
        if loaded.follow_up:
            data["follow_up"] = sequence_status(loaded, opened.connection(), moment)
    data["running"] = holder.as_json() if holder is not None else None
    return StatusResult(loaded.id, path, data, holder, campaign=Path(campaign), sandbox=sandbox, journal_given=journal)


@dataclass
class SyncOutcome:
    """What ``sync`` fetched and what the journal now knows of deliveries, replies and opt-outs."""

    campaign_id: str
    result: SyncResult

    def as_json(self) -> dict[str, Any]:
        return present.sync_json(self.campaign_id, self.result)


def sync(
    campaign: Path | str,
    *,
    endpoint: Endpoint,
    journal: Path | None = None,
    sandbox: bool = False,
    rate: float | None = None,
    page_size: int = PAGE_LIMIT,
    clock: Clock | None = None,
) -> SyncOutcome:
    """Fetch delivery status for sent messages not final yet and the replies since the last sync;
    append opt-outs to the campaign's opt-out list. Safe to interrupt and rerun."""
    loaded = load_campaign(Path(campaign))
    path = journal_path_for(loaded, SendOptions(journal=journal, sandbox=sandbox))
    if sandbox:  # the sandbox's made-up opt-outs go to the rehearsal's own list
        loaded = loaded.rehearsal()
    result = run_sync(
        loaded,
        path,
        endpoint.base_url,
        endpoint.secret,
        rate=rate,
        clock=clock,
        page_size=page_size,
        transport=endpoint.transport,
    )
    return SyncOutcome(loaded.id, result)


def report(
    campaign: Path | str,
    out: Path | str,
    *,
    only: str | None = None,
    journal: Path | None = None,
    sandbox: bool = False,
    encoding: str | None = None,
    force: bool = False,
) -> ReportResult:
    """Write what happened, row by row, with the sheet's own columns, to a CSV or XLSX file.

    ``only``: a journal state (``failed``: the rows Chert refused), or ``"failed-delivery"``: the
    rows sent and then, as ``sync`` found, not delivered."""
    if only is not None and only not in present.REPORT_ONLY:  # a typo must not read as "none failed"
        raise ConfigError(f"report: only={only!r} is not one of {', '.join(present.REPORT_ONLY)}")
    loaded = load_campaign(Path(campaign))
    target = Path(out)
    path = journal_path_for(loaded, SendOptions(journal=journal, sandbox=sandbox))
    guard_output(target, {**loaded.inputs(), **journal_files(path)}, force=force)
    plan = build_plan(loaded, encoding=encoding)
    with Journal.open_existing(path, loaded.id) as opened:
        steps = report_columns(opened.connection(), loaded.steps) if loaded.follow_up else ([], {})
        headers, rows = present.report_rows(plan, list(opened.rows()), only, outcomes_by_key(opened), steps)
    return ReportResult(target, write_table(target, headers, rows), headers)


__all__ = [
    "CheckResult",
    "Endpoint",
    "ReportResult",
    "SendOptions",
    "SendOutcome",
    "StatusResult",
    "SyncOutcome",
    "asend",
    "check",
    "report",
    "send",
    "status",
    "sync",
]
