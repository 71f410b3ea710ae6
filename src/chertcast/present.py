"""Text people read: summaries, problem tables, message bubbles. No logic lives here."""

from __future__ import annotations

import os
import shlex
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from chertcast.capacity import estimate_calendar
from chertcast.engine import RunResult
from chertcast.journal import STATES, Journal, JournalRow
from chertcast.preflight import Issue, Plan, Recipient
from chertcast.render import bubbles
from chertcast.runner import Prepared, SendOptions, SendResult, journal_counts

_FIX_WORDS = {
    "phone_empty": ("fill", "empty phone cell"),
    "phone_invalid": ("fix", "phone number"),
    "phone_scientific": ("fix", "phone number in scientific notation"),
    "empty_variable": ("fill", "empty cell"),
    "render_failed": ("fix", "row the template cannot render"),
    "body_empty": ("fix", "empty message"),
    "body_too_long": ("shorten", "message"),
    "attachment_missing": ("fix", "missing attachment file"),
    "duplicate": ("remove", "duplicate number"),
    "not_imessage": ("check", "number that may not receive iMessage"),
    "suppress_unreadable": ("fix", "unreadable suppression-list line"),
    "row_extra_cells": ("fix", "row with more cells than the header"),
    "phone_extension": ("check", "number with an extension"),
    "row_not_utf8": ("check", "row that is not UTF-8 like the rest of the file"),
    "cell_format_unknown": ("format", "cell chertcast cannot show as Excel does"),
}


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def calendar_lines(plan: Plan, now: float) -> list[str]:
    """check's calendar: how many sending days the sendable rows need with the campaign's lines."""
    settings = plan.campaign.capacity
    if not settings.enabled:
        return ["  calendar: capacity planning is off ([capacity] enabled = false)"]
    if not settings.lines:
        return ["  calendar: sender lines are discovered when sending; list them in [capacity] lines for an estimate"]
    calendar = estimate_calendar(settings.rules(), settings.lines, len(plan.sendable), now)
    window = f", window {settings.window_start}-{settings.window_end}" if settings.window_start else ""
    lines = [
        f"  calendar: {len(plan.sendable):,} first-touch sends on {calendar.lines} lines "
        f"({settings.line_daily_cap}/line/day, {settings.line_gap_minutes:g} min apart{window}, {settings.timezone}): "
        f"{calendar.sending_days} sending day{'s' if calendar.sending_days != 1 else ''}, "
        f"expected finish {calendar.finish or '-'}"
    ]
    if calendar.sending_days > settings.horizon_days:
        lines.append(
            f"  warning: the plan needs {calendar.sending_days} sending days, beyond the "
            f"{settings.horizon_days}-day horizon ([capacity] horizon_days): add lines or split the campaign"
        )
    return lines


def calendar_json(plan: Plan, now: float) -> dict[str, Any] | None:
    settings = plan.campaign.capacity
    if not settings.enabled or not settings.lines:
        return None
    calendar = estimate_calendar(settings.rules(), settings.lines, len(plan.sendable), now)
    return {
        "lines": calendar.lines,
        "sending_days": calendar.sending_days,
        "finish_date": calendar.finish.isoformat() if calendar.finish else None,
        "beyond_horizon": calendar.sending_days > settings.horizon_days,
    }


