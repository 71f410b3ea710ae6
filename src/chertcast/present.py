"""Text people read: summaries, problem tables, message bubbles. No logic lives here."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable
from typing import Any

from chertcast.preflight import Issue, Plan, Recipient
from chertcast.render import bubbles

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


def plan_summary(plan: Plan) -> list[str]:
    counts = plan.counts()
    errors = sum(1 for i in plan.issues if i.severity == "error")
    warnings = sum(1 for i in plan.issues if i.severity == "warning" and i.code != "duplicate")
    settings = plan.campaign.send
    lines = [
        f"Campaign {plan.campaign.id}: {plan.sheet.path.name}, {len(plan.recipients)} rows read",
        *[f"  {note}" for note in plan.notes],
        f"  sendable     {counts['sendable']:>7,}",
        f"  errors       {counts['error']:>7,} rows ({errors} problems)",
        f"  warnings     {warnings:>7,}",
        f"  duplicates   {counts['duplicate']:>7,}",
        f"  suppressed   {counts['suppressed']:>7,}",
        f"  estimated send time: {duration(plan.estimated_seconds())} at {settings.rate:g} msg/s",
    ]
    return lines


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
        "phone_column": plan.phone_column,
        "total": len(plan.recipients),
        "sendable": counts["sendable"],
        "errors": counts["error"],
        "duplicates": counts["duplicate"],
        "suppressed": counts["suppressed"],
        "warnings": sum(1 for i in plan.issues if i.severity == "warning" and i.code != "duplicate"),
        "estimated_seconds": round(plan.estimated_seconds(), 1),
        "issues": [issue.as_json() for issue in plan.issues],
    }


def bubble_view(recipient: Recipient, width: int = 64) -> list[str]:
    who = f" · {recipient.name}" if recipient.name else ""
    head = f"── row {recipient.row} · {recipient.phone or recipient.raw_phone or '(no phone)'}{who} "
    lines = [head + "─" * max(0, width - len(head)) ]
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
        yield [recipient.row, *cells, recipient.phone or "", recipient.status,
               recipient.reason, recipient.body or "", recipient.key or ""]  # fmt: skip
