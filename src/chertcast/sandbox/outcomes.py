"""What happens after a sandbox send: delivery, read receipts, failures and replies.

Each recipient's fate is a pure function of (seed, phone, message id, send time): the same seed
gives the same story in every sandbox process, so a built-in sandbox started by `chertcast sync
--sandbox` tells the story of messages a previous run's sandbox sent. A message moves
``sent → delivered → read`` (or ``sent → failed``) at scheduled moments; a share of the
delivered recipients reply, and each reply becomes one ``message.received`` event in the log
once its moment has come. Shapes follow SPEC §12; every choice where Chert's docs are silent
is listed in docs/sandbox.md.

The event log is ordered by ``(created_at, event_id)``. An event is visible once ``created_at``
has passed, and every event is scheduled after the moment it is created, so events become
visible in log order: a cursor — "after (created_at, event_id)" — never skips one.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

ReplyKind = Literal["opt_out", "contains_word", "ordinary"]

# Opt-outs in the forms people type them (all meant as opt-outs).
OPT_OUT_FORMS = (
    "STOP",
    "stop",
    "stop.",
    "Stop please",
    "STOP!!!",
    " Stop ",
    "UNSUBSCRIBE",
    "unsubscribe",
    "opt out",
    "Opt-out",
    "OPTOUT",
    "remove me",
    "Remove me please",
    "QUIT",
    "cancel",
    "End",
    "REVOKE",
    "STOPALL",
    "please stop",
    "Stop 🛑",
)
# Ordinary answers that merely contain such a word: not opt-outs, flagged for review.
CONTAINS_WORD_FORMS = (
    "I can't stop by today",
    "Can we cancel Tuesday and do Friday?",
    "Will this offer end soon?",
    "Don't stop sending these, they're great",
    "How do I opt out of the paper statements?",
)
ORDINARY_FORMS = (
    "Yes please!",
    "Thanks, sounds good",
    "Who is this?",
    "Call me tomorrow",
    "What time does the event start?",
    "👍",
    "Sure, see you at the weekend",
    "Not interested right now",
    "Stopped by yesterday, all good",
    "ok",
)


@dataclass
class OutcomeConfig:
    """Shares and timing of what happens after a send. Seeded: same seed, same story."""

    seed: int = 2  # the default: the demo campaign then shows both an opt-out and a reply to review
    failed_share: float = 0.02  # of sent: never delivered (status failed)
    read_share: float = 0.6  # of delivered: read receipts on
    reply_share: float = 0.3  # of delivered: reply
    opt_out_share: float = 0.1  # of replies: an opt-out word in one of its forms
    contains_word_share: float = 0.05  # of replies: an ordinary answer merely containing such a word
    delay_s: float = 5.0  # delivery comes within this after the send; reads and replies within 2x after that


@dataclass(frozen=True, slots=True)
class Fate:
    """One sent message's scheduled story (epoch seconds; None: never happens)."""

    message_id: str
    lead_id: str
    phone: str
    sent_at: float
    delivered_at: float | None
    read_at: float | None
    failed_at: float | None
    reply_at: float | None
    reply_text: str | None
    reply_kind: ReplyKind | None
    event_id: str | None

    def status(self, now: float) -> tuple[str, float | None, float | None]:
        """(status, delivered_at, read_at) as seen at ``now``."""
        if self.failed_at is not None and now >= self.failed_at:
            return "failed", None, None
        delivered = self.delivered_at if self.delivered_at is not None and now >= self.delivered_at else None
        read = self.read_at if self.read_at is not None and now >= self.read_at else None
        return ("read" if read else "delivered" if delivered else "sent"), delivered, read


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fate_of(config: OutcomeConfig, phone: str, message_id: str, lead_id: str, sent_at: float) -> Fate:
    """The story of one message: a pure function of the seed and the recipient."""
    rng = random.Random(f"{config.seed}:{phone}")
    delay = config.delay_s
    if rng.random() < config.failed_share:
        failed_at = sent_at + rng.uniform(0.05, 1.0) * delay
        return Fate(message_id, lead_id, phone, sent_at, None, None, failed_at, None, None, None, None)
    delivered_at = sent_at + rng.uniform(0.05, 1.0) * delay
    read_at = delivered_at + rng.uniform(0.05, 2.0) * delay if rng.random() < config.read_share else None
    reply_at = reply_text = event_id = None
    kind: ReplyKind | None = None
    if rng.random() < config.reply_share:
        reply_at = delivered_at + rng.uniform(0.05, 2.0) * delay
        draw = rng.random()
        if draw < config.opt_out_share:
            kind, reply_text = "opt_out", rng.choice(OPT_OUT_FORMS)
        elif draw < config.opt_out_share + config.contains_word_share:
            kind, reply_text = "contains_word", rng.choice(CONTAINS_WORD_FORMS)
        else:
            kind, reply_text = "ordinary", rng.choice(ORDINARY_FORMS)
        event_id = "evt_" + hashlib.sha256(f"{config.seed}:{message_id}:reply".encode()).hexdigest()[:24]
    return Fate(message_id, lead_id, phone, sent_at, delivered_at, read_at, None, reply_at, reply_text, kind, event_id)