def plan_summary(plan: Plan) -> list[str]:
    counts = plan.counts()
    errors = sum(1 for i in plan.issues if i.severity == "error")
    warnings = sum(1 for i in plan.issues if i.severity == "warning" and i.code != "duplicate")
    settings = plan.campaign.send
    lines = [
        f"Campaign {plan.campaign.id}: {contacts_name(plan)}, {len(plan.recipients)} rows read",
        *[f"  {note}" for note in plan.notes],
        *[f"  suppression list {entry.summary()}" for entry in plan.lists],
        f"  sendable     {counts['sendable']:>7,}",
        f"  errors       {counts['error']:>7,} rows ({errors} problems)",
        f"  warnings     {warnings:>7,}",
        f"  duplicates   {counts['duplicate']:>7,}",
        f"  suppressed   {counts['suppressed']:>7,}",
        f"  estimated send time: {duration(plan.estimated_seconds())} at {settings.rate:g} msg/s",
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
        verb, noun = _FIX_WORDS.get(code, ("fix", code.replace("_", " ")))
        parts.append(f"{verb} {count} {noun}{'s' if count != 1 else ''}")
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


def check_json(plan: Plan) -> dict[str, Any]:
    counts = plan.counts()
    return {
        "campaign": plan.campaign.id,
        "contacts": str(plan.sheet.path),
        "sheet": plan.sheet.sheet_name,
        "suppression_lists": [entry.as_json() for entry in plan.lists],
        "phone_column": plan.phone_column,
        "total": len(plan.recipients),
        "sendable": counts["sendable"],
        "errors": counts["error"],
        "duplicates": counts["duplicate"],
        "suppressed": counts["suppressed"],
        "warnings": sum(1 for i in plan.issues if i.severity == "warning" and i.code != "duplicate"),
        "estimated_seconds": round(plan.estimated_seconds(), 1),
        "calendar": calendar_json(plan, time.time()),
        "issues": [issue.as_json() for issue in plan.issues],
    }


def bubble_view(recipient: Recipient, width: int = 64) -> list[str]:
    who = f" · {recipient.name}" if recipient.name else ""
    head = f"── row {recipient.row} · {recipient.phone or recipient.raw_phone or '(no phone)'}{who} "
    lines = [head + "─" * max(0, width - len(head))]
    if recipient.status != "sendable":
        lines.append(f"   not sent: {recipient.status}: {recipient.reason}")
        if recipient.body is None:
            return lines
    assert recipient.body is not None
    for index, bubble in enumerate(bubbles(recipient.body)):
        if index:
            lines.append("")
        for paragraph in bubble.split("\n"):
            for piece in textwrap.wrap(paragraph, width - 6) or [""]:
                lines.append(f"   │ {piece}")
    extras = [f"effect: {recipient.effect}"] if recipient.effect else []
    extras += [f"attachment: {a.value}" for a in recipient.attachments]
    lines += [f"   + {extra}" for extra in extras]
    lines.append(f"   key {recipient.key}")
    return lines


PREVIEW_HEADERS = ["e164_phone", "status", "reason", "body", "idempotency_key"]


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
        ]


# ------------------------------------------------------------------- send


def resume_command() -> str:
    return "chertcast " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "chertcast send CAMPAIGN"


def cron_line() -> str:
    """A crontab line that reruns this exact command every 15 minutes until the campaign is done."""
    program = Path(sys.argv[0]).resolve()
    runner = shlex.quote(str(program)) if program.name == "chertcast" else f"{shlex.quote(sys.executable)} -m chertcast"
    command = f"{runner} {shlex.join(sys.argv[1:])}"
    return f"*/15 * * * * cd {shlex.quote(os.getcwd())} && {command} >> send.log 2>&1"


def send_header(prepared: Prepared, options: SendOptions) -> list[str]:
    counts = prepared.plan.counts()
    skipped = len(prepared.plan.recipients) - counts["sendable"]
    mode = "DRY RUN: " if options.dry_run else ("SANDBOX: " if options.sandbox else "")
    lines = [
        f"{mode}campaign {prepared.campaign.id}: {len(prepared.to_send):,} to send now, "
        f"{prepared.already_done:,} already done, {skipped:,} rows not sendable (see `chertcast check`)",
        f"  rate {prepared.rate:g} msg/s, concurrency {prepared.concurrency}; "
        f"estimated {duration(max(0, len(prepared.to_send) - prepared.campaign.send.burst) / prepared.rate)}",
        f"  journal: {prepared.journal_path}",
    ]
    if options.dry_run:
        lines.append("Nothing was sent (dry run). To send for real: " + resume_command().replace(" --dry-run", ""))
    elif not prepared.to_send:
        lines.append("Nothing left to send: every sendable row is already finished.")
    return lines


