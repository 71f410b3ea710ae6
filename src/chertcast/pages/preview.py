"""The preview page: every recipient's message as iMessage bubbles, the sheet's problems on top."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from chertcast.pages.base import no_cycle_collection, render
from chertcast.preflight import AttachmentRef, Plan, Recipient
from chertcast.render import bubbles

STATUSES = ("sendable", "error", "duplicate", "suppressed")
PAGE_SIZE = 100  # cards the script draws at a time: a 100,000-row sheet paints as fast as a small one


def preview_page(plan: Plan) -> str:
    with no_cycle_collection():
        return _page(plan)


def _page(plan: Plan) -> str:
    counts = plan.counts()
    return render(
        "preview.html.j2",
        campaign=plan.campaign.id,
        contacts=plan.sheet.path.name,
        total=len(plan.recipients),
        counts=[(status, counts.get(status, 0)) for status in STATUSES],
        issues=plan.issues,
        recipients=[recipient_json(r) for r in plan.recipients],
        page_size=PAGE_SIZE,
    )


def recipient_json(recipient: Recipient) -> list[Any]:
    """One card, as a compact array (the page's script names the fields):
    row, name, phone (E.164, else as written), status, reason, bubbles, effect, attachments, as written."""
    body = recipient.body
    return [
        recipient.row,
        recipient.name or "",
        recipient.phone or recipient.raw_phone,
        recipient.status,
        recipient.reason,
        bubbles(body) if body is not None else [],
        recipient.effect or "",
        [attachment_label(a) for a in recipient.attachments] if recipient.attachments else [],
        recipient.raw_phone if recipient.raw_phone != recipient.phone else "",
    ]


def attachment_label(ref: AttachmentRef) -> str:
    """A file's name (not the folders it sits in), or the Chert attachment id."""
    return PurePath(ref.value).name if ref.is_file else ref.value
