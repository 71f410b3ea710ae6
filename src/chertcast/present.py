"""What commands show and return: text for people (summaries, problem tables, message bubbles),
the ``--json`` objects the library's results give, the estimate, a send's exit code and the
report's rows.

Pure: nothing here reads a journal, the environment, the command line or the clock. Each
function is handed what it describes — the plan, the capacity outlook (``chertcast.outlook``),
the moment, the campaign path and the options of the command, and for the lines printed for
cron the ``Invocation`` (the program, the base-URL override, where the secret comes from)."""

from __future__ import annotations

import math
import shlex
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from chertcast.campaign import BASE_URL_ENV, DEFAULT_SECRET_FILE, SECRET_ENV, SECRET_FILE_ENV, Campaign
from chertcast.capacity import NEVER_SENDABLE, Unsendable
from chertcast.credentials import SecretSource
from chertcast.engine import RunResult
from chertcast.followups import FollowUpStats
from chertcast.journal import STATES, UNFINISHED, JournalRow
from chertcast.outlook import CapacityOutlook
from chertcast.preflight import Issue, Plan, Recipient
from chertcast.runner import Prepared, SendOptions, SendResult
from chertcast.sync import OUTCOME_HEADERS, AfterSend

_FIX_WORDS: dict[str, tuple[str, str, str]] = {  # verb, one, many
    "phone_empty": ("fill", "empty phone cell", "empty phone cells"),
    "phone_invalid": ("fix", "phone number", "phone numbers"),
    "phone_scientific": ("fix", "phone number in scientific notation", "phone numbers in scientific notation"),
    "empty_variable": ("fill", "empty cell", "empty cells"),
    "render_failed": ("fix", "row the template cannot render", "rows the template cannot render"),
    "body_empty": ("fix", "empty message", "empty messages"),
    "body_too_long": ("shorten", "message", "messages"),
    "attachment_missing": ("fix", "missing attachment file", "missing attachment files"),
    "duplicate": ("remove", "duplicate number", "duplicate numbers"),
    "body_link": ("remove", "link from a first message", "links from first messages"),
    "not_imessage": ("check", "number that may not receive iMessage", "numbers that may not receive iMessage"),
    "suppress_unreadable": ("fix", "unreadable suppression-list line", "unreadable suppression-list lines"),
    "row_extra_cells": ("fix", "row with more cells than the header", "rows with more cells than the header"),
    "phone_extension": ("check", "number with an extension", "numbers with an extension"),
    "phone_skipped": (
        "check",
        "phone cell passed over for another column's number",
        "phone cells passed over for another column's number",
    ),
    "row_not_utf8": (
        "check",
        "row that is not UTF-8 like the rest of the file",
        "rows that are not UTF-8 like the rest of the file",
    ),
    "cell_format_unknown": (
        "format",
        "cell chertcast cannot show as Excel does",
        "cells chertcast cannot show as Excel does",
    ),
}


def plural(count: int, word: str, words: str | None = None) -> str:
    """'1 message', '2 messages', '1,000 rows'."""
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


@dataclass(frozen=True)
class Estimate:
    """How long sending ``count`` messages takes: the rate, and first-touch capacity when planned."""

    seconds: float | None  # None: capacity decides, and chertcast cannot see it yet (lines unknown)
    text: str
    finish: date | None = None  # the last sending day, when a calendar was planned


def estimate(campaign: Campaign, count: int, rate: float, outlook: CapacityOutlook | None, now: float) -> Estimate:
    """The one estimate that `check`, the send header and the confirmation prompt all show, for
    ``count`` messages from ``now``, with the calendar ``outlook`` planned for them.

    With capacity planning on, every message is counted as a first-touch send (the most a
    plan can need): follow-ups to existing leads go faster. The outlook keeps each
    recipient's quiet hours as `send` keeps them: a sheet of West-Coast numbers sent from New
    York starts three hours later each day.
    """
    paced = max(0.0, count - campaign.send.burst) / rate
    settings = campaign.capacity
    if outlook is None and count and campaign.quiet_hours.enabled:  # capacity off: no calendar to count them
        return Estimate(paced, f"{duration(paced)}, longer for rows quiet hours hold (they wait for their morning)")
    if outlook is None or count == 0:
        return Estimate(paced, duration(paced))
    if not outlook.lines:
        limits = f"{settings.line_daily_cap}/line/day, {settings.line_gap_minutes:g} min apart"
        return Estimate(
            None,
            (f"at least {duration(paced)}; " if paced >= 1 else "") + f"first-touch capacity ({limits}) decides — "
            "list [capacity] lines for a calendar",
        )
    calendar = outlook.calendar
    if calendar is None or calendar.finish is None:
        return Estimate(
            None, "no row can be sent: quiet hours and the sending window never meet (see `chertcast check`)"
        )
    last = calendar.last_at
    seconds = max(paced, last - now) if last is not None else None
    about = "about " if outlook.sampled else ""
    held = f"; {about}{plural(outlook.never, 'row')} can never be sent" if outlook.never else ""
    if calendar.sending_days <= 1 and seconds is not None:
        text = f"{duration(seconds)} (first-touch capacity on {plural(calendar.lines, 'line')}{held})"
        return Estimate(seconds, text, calendar.finish)
    return Estimate(
        seconds,
        f"{plural(calendar.sending_days, 'sending day')} (first-touch capacity on "
        f"{plural(calendar.lines, 'line')}; expected finish {calendar.finish}{held})",
        calendar.finish,
    )


UNSENDABLE_SHOWN = 20