def confirm_question(prepared: Prepared) -> str:
    recipients = len({r.phone for r in prepared.to_send})
    eta = duration(max(0, len(prepared.to_send) - prepared.campaign.send.burst) / prepared.rate)
    return (
        f"Send {len(prepared.to_send):,} messages to {recipients:,} recipients at "
        f"{prepared.rate:g} msg/s (about {eta})?"
    )


def final_exit_code(prepared: Prepared, run: RunResult | None) -> int:
    if run is None:
        return 0
    if run.stop_kind == "interrupted":
        return 130
    if run.stop_kind == "campaign":
        return 3
    return 1 if run.stats.failed else 0


def send_summary(result: SendResult, options: SendOptions) -> list[str]:
    run = result.run
    assert run is not None
    stats = run.stats
    rate = (stats.sent + stats.duplicate + stats.failed) / result.elapsed_s if result.elapsed_s else 0.0
    lines = [
        f"This run: sent {stats.sent:,}, duplicate {stats.duplicate:,}, failed {stats.failed:,} "
        f"in {duration(result.elapsed_s)} ({rate:,.1f} msg/s; {stats.requests:,} requests, {stats.retries:,} retries)",
        "Journal: " + ", ".join(f"{s} {result.counts.get(s, 0):,}" for s in STATES),
    ]
    if result.sandbox_deliveries is not None:
        lines.append(f"Sandbox ledger: {result.sandbox_deliveries:,} deliveries (a rehearsal; nothing reached a phone)")
    if run.stop_reason:
        lines.append(f"Stopped: {run.stop_reason}")
    if run.capacity is not None:
        lines += capacity_lines(run.capacity)
    if run.stop_kind == "capacity" and run.next_possible_at is not None:
        zone = str(run.capacity["timezone"]) if run.capacity else "UTC"
        when = datetime.fromtimestamp(run.next_possible_at, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")
        lines.append(f"Next send possible at {when} (in about {duration(run.next_possible_in_s or 0)}).")
        lines.append(f"Run the same command then, or let cron do it: {cron_line()}")
    elif run.stop_kind == "capacity" and run.next_possible_in_s is not None:
        lines.append(f"Next send possible in about {duration(run.next_possible_in_s)}.")
    remaining = result.counts.get("pending", 0) + result.counts.get("sending", 0)
    if remaining:
        lines.append(f"{remaining:,} rows remain. To resume, run: {resume_command()}")
    if result.counts.get("failed"):
        lines.append(
            f"{result.counts['failed']:,} rows failed: see them with "
            f"chertcast report {_campaign_arg()} --only failed --out failed.csv"
            f"{' --sandbox' if options.sandbox else ''}; retry with --retry-failed"
        )
    lines.append(
        f"Report: chertcast report {_campaign_arg()} --out results.csv{' --sandbox' if options.sandbox else ''}"
    )
    return lines


def capacity_lines(capacity: dict[str, Any]) -> list[str]:
    sent = capacity["sent_today"]
    left = capacity["remaining_today"]
    return [
        "First-touch sends today per line: " + ", ".join(f"{line} {n}" for line, n in sent.items()),
        f"Capacity left today: {sum(left.values()):,} (" + ", ".join(f"{line} {n}" for line, n in left.items()) + ")",
    ]


def _campaign_arg() -> str:
    args = [a for a in sys.argv[2:] if not a.startswith("-")]
    return shlex.quote(args[0]) if args else "CAMPAIGN"


def send_json(prepared: Prepared, result: SendResult | None, options: SendOptions, code: int) -> dict[str, Any]:
    run = result.run if result else None
    counts = result.counts if result and result.counts else journal_counts(prepared.journal_path, prepared.campaign.id)
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
        "requests": stats.requests if stats else 0,
        "retries": stats.retries if stats else 0,
        "journal_counts": {s: counts.get(s, 0) for s in STATES},
        "stop_kind": run.stop_kind if run else None,
        "stop_reason": run.stop_reason if run else None,
        "elapsed_s": round(result.elapsed_s, 3) if result else 0.0,
        "sandbox_deliveries": result.sandbox_deliveries if result else None,
        "resume_command": resume_command(),
        "exit_code": code,
    }