def message_object(fate: Fate, body: str, now: float) -> dict[str, Any]:
    """The outbound message as SPEC §12 shapes it, as seen at ``now``."""
    status, delivered, read = fate.status(now)
    data: dict[str, Any] = {
        "id": fate.message_id,
        "chat_id": fate.lead_id,
        "direction": "outbound",
        "status": status,
        "parts": [{"type": "text", "value": body}],
        "created_at": iso(fate.sent_at),
        "delivered_at": iso(delivered) if delivered else None,
        "read_at": iso(read) if read else None,
        "service": "imessage",
    }
    if status == "failed":
        data["error_code"] = 6001
        data["error_message"] = "Recipient is not reachable on iMessage"
    return data


def reply_event(fate: Fate, sequence: int) -> dict[str, Any]:
    """A ``message.received`` item of ``GET /events`` (SPEC §12)."""
    assert fate.reply_at is not None and fate.event_id is not None and fate.reply_text is not None
    at = iso(fate.reply_at)
    inbound = {
        "id": "msg_in_" + fate.event_id[4:],
        "chat_id": fate.lead_id,
        "direction": "inbound",
        "status": "delivered",
        "parts": [{"type": "text", "value": fate.reply_text}],
        "created_at": at,
        "delivered_at": at,
        "read_at": None,
        "service": "imessage",
    }
    payload = {
        "event": "message.received",
        "event_id": fate.event_id,
        "timestamp": at,
        "data": {"chat": {"id": fate.lead_id}, "message": inbound},
    }
    return {
        "id": f"ev_{sequence}",
        "type": "message.received",
        "event_id": fate.event_id,
        "lead_id": fate.lead_id,
        "convo_id": None,
        "payload": payload,
        "created_at": at,
    }


class CursorError(ValueError):
    """A cursor this log did not hand out."""


def encode_cursor(position: tuple[float, str]) -> str:
    raw = json.dumps([position[0], position[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, event_id = json.loads(raw)
        return float(at), str(event_id)
    except (ValueError, TypeError):
        raise CursorError(f"invalid cursor {cursor[:40]!r}") from None


class EventLog:
    """The replies, ordered by (created_at, event_id); visible once created_at has passed."""

    def __init__(self) -> None:
        self._order: list[tuple[float, str]] = []
        self._fates: dict[str, Fate] = {}

    def add(self, fate: Fate) -> None:
        if fate.event_id is None or fate.reply_at is None or fate.event_id in self._fates:
            return
        self._fates[fate.event_id] = fate
        bisect.insort(self._order, (fate.reply_at, fate.event_id))

    def visible(self, now: float) -> list[Fate]:
        end = bisect.bisect_right(self._order, (now, "\uffff"))
        return [self._fates[event_id] for _, event_id in self._order[:end]]

    def page(
        self, now: float, *, limit: int, cursor: str | None, since: float | None, lead_id: str | None
    ) -> dict[str, Any]:
        """One page of ``GET /events``: oldest first; ``next_cursor`` null at the end of the log."""
        start = 0
        if cursor is not None:
            start = bisect.bisect_right(self._order, decode_cursor(cursor))
        if since is not None:
            start = max(start, bisect.bisect_left(self._order, (since, "")))
        end = bisect.bisect_right(self._order, (now, "\uffff"))
        chosen: list[tuple[int, tuple[float, str]]] = []
        index = start
        while index < end and len(chosen) < limit:
            position = self._order[index]
            if lead_id is None or self._fates[position[1]].lead_id == lead_id:
                chosen.append((index, position))
            index += 1
        more = index < end
        events = [reply_event(self._fates[p[1]], i + 1) for i, p in chosen]
        next_cursor = encode_cursor(self._order[index - 1]) if more else None
        return {"events": events, "next_cursor": next_cursor, "count": len(events)}