def calendar_lines(
    campaign: Campaign, outlook: CapacityOutlook | None, unplanned: Sequence[Unsendable] = ()
) -> list[str]:
    """check's calendar: rows that can never be sent (named), then the sending days the rest need.
    ``unplanned``: with capacity planning off, the rows quiet hours alone never allow."""
    settings = campaign.capacity
    if outlook is None:
        return [*_unsendable_lines(unplanned), "  calendar: capacity planning is off ([capacity] enabled = false)"]
    lines = _unsendable_lines(outlook.unsendable)
    if not outlook.lines:
        lines.append(
            "  calendar: sender lines are discovered when sending; list them in [capacity] lines for an estimate"
        )
        return lines
    calendar = outlook.calendar
    window = f", window {settings.window_start}-{settings.window_end}" if settings.window_start else ""
    days = calendar.sending_days if calendar else 0
    lines.append(
        f"  calendar: {plural(outlook.to_send, 'first-touch send')} on {plural(len(outlook.lines), 'line')} "
        f"({settings.line_daily_cap}/line/day, {settings.line_gap_minutes:g} min apart{window}, {settings.timezone}): "
        f"{plural(days, 'sending day')}, "
        f"expected finish {(calendar.finish if calendar else None) or '-'}"
    )
    if days > settings.horizon_days:
        lines.append(
            f"  warning: the plan needs {days} sending days, beyond the "
            f"{settings.horizon_days}-day horizon ([capacity] horizon_days): add lines or split the campaign"
        )
    return lines


def _unsendable_lines(rows: Sequence[Unsendable]) -> list[str]:
    if not rows:
        return []
    lines = [
        f"  unsendable: {plural(len(rows), 'row')} can never "
        "be sent under the current sending window and quiet hours (they stay pending):"
    ]
    lines += [f"    row {u.row} ({u.phone}): {u.reason}" for u in rows[:UNSENDABLE_SHOWN]]
    if len(rows) > UNSENDABLE_SHOWN:
        lines.append(f"    … and {len(rows) - UNSENDABLE_SHOWN:,} more")
    return lines


def calendar_json(campaign: Campaign, outlook: CapacityOutlook | None) -> dict[str, Any] | None:
    if outlook is None:
        return None
    calendar = outlook.calendar
    days = calendar.sending_days if calendar else 0
    return {
        "lines": len(outlook.lines) or None,
        "to_send": outlook.to_send,
        "sending_days": days if outlook.lines else None,
        "finish_date": calendar.finish.isoformat() if calendar and calendar.finish else None,
        "per_day": [[day.isoformat(), n] for day, n in calendar.per_day] if calendar else [],
        "beyond_horizon": days > campaign.capacity.horizon_days,
        "unsendable": [{"row": u.row, "phone": u.phone, "reason": u.reason} for u in outlook.unsendable],
    }


def plan_summary(plan: Plan, eta: Estimate) -> list[str]:
    """check's summary; ``eta``: ``estimate`` for the rows still to send."""
    counts = plan.counts()
    errors = sum(1 for i in plan.issues if i.severity == "error" and i.row is not None)
    warnings = sum(1 for i in plan.issues if i.severity == "warning" and i.code != "duplicate")
    elsewhere = Counter(i.code for i in plan.issues if i.severity == "error" and i.row is None)
    outside = ""  # problems in no sheet row (a suppression list's lines) are counted apart from the rows'
    for code, count in elsewhere.items():
        _, one, many = _FIX_WORDS.get(code, ("", code.replace("_", " "), code.replace("_", " ") + "s"))
        outside += f", and {plural(count, one, many)}"
    settings = plan.campaign.send
    lines = [
        f"Campaign {plan.campaign.id}: {contacts_name(plan)}, {plural(len(plan.recipients), 'row')} read",
        *[f"  {note}" for note in plan.notes],
        *[f"  suppression list {entry.summary()}" for entry in plan.lists],
        f"  sendable     {counts['sendable']:>7,}",
        f"  errors       {counts['error']:>7,} {'row' if counts['error'] == 1 else 'rows'} "
        f"({plural(errors, 'problem')}){outside}",
        f"  warnings     {warnings:>7,}",
        f"  duplicates   {counts['duplicate']:>7,}",
        f"  suppressed   {counts['suppressed']:>7,}",
        f"  estimated send time: {eta.text} at {settings.rate:g} msg/s",
    ]
    return lines


def contacts_name(plan: Plan) -> str:
    """The file and, for a workbook, the sheet that was read."""
    sheet = plan.sheet.sheet_name
    return f"{plan.sheet.path.name} (sheet {sheet!r})" if sheet else plan.sheet.path.name


def fix_list(issues: Iterable[Issue]) -> str:
    """Notify-style grouping: 'fix 3 phone numbers, fill 2 empty cells'."""
    grouped = Counter(issue.code for issue in issues)
    parts = []
    for code, count in grouped.most_common():
        name = code.replace("_", " ")
        verb, one, many = _FIX_WORDS.get(code, ("fix", name, name + "s"))
        parts.append(f"{verb} {plural(count, one, many)}")
    return ", ".join(parts)


def issue_table(issues: list[Issue], limit: int | None = 200) -> list[str]:
    if not issues:
        return []
    shown = issues if limit is None else issues[:limit]
    width = max(len(str(i.column or "")) for i in shown) if shown else 6
    width = max(width, 6)
    lines = [f"{'ROW':>6}  {'COLUMN':<{width}}  {'SEVERITY':<8}  PROBLEM"]
    for issue in shown:
        row = str(issue.row) if issue.row is not None else "-"
        lines.append(f"{row:>6}  {issue.column or '':<{width}}  {issue.severity:<8}  {issue.message}")
    if limit is not None and len(issues) > limit:
        lines.append(f"… and {len(issues) - limit:,} more (use --json for all of them)")
    return lines