# ----------------------------------------------------------------- status


def status_json(campaign_id: str, journal: Journal) -> dict[str, Any]:
    counts = journal.counts()
    return {
        "campaign": campaign_id,
        "total": sum(counts.values()),
        **{state: counts.get(state, 0) for state in STATES},
        "top_errors": [{"code": c, "message": m, "count": n} for c, m, n in journal.top_errors()],
        "created_at": _iso(journal.meta("created_at")),
        "last_run_started_at": _iso(journal.meta("last_run_started_at")),
        "last_progress_at": _iso(journal.meta("last_progress_at")),
    }


def _iso(value: str | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(float(value), tz=UTC).isoformat(timespec="seconds")


def status_lines(data: dict[str, Any], path: Any) -> list[str]:
    lines = [f"Campaign {data['campaign']} ({path})", f"  total        {data['total']:>7,}"]
    lines += [f"  {state:<12} {data[state]:>7,}" for state in STATES]
    lines.append(f"  started      {data['created_at'] or '-'}")
    lines.append(f"  last run     {data['last_run_started_at'] or '-'}")
    lines.append(f"  last progress {data['last_progress_at'] or '-'}")
    capacity = data.get("capacity")
    if capacity and capacity.get("lines_known"):
        zone = ZoneInfo(str(capacity["timezone"]))
        when = datetime.fromtimestamp(float(capacity["next_possible_at"]), zone).strftime("%Y-%m-%d %H:%M %Z")
        lines += ["Capacity:", *[f"  {line}" for line in capacity_lines(capacity)]]
        lines.append(f"  next first-touch send possible at {when}")
        lines.append(f"  rows held by quiet hours right now: {capacity['held_by_quiet_hours']:,}")
    elif capacity is not None:
        lines.append("Capacity: no sender line known yet (list them in [capacity] lines)")
    if data["top_errors"]:
        lines.append("Most common errors:")
        lines += [
            f"  {e['count']:>6,} × {e['code'] if e['code'] is not None else 'network'}: {e['message']}"
            for e in data["top_errors"]
        ]
    return lines


# ----------------------------------------------------------------- report

REPORT_HEADERS = ["e164_phone", "state", "message_id", "error_code", "error_message"]


def report_rows(plan: Plan, journal_rows: list[JournalRow], only: str | None) -> tuple[list[str], list[list[object]]]:
    by_key = {row.key: row for row in journal_rows}
    width = len(plan.sheet.headers)
    rows: list[list[object]] = []
    seen: set[str] = set()
    for recipient, cells in zip(plan.recipients, plan.sheet.frame.iter_rows(), strict=True):
        key = recipient.key if recipient.status == "sendable" else f"skip:{recipient.row}"
        assert key is not None
        seen.add(key)
        entry = by_key.get(key)
        state = entry.state if entry else ("pending" if recipient.status == "sendable" else "skipped")
        message = (
            entry.error_message if entry and entry.error_message else (entry.reason if entry else recipient.reason)
        )
        rows.append(
            [
                recipient.row,
                *cells,
                recipient.phone or "",
                state,
                entry.message_id if entry else "",
                entry.error_code if entry and entry.error_code is not None else "",
                message or "",
            ]
        )
    for entry in journal_rows:  # journaled, but no longer in the sheet
        if entry.key not in seen:
            rows.append(
                [
                    entry.row,
                    *([""] * width),
                    entry.phone or "",
                    entry.state,
                    entry.message_id or "",
                    entry.error_code if entry.error_code is not None else "",
                    entry.error_message or "",
                ]
            )
    if only:
        rows = [r for r in rows if r[width + 2] == only]
    return ["row", *plan.sheet.headers, *REPORT_HEADERS], rows