def check_json(plan: Plan, eta: Estimate, outlook: CapacityOutlook | None) -> dict[str, Any]:
    counts = plan.counts()
    return {
        "campaign": plan.campaign.id,
        "contacts": str(plan.sheet.path),
        "sheet": plan.sheet.sheet_name,
        "suppression_lists": [entry.as_json() for entry in plan.lists],
        "phone_column": plan.phone_column,
        "phone_columns": plan.phone_columns,
        "phone_columns_detected": plan.phone_column_detected,
        "numbers_per_phone_column": plan.numbers_per_phone_column(),
        "phone_columns_unused": [{"column": column, "reason": why} for column, why in plan.phone_columns_unused],
        "total": len(plan.recipients),
        "sendable": counts["sendable"],
        "errors": counts["error"],
        "duplicates": counts["duplicate"],
        "suppressed": counts["suppressed"],
        "warnings": sum(1 for i in plan.issues if i.severity == "warning" and i.code != "duplicate"),
        "estimated_seconds": _rounded(eta.seconds),
        "calendar": calendar_json(plan.campaign, outlook),
        "issues": [issue.as_json() for issue in plan.issues],
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def bubble_view(recipient: Recipient, width: int = 64) -> list[str]:
    who = f" · {recipient.name}" if recipient.name else ""
    head = f"── row {recipient.row} · {recipient.phone or recipient.raw_phone or '(no phone)'}{who} "
    lines = [head + "─" * max(0, width - len(head))]
    if recipient.status != "sendable":
        lines.append(f"   not sent: {recipient.status}: {recipient.reason}")
    if recipient.body is None:  # a row whose message could not be made
        return lines
    for index, bubble in enumerate(_bubbles_as_written(recipient.body)):
        if index:
            lines.append("")
        for paragraph in bubble:
            indent = paragraph[: len(paragraph) - len(paragraph.lstrip())]
            for piece in textwrap.wrap(paragraph, width - 6, subsequent_indent=indent) or [""]:
                lines.append(f"   │ {piece}")
    extras = [f"effect: {recipient.effect}"] if recipient.effect else []
    extras += [f"attachment: {a.value}" for a in recipient.attachments]
    lines += [f"   + {extra}" for extra in extras]
    if recipient.key:
        lines.append(f"   key {recipient.key}")
    return lines


def _bubbles_as_written(body: str) -> list[list[str]]:
    """Blank lines split bubbles; each line keeps its own indentation (as sent)."""
    groups: list[list[str]] = [[]]
    for line in body.split("\n"):
        if line.strip():
            groups[-1].append(line.rstrip())
        elif groups[-1]:
            groups.append([])
    return [group for group in groups if group]


PREVIEW_HEADERS = ["e164_phone", "status", "reason", "body", "idempotency_key", "phone_column"]


def preview_rows(plan: Plan) -> Iterable[list[object]]:
    frame_rows = plan.sheet.frame.iter_rows()
    for recipient, cells in zip(plan.recipients, frame_rows, strict=True):
        yield [
            recipient.row,
            *cells,
            recipient.phone or "",
            recipient.status,
            recipient.reason,
            recipient.body or "",
            recipient.key or "",
            recipient.phone_column or "",
        ]


# ------------------------------------------------------------------- send


def send_args(campaign: Path, options: SendOptions, *, cron: bool = False) -> list[str]:
    """The `send` arguments that continue this run, from the parsed options (never argv).

    Never --dry-run (it is how to send for real), --retry-failed or --allow-changes (both
    already took effect in the journal); a cron line never gets --wait and always gets --yes.
    """

    def shown(path: Path) -> str:
        return str(path.absolute() if cron else path)

    args = ["send", shown(campaign)]
    if options.journal is not None:
        args += ["--journal", shown(options.journal)]
    if options.sandbox:
        args.append("--sandbox")
    if options.rate is not None:
        args += ["--rate", f"{options.rate:g}"]
    if options.concurrency is not None:
        args += ["--concurrency", str(options.concurrency)]
    if options.limit is not None:
        args += ["--limit", str(options.limit)]
    if options.encoding:
        args += ["--encoding", options.encoding]
    if options.wait and not cron:
        args.append("--wait")
    if options.yes or cron:
        args.append("--yes")
    return args


def resume_command(campaign: Path, options: SendOptions) -> str:
    return "chertcast " + shlex.join(send_args(campaign, options))


@dataclass(frozen=True)
class Invocation:
    """How this chertcast was started, for the line printed for cron (which has neither this
    shell's PATH, its venv nor its environment): the program by absolute path, the base-URL
    override in effect, and where the secret comes from. The command line makes it."""

    program: str = "chertcast"
    base_url: str = ""  # CHERT_BASE_URL, when set
    secret: SecretSource | None = None


def cron_line(campaign: Path, options: SendOptions, invocation: Invocation) -> str:
    """A crontab line that reruns this send every 15 minutes until the campaign is done.

    Cron runs without this shell's environment: paths are absolute, the base URL override
    is carried over, and the secret comes from a file (never written into the line).
    """
    directory = campaign.absolute().parent
    env = []
    if invocation.base_url and not options.sandbox:
        env.append(f"{BASE_URL_ENV}={shlex.quote(invocation.base_url)}")
    secret = invocation.secret
    if secret is not None and secret.kind == "env_file" and secret.path is not None:
        env.append(f"{SECRET_FILE_ENV}={shlex.quote(str(secret.path))}")
    command = " ".join([*env, invocation.program, shlex.join(send_args(campaign, options, cron=True))])
    log = shlex.quote(str(directory / "send.log"))
    line = f"*/15 * * * * cd {shlex.quote(str(directory))} && {command} >> {log} 2>&1"
    return line.replace("%", "\\%")  # cron reads a bare % as a newline


def cron_lines(campaign: Path, options: SendOptions, invocation: Invocation) -> list[str]:
    lines = [f"Run the same command then, or let cron do it: {cron_line(campaign, options, invocation)}"]
    secret = invocation.secret
    if not options.sandbox and (secret is None or not (secret.seen_by_cron or secret.kind == "env_file")):
        lines.append(
            f"  (cron does not see {SECRET_ENV} from this shell: put the secret in {DEFAULT_SECRET_FILE} "
            f"and chmod 600 it, or name a file in [api] secret_file)"
        )
    return lines


def send_header(prepared: Prepared, options: SendOptions) -> list[str]:
    skipped = prepared.rows_read - prepared.status_counts["sendable"]
    mode = "DRY RUN: " if options.dry_run else ("SANDBOX: " if options.sandbox else "")
    eta = send_estimate(prepared)
    lines = [
        f"{mode}campaign {prepared.campaign.id}: {len(prepared.to_send):,} to send now, "
        f"{prepared.already_done:,} already done, {plural(skipped, 'row')} not sendable (see `chertcast check`)",
        f"  rate {prepared.rate:g} msg/s, concurrency {prepared.concurrency}; estimated {eta.text}",
        f"  journal: {prepared.journal_path}",
    ]
    if prepared.reused_check:
        lines.append("  inputs unchanged since the last run: its check is reused (sheet not re-read)")
    elif prepared.rows_reused:
        rechecked = prepared.rows_read - prepared.rows_reused
        if prepared.changed_inputs in ((), ("contacts",)):
            lines.append(
                f"  only the sheet changed since the last run: {plural(rechecked, 'row')} re-checked, "
                "the others' numbers and messages reused"
            )
        else:
            lines.append(
                f"  {_inputs_text(prepared.changed_inputs)} changed since the last run: every row re-checked, "
                f"{plural(rechecked, 'row')} parsed and rendered anew, the others' numbers and messages reused"
            )
    if prepared.kept_original:
        lines.append(
            f"  {prepared.kept_original:,} changed rows keep their original message: an earlier attempt "
            "may have delivered it, so it is resent exactly, with the same key"
        )
    if options.dry_run:
        to_do = "To rehearse it on the sandbox" if options.sandbox else "To send for real"
        lines.append(f"Nothing was sent (dry run). {to_do}: " + resume_command(prepared.campaign.source, options))
    elif not prepared.to_send and prepared.step_plans:
        lines.append("No first touch left to send; looking for follow-ups that are due.")
    elif not prepared.to_send:
        lines += _nothing_left(prepared, options)
    return lines


def _inputs_text(parts: tuple[str, ...]) -> str:
    """chertcast.rerun's fingerprint parts, as the user knows those inputs."""
    names = []
    for part in parts:
        kind, _, path = part.partition(":")
        if kind == "contacts":
            names.append("the sheet")
        elif kind == "optout":
            names.append(f"the opt-out list ({Path(path).name})")
        else:
            names.append(f"suppression list {Path(path).name}")
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def _nothing_left(prepared: Prepared, options: SendOptions) -> list[str]:
    """Nothing to send — said truthfully: rows that failed or never went are not 'finished'."""
    failed = prepared.journal_counts.get("failed", 0)
    if not failed:
        return ["Nothing left to send: every sendable row is already finished."]
    return [
        f"Nothing to send now, but {plural(failed, 'row')} failed and {'was' if failed == 1 else 'were'} "
        f"never delivered: see {_report_command(prepared, options)} --only failed --out failed.csv; "
        "send them again with --retry-failed"
    ]


def send_estimate(prepared: Prepared) -> Estimate:
    """The estimate for what this send has left, as planned (``Prepared.outlook``)."""
    return estimate(prepared.campaign, len(prepared.to_send), prepared.rate, prepared.outlook, prepared.planned_at)


def confirm_question(prepared: Prepared) -> str:
    recipients = len({r.phone for r in prepared.to_send})
    return (
        f"Send {plural(len(prepared.to_send), 'message')} to {plural(recipients, 'recipient')} at "
        f"{prepared.rate:g} msg/s (about {send_estimate(prepared).text})?"
    )


def final_exit_code(run: RunResult | None) -> int:
    if run is None:
        return 0
    if run.stop_kind == "interrupted":
        return 130
    if run.stop_kind == "campaign":
        return 3
    return 1 if run.stats.failed or run.stats.unknown else 0


def send_summary(result: SendResult, options: SendOptions, invocation: Invocation) -> list[str]:
    run = result.run
    assert run is not None
    stats = run.stats
    rate = (stats.sent + stats.duplicate + stats.failed) / result.elapsed_s if result.elapsed_s else 0.0
    unknown = f", outcome unknown {stats.unknown:,}" if stats.unknown else ""
    lines = [
        f"This run: sent {stats.sent:,}, duplicate {stats.duplicate:,}, failed {stats.failed:,}{unknown} "
        f"in {duration(result.elapsed_s)} ({rate:,.1f} msg/s; {stats.requests:,} requests, {stats.retries:,} retries)",
        "Journal: " + ", ".join(f"{s} {result.counts.get(s, 0):,}" for s in STATES),
    ]
    if result.sandbox_deliveries is not None:
        lines.append(f"Sandbox ledger: {result.sandbox_deliveries:,} deliveries (a rehearsal; nothing reached a phone)")
    lines += _follow_up_lines(result.follow_ups)
    if run.stop_reason:
        lines.append(f"Stopped: {run.stop_reason}")
    if run.capacity is not None:
        lines += capacity_lines(run.capacity)
    campaign = result.prepared.campaign.source
    if run.stop_kind == "capacity" and run.next_possible_at is not None:
        zone = str(run.capacity["timezone"]) if run.capacity else "UTC"
        when = datetime.fromtimestamp(run.next_possible_at, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")
        lines.append(f"Next send possible at {when} (in about {duration(run.next_possible_in_s or 0)}).")
        lines += cron_lines(campaign, options, invocation)
    elif run.stop_kind == "capacity" and run.next_possible_in_s is not None:
        lines.append(f"Next send possible in about {duration(run.next_possible_in_s)}.")
    remaining = sum(result.counts.get(state, 0) for state in UNFINISHED)
    follow = result.follow_ups
    if not remaining and run.stop_kind == "interrupted" and follow is not None:
        lines.append(f"Follow-ups remain. To resume, run: {resume_command(campaign, options)}")
    if remaining:
        lines.append(
            f"{plural(remaining, 'row')} {'remains' if remaining == 1 else 'remain'}. "
            f"To resume, run: {resume_command(campaign, options)}"
        )
    failed = result.counts.get("failed", 0)
    if failed:
        lines.append(
            f"{plural(failed, 'row')} failed: see {'it' if failed == 1 else 'them'} with "
            f"{_report_command(result.prepared, options)} --only failed --out failed.csv; retry with --retry-failed"
        )
    lines.append(f"Report: {_report_command(result.prepared, options)} --out results.csv")
    return lines


def capacity_lines(capacity: dict[str, Any]) -> list[str]:
    sent = capacity["sent_today"]
    left = capacity["remaining_today"]
    return [
        "First-touch sends today per line: " + ", ".join(f"{line} {n}" for line, n in sent.items()),
        f"Capacity left today: {sum(left.values()):,} (" + ", ".join(f"{line} {n}" for line, n in left.items()) + ")",
    ]


def _report_command(prepared: Prepared, options: SendOptions) -> str:
    args = ["report", str(prepared.campaign.source)]
    if options.journal is not None:
        args += ["--journal", str(options.journal)]
    if options.sandbox:
        args.append("--sandbox")
    return "chertcast " + shlex.join(args)


def send_json(prepared: Prepared, result: SendResult | None, options: SendOptions, code: int) -> dict[str, Any]:
    run = result.run if result else None
    counts = result.counts if result and result.counts else prepared.journal_counts
    stats = run.stats if run else None
    return {
        "campaign": prepared.campaign.id,
        "journal": str(prepared.journal_path),
        "dry_run": options.dry_run,
        "sandbox": options.sandbox,
        "to_send": len(prepared.to_send),
        "sent": stats.sent if stats else 0,
        "duplicate": stats.duplicate if stats else 0,
        "failed": stats.failed if stats else 0,
        "unknown": stats.unknown if stats else 0,
        "requests": stats.requests if stats else 0,
        "retries": stats.retries if stats else 0,
        "journal_counts": {s: counts.get(s, 0) for s in STATES},
        "stop_kind": run.stop_kind if run else None,
        "stop_reason": run.stop_reason if run else None,
        "elapsed_s": round(result.elapsed_s, 3) if result else 0.0,
        "sandbox_deliveries": result.sandbox_deliveries if result else None,
        "follow_ups": _follow_up_json(result.follow_ups if result else None),
        "resume_command": resume_command(prepared.campaign.source, options),
        "exit_code": code,
    }


# ----------------------------------------------------------------- status


STATUS_TIMES = ("created_at", "last_run_started_at", "last_progress_at")  # journal meta keys status shows


def status_json(
    campaign_id: str,
    counts: Mapping[str, int],
    top_errors: Iterable[tuple[int | None, str, int]],
    times: Mapping[str, str | None],
) -> dict[str, Any]:
    """``times``: the journal's ``STATUS_TIMES`` as stored (epoch seconds as text, or None)."""
    return {
        "campaign": campaign_id,
        "total": sum(counts.values()),
        **{state: counts.get(state, 0) for state in STATES},
        "top_errors": [{"code": c, "message": m, "count": n} for c, m, n in top_errors],
        **{name: _iso(times.get(name)) for name in STATUS_TIMES},
    }


def _iso(value: str | float | None) -> str | None:
    """Every moment `status` shows: ISO 8601 in UTC to the second, ``2026-11-28T12:33:54+00:00``."""
    if value is None or not math.isfinite(float(value)):
        return None
    return datetime.fromtimestamp(float(value), tz=UTC).isoformat(timespec="seconds")


def capacity_json(capacity: dict[str, object] | None) -> dict[str, object] | None:
    """``outlook.capacity_status`` for `status`: the next slot as an ISO moment, like every other time there."""
    if capacity is None or "next_possible_at" not in capacity:
        return capacity
    at = capacity["next_possible_at"]
    return {**capacity, "next_possible_at": _iso(at) if isinstance(at, int | float) else None}


def journal_args(journal: Path | None, sandbox: bool) -> str:
    """The options that chose the journal, for a command shown to the user (as they gave them)."""
    if journal is not None:
        return " --journal " + shlex.quote(str(journal))
    return " --sandbox" if sandbox else ""


def status_lines(
    data: dict[str, Any], path: Any, campaign: object = "CAMPAIGN", sandbox: bool = False, journal: Path | None = None
) -> list[str]:
    """``path``: the journal; ``campaign`` and ``sandbox``: as given to `status`, for the commands shown."""
    lines = [f"Campaign {data['campaign']} ({path})", f"  total        {data['total']:>7,}"]
    lines += [f"  {state:<12} {data[state]:>7,}" for state in STATES]
    if data.get("unknown"):
        lines.append(
            f"  outcome unknown for {data['unknown']:,} rows: the next `chertcast send` resends them "
            "with the same keys, and Chert's answer settles them"
        )
    lines.append(f"  started      {data['created_at'] or '-'}")
    lines.append(f"  last run     {data['last_run_started_at'] or '-'}")
    lines.append(f"  last progress {data['last_progress_at'] or '-'}")
    if data.get("running"):
        lines.append(f"  run in progress: {data['running']['description']} (a new `send` leaves it to finish)")
    capacity = data.get("capacity")
    if capacity and capacity.get("lines_known"):
        zone = ZoneInfo(str(capacity["timezone"]))
        lines += ["Capacity:", *[f"  {line}" for line in capacity_lines(capacity)]]
        if capacity.get("next_possible_at"):
            moment = datetime.fromisoformat(str(capacity["next_possible_at"])).astimezone(zone)
            lines.append(f"  next first-touch send possible at {moment.strftime('%Y-%m-%d %H:%M %Z')}")
        lines.append(f"  rows held by quiet hours right now: {capacity['held_by_quiet_hours']:,}")
    elif capacity is not None:
        lines.append("Capacity: no sender line known yet (list them in [capacity] lines)")
    elif data.get("held_by_quiet_hours") is not None:  # capacity planning off, quiet hours on
        lines.append(f"Quiet hours: {plural(data['held_by_quiet_hours'], 'row')} held right now")
    lines += outcome_lines(data, campaign, sandbox, journal)
    if data.get("last_sync_at") is not None:
        lines += no_opt_out_list_line(data, campaign)
    lines += follow_up_status_lines(data.get("follow_up"))
    if data["top_errors"]:
        lines.append(
            "Most common errors (the last answer of each row that has one; rows still pending may yet be sent):"
        )
        lines += [
            f"  {e['count']:>6,} × {_error_label(e['code'], e['message'])}: {e['message']}" for e in data["top_errors"]
        ]
    return lines


OUTCOME_ROWS = (  # status's lines after the send: (key of the counts, label)
    ("delivered", "delivered"),
    ("failed_after_send", "failed delivery"),
    ("read", "read"),
    ("replied", "replied"),
    ("opted_out", "opted out"),
    ("needs_review", "needs review"),
)
NO_LIST = object()  # ``outcome_lines``: the campaign's opt-out list is not known here


def outcome_lines(
    data: dict[str, Any], campaign: object = "CAMPAIGN", sandbox: bool = False, journal: Path | None = None
) -> list[str]:
    """After the send (filled by `chertcast sync`): delivered, failed delivery, read, replied, opted out.

    ``data["opt_out_list"]`` (when present): the campaign's list, None when it names none.
    ``campaign``, ``sandbox``: for the report command shown."""
    if data.get("last_sync_at") is None:
        return ["After the send: not synced yet (run `chertcast sync` to fetch delivery, replies and opt-outs)"]
    lines = [f"After the send (last sync {data['last_sync_at']}; shares of sent):"]
    for name, label in OUTCOME_ROWS:
        share = data.get(f"{name}_share")
        shown = f"{share:.1%}" if isinstance(share, float) else "-"
        lines.append(f"  {label:<15} {data.get(name, 0):>7,}  {shown:>6}")
    failed = data.get("failed_after_send", 0)
    if failed:
        lines.append(
            f"  {plural(failed, 'message was', 'messages were')} accepted by Chert, then failed delivery "
            f"(the journal keeps them as sent); Chert's reasons: chertcast report {shlex.quote(str(campaign))}"
            f"{journal_args(journal, sandbox)} --only failed-delivery --out undelivered.csv"
        )
    if data.get("needs_review"):
        where = (
            "and listed with review=yes in the opt-out list"
            if data.get("opt_out_list", NO_LIST) is not None
            else "and flagged `review` in the report's opted_out column"
        )
        lines.append(
            f"  {plural(data['needs_review'], 'reply contains', 'replies contain')} an opt-out word inside a "
            f"longer text: suppressed, {where} for a person to check"
        )
    return lines


def no_opt_out_list_line(data: dict[str, Any], campaign: object) -> list[str]:
    """Opt-outs recorded by a campaign that names no opt-out list: they cannot carry over."""
    held = data.get("opted_out", 0) + data.get("needs_review", 0)
    if data.get("opt_out_list", NO_LIST) is not None or not held:
        return []
    return [
        f"  no opt_out_list is configured: these {plural(held, 'opt-out')} are honoured only in this "
        "campaign's journal (its follow-ups stop for them); other campaigns will still message these numbers. "
        f'Add opt_out_list = "optouts.csv" to {shlex.quote(str(campaign))} (a CSV beside it, shared by '
        "campaigns) and run sync again: it writes them all"
    ]


def sync_json(campaign_id: str, result: Any) -> dict[str, Any]:
    stats = result.stats
    return {
        "campaign": campaign_id,
        "journal": str(result.journal),
        "opt_out_list": None if result.opt_out_list is None else str(result.opt_out_list),
        "seconds": round(result.seconds, 3),
        "requests": stats.requests,
        "event_pages": stats.event_pages,
        "status_requests": stats.status_requests,
        "statuses_checked": stats.status_checked,
        "events_new": stats.events_new,
        "events_repeated": stats.events_repeated,
        "replies_new": stats.replies_new,
        "opt_outs_new": stats.opt_outs_new,
        "needs_review_new": stats.review_new,
        "opt_out_list_added": stats.list_added,
        "retries": stats.retries,
        "errors": stats.errors,
        **result.counts,
    }


def sync_lines(data: dict[str, Any], campaign: Any, sandbox: bool = False, journal: Path | None = None) -> list[str]:
    listed = (
        f"added to the opt-out list {data['opt_out_list_added']:,}"
        if data.get("opt_out_list") is not None
        else "no opt-out list"
    )
    lines = [
        f"Synced {data['campaign']} in {data['seconds']:.1f} s: {plural(data['requests'], 'request')} "
        f"({plural(data['status_requests'], 'status lookup')}, {plural(data['event_pages'], 'event page')})",
        f"  new replies {data['replies_new']:,}, new opt-outs {data['opt_outs_new']:,}, "
        f"new to review {data['needs_review_new']:,}, {listed}",
        *outcome_lines(data, campaign, sandbox, journal)[1:],
        *no_opt_out_list_line(data, campaign),
        f"Next: chertcast status {campaign}{journal_args(journal, sandbox)}   "
        "(rerun sync any time: it resumes and never counts twice)",
    ]
    return lines


def _error_label(code: int | None, message: str) -> str:
    """A Chert code; else the HTTP status of a non-Chert answer; else the connection's trouble."""
    if code is not None:
        return str(code)
    if message.startswith(NEVER_SENDABLE):  # chertcast's own note: quiet hours and the window never meet
        return "not sendable"
    first = message.split(" ", 2)
    if first[0] == "HTTP" and len(first) > 1 and first[1].isdigit():
        return f"HTTP {first[1]}"
    return "no connection" if " connecting to " in message else "network"


# ----------------------------------------------------------------- report

REPORT_HEADERS = [
    "e164_phone",
    "state",
    "message_id",
    "error_code",
    "error_message",
    "note",
    "phone_column",
    *OUTCOME_HEADERS,
]
ONLY_FAILED_DELIVERY = "failed-delivery"  # `report --only`: sent (Chert accepted it), then delivery failed
REPORT_ONLY = (*STATES, ONLY_FAILED_DELIVERY)
_UNSETTLED_NOTES = {
    "unknown": "outcome unknown: the next `chertcast send` resends it with the same key, and Chert's answer settles it",
    "sending": "in flight, or outcome unknown if no run is going: the next `chertcast send` settles it",
}


def failed_delivery_note(after: AfterSend) -> str:
    """The report's note for a message Chert accepted and then could not deliver."""
    return "sent, then failed delivery" + (f": {after.delivery_error}" if after.delivery_error else "")


def report_rows(
    plan: Plan,
    journal_rows: list[JournalRow],
    only: str | None,
    outcomes: Mapping[str, AfterSend] | None = None,
    follow_ups: tuple[list[str], Mapping[str, tuple[Any, ...]]] = ([], {}),
) -> tuple[list[str], list[list[object]]]:
    """Each sheet row with the outcome of the person on it, joined by key (who they are), never by
    row position; recipients journaled but no longer in the sheet follow, so no delivery drops out.

    A number's outcome goes on its sendable row; when no row of it is sendable any more (newly
    suppressed, say), on its first row. ``only`` keeps the rows in that journal state, or with
    ``"failed-delivery"`` the rows sent whose delivery then failed (their state stays ``sent``:
    Chert accepted them). ``outcomes`` (from `sync`) fills the ``OUTCOME_HEADERS`` columns and
    notes a failed delivery; ``follow_ups`` adds each follow-up step's columns (headers, key → cells).
    """
    step_headers, by_key = follow_ups
    blank = ("",) * len(step_headers)
    synced = outcomes or {}
    no_outcome = (*AfterSend().cells(), *blank)
    entries = {row.key: row for row in journal_rows if not row.key.startswith("skip:")}
    sendable_keys = {r.key for r in plan.sendable}
    used: set[str] = set()
    rows: list[tuple[str, bool, list[object]]] = []

    def after(key: str | None) -> tuple[bool, tuple[object, ...]]:
        """(failed delivery?, the outcome and follow-up cells) of the recipient with this key."""
        if key is None:
            return False, no_outcome
        seen = synced.get(key, AfterSend())
        return seen.failed_delivery, (*seen.cells(), *by_key.get(key, blank))

    for recipient, cells in zip(plan.recipients, plan.sheet.frame.iter_rows(), strict=True):
        key = recipient.key
        sendable = recipient.status == "sendable"
        entry = None
        if key is not None and key not in used and (sendable or key not in sendable_keys):
            entry = entries.get(key)
            if entry is not None or sendable:
                used.add(key)
        state, row_cells = _report_row(recipient, cells, entry)
        failed, extra = after(entry.key if entry else None)
        if failed and entry is not None:
            row_cells[-2] = _joined(failed_delivery_note(synced[entry.key]), row_cells[-2])
        rows.append((state, failed, [*row_cells, *extra]))
    width = len(plan.sheet.headers)
    for entry in journal_rows:  # journaled, but no longer in the sheet: keep their history
        if entry.key not in used and not entry.key.startswith("skip:"):
            note = f"not in the sheet any more (was row {entry.row})"
            failed, extra = after(entry.key)
            if failed:
                note = _joined(failed_delivery_note(synced[entry.key]), note)
            cells_out = ["", *([""] * width), entry.phone or "", *_outcome(entry), note, "", *extra]
            rows.append((entry.state, failed, cells_out))
    headers = ["row", *plan.sheet.headers, *REPORT_HEADERS, *step_headers]
    if only == ONLY_FAILED_DELIVERY:
        return headers, [cells for _, failed, cells in rows if failed]
    return headers, [cells for state, _, cells in rows if only in (None, state)]


def _joined(first: str, second: object) -> str:
    return f"{first}; {second}" if second else first


def _report_row(recipient: Recipient, cells: tuple[str, ...], entry: JournalRow | None) -> tuple[str, list[object]]:
    """state, and the row's cells up to phone_column (the note second to last)."""
    phone = recipient.phone or ""
    source = recipient.phone_column or ""
    reason = f"{recipient.status}: {recipient.reason}"
    if entry is None:
        state = "pending" if recipient.status == "sendable" else "skipped"
        message = "" if state == "pending" else reason
        return state, [recipient.row, *cells, phone, state, "", "", message, "", source]
    note = _UNSETTLED_NOTES.get(entry.state, "")
    if recipient.status != "sendable":
        note = f"now {recipient.status} ({recipient.reason})"
    return entry.state, [recipient.row, *cells, phone, *_outcome(entry), note, source]


def _outcome(entry: JournalRow) -> list[object]:
    """state, message_id, error_code, error_message."""
    code = entry.error_code if entry.error_code is not None else ""
    return [entry.state, entry.message_id or "", code, entry.error_message or ""]


# ------------------------------------------------------------------ follow-up steps


def sequence_json(
    plan: Plan, steps: Mapping[int, Plan], now: float, outlook: CapacityOutlook | None, eta: Estimate
) -> list[dict[str, Any]]:
    """Per follow-up step: its delay, stop rule, sendable rows, findings, and the calendar: the
    earliest and latest moment it falls due (the first touches' span plus the delays so far;
    quiet hours and the window can push each one later, within a day)."""
    first_start, first_end = _first_touch_span(plan.campaign, now, outlook, eta)
    first_keys = {r.key for r in plan.sendable}
    known = {(issue.row, issue.column, issue.code) for issue in plan.issues}
    out, delay = [], 0.0
    for number, follow in enumerate(plan.campaign.follow_up, start=2):
        delay += follow.delay_s
        step_plan = steps[number]
        sendable = first_keys & {r.key for r in step_plan.sendable}  # a follow-up goes only where step 1 went
        out.append(
            {
                "step": number,
                "after": follow.after,
                "stop_on": list(follow.stop_on),
                "sendable": len(sendable),
                "errors": len(first_keys - sendable),
                "due_from": _utc_minutes(first_start + delay),
                "due_until": _utc_minutes(first_end + delay),
                "issues": [  # this step's own findings: the sheet's phone problems are step 1's
                    {**issue.as_json(), "step": number}
                    for issue in step_plan.issues
                    if (issue.row, issue.column, issue.code) not in known
                ],
            }
        )
    return out


def _first_touch_span(
    campaign: Campaign, now: float, outlook: CapacityOutlook | None, eta: Estimate
) -> tuple[float, float]:
    calendar = outlook.calendar if outlook is not None else None
    if calendar is not None and calendar.last_at is not None:
        return now, max(now, calendar.last_at)
    if calendar is not None and calendar.finish is not None:
        end = datetime.combine(calendar.finish, datetime.max.time(), campaign.capacity.planning_rules().zone)
        return now, max(now, end.timestamp())
    return now, now + (eta.seconds or 0.0)


def _utc_minutes(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="minutes").replace("+00:00", "Z")


def sequence_lines(
    plan: Plan, steps: Mapping[int, Plan], now: float, outlook: CapacityOutlook | None, eta: Estimate
) -> list[str]:
    """check's text for the steps after the first touch: the calendar, then each step's findings."""
    lines = []
    for entry in sequence_json(plan, steps, now, outlook, eta):
        stop = " or ".join(s.replace("_", "-") for s in entry["stop_on"])
        errors = f", {plural(entry['errors'], 'row')} with problems" if entry["errors"] else ""
        lines.append(
            f"  step {entry['step']}: {entry['after']} after step {entry['step'] - 1} is delivered, "
            f"unless they {stop}: {plural(entry['sendable'], 'message')}{errors}; "
            f"due from {entry['due_from']}, for the last recipient by {entry['due_until']} "
            "(plus any wait for quiet hours)"
        )
        for issue in entry["issues"][:UNSENDABLE_SHOWN]:
            where = f"row {issue['row']}" if issue["row"] is not None else "template"
            lines.append(f"    step {entry['step']}, {where}: {issue['message']}")
    return lines


def follow_up_status_lines(data: Mapping[str, Any] | None) -> list[str]:
    if not data:
        return []
    lines = ["Follow-ups:"]
    for step in data["steps"]:
        lines.append(
            f"  step {step['step']}: sent {step['sent']:,}, duplicate {step['duplicate']:,}, "
            f"failed {step['failed']:,}, in flight {step['sending']:,}, delivered {step['delivered']:,}"
        )
    where = ", ".join(f"{why} {count:,}" for why, count in data["sequences"].items())
    held = f" (the first may go at {data['held_until']})" if data.get("held_until") else ""
    lines.append(f"  sequences: {where or 'none started'}{held}")
    return lines


def _follow_up_json(stats: FollowUpStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {
        "sent": stats.sent,
        "duplicate": stats.duplicate,
        "failed": stats.failed,
        "requests": stats.requests,
        "status_requests": stats.status_requests,
        "by_step": {str(step): n for step, n in sorted(stats.by_step.items())},
        "waiting_reason": stats.waiting_reason,
        "next_due_at": _utc_minutes(stats.next_due_at) if stats.next_due_at is not None else None,
        "held": dict(stats.held),
        "held_until": _utc_minutes(stats.held_until) if stats.held_until is not None else None,
    }


def _follow_up_lines(stats: FollowUpStats | None) -> list[str]:
    if stats is None:
        return []
    steps = ", ".join(f"step {step} {n:,}" for step, n in sorted(stats.by_step.items())) or "none due"
    lines = [
        f"Follow-ups this run: {steps} (sent {stats.sent:,}, duplicate {stats.duplicate:,}, failed {stats.failed:,})"
    ]
    for by, n in sorted(stats.held.items()):
        until = f" until {_utc_minutes(stats.held_until)}" if stats.held_until is not None else ""
        lines.append(f"Follow-ups held: {n:,} due, held by {by}{until}")
    if stats.waiting_reason:
        lines.append(f"Follow-ups: {stats.waiting_reason}; first touches were not held back")
    elif stats.next_due_at is not None:
        lines.append(f"Next follow-up check: {_utc_minutes(stats.next_due_at)} (run send again then, or use --wait)")
    return lines
