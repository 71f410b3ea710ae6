"""The sandbox's behaviour: Chert's API as documented (``/send``, attachments, message lookups,
the event log, phone numbers), as a plain-Python model.

Every choice the documentation leaves UNSPECIFIED is listed in ``docs/sandbox.md``; the
constants below are those choices. The model is thread-safe (one lock) because the uvicorn
server runs it in a background thread while tests read its ledger from the main thread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from chertcast.sandbox.capacity import CapacityLimits, LineCapacity
from chertcast.sandbox.outcomes import CursorError, EventLog, Fate, OutcomeConfig, fate_of, message_object

# Chert refuses a first message "containing URLs" (1005) by a rule it does not publish. This is
# the sandbox's own reading of it, kept apart from chertcast.links (what `check` warns with) so
# that a mistake in one shows as a disagreement instead of passing both: a scheme URL, www.…,
# a domain under a common top-level domain, or any domain followed by a path.
_LINK = re.compile(
    r"(?<![\w.@-])(?:[a-z][a-z0-9+.-]*://\S+|www\.\w\S*"
    r"|(?:[a-z0-9-]+\.)+(?:com|net|org|edu|gov|info|biz|xyz|io|co|ai|app|dev|ly|gl|gg|tv|uk|ca|de|fr|eu)(?![\w-])"
    r"|(?:[a-z0-9-]+\.)+[a-z]{2,63}/\S*)",
    re.IGNORECASE,
)

DEFAULT_SECRET = "5a4d0b0c5a4d0b0c5a4d0b0c5a4d0b0c"
DEFAULT_TENANT = "sandbox"
DEFAULT_LINES = ("pl_sandbox_line_1", "pl_sandbox_line_2", "pl_sandbox_line_3")
ALLOWED_EFFECTS = (
    "slam",
    "loud",
    "gentle",
    "invisible_ink",
    "echo",
    "spotlight",
    "balloons",
    "confetti",
    "love",
    "lasers",
    "fireworks",
    "celebration",
)
MAX_BODY_CHARS = 10_000
SIGNATURE_SKEW_S = 300
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
ALLOWED_MIME_PREFIXES = ("image/", "video/", "audio/")
ALLOWED_MIME_TYPES = ("application/pdf", "text/vcard", "text/x-vcard")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")

DropWhen = Literal["before", "after"]


@dataclass
class Faults:
    """What goes wrong, and how often. Probabilities are per request to ``/send``."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_500: float = 0.0  # 3001
    rate_limited: float = 0.0  # 1007
    saturated: float = 0.0  # 4002
    retry_after_s: int = 1
    drop_before: float = 0.0  # connection closed before the request is processed
    drop_after: float = 0.0  # connection closed after the message was delivered
    rate_limit_per_s: float | None = None  # server-side limit; over it -> 1007
    seed: int | None = None
    events_down: bool = False  # GET /events answers 503 (3001): replies cannot be read


@dataclass
class SandboxConfig:
    secret: str = DEFAULT_SECRET
    tenant: str = DEFAULT_TENANT
    lines: tuple[str, ...] = DEFAULT_LINES
    dedup_window_s: float = 600.0
    idempotency_ttl_s: float = 24 * 3600.0
    max_body_chars: int = MAX_BODY_CHARS
    faults: Faults = field(default_factory=Faults)
    clock: Callable[[], float] = time.time
    capacity: CapacityLimits | None = None  # None: unlimited lines (the default sandbox)
    reject_links: bool = False  # 1005 for a first message whose body holds a link (_LINK)
    outcomes: OutcomeConfig = field(default_factory=OutcomeConfig)  # delivery, reads, replies


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message that went out: the ledger's row."""

    phone: str
    body: str
    idempotency_key: str | None
    message_id: str
    lead_id: str
    name: str | None
    external_id: str | None
    effect: str | None
    attachments: tuple[str, ...]
    phone_line_id: str
    time: float

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["attachments"] = list(self.attachments)
        return data


@dataclass(frozen=True, slots=True)
class Reply:
    """What the HTTP adapter should answer; ``drop`` closes the connection instead."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: DropWhen | None = None


@dataclass
class _Lead:
    lead_id: str
    convo_id: str
    line: str


@dataclass
class _Attachment:
    content_type: str
    size_bytes: int
    uploaded: bool = False


ERROR_HTTP = {
    1001: 400,
    1002: 400,
    1003: 400,
    1004: 400,
    1005: 400,
    1007: 429,
    1009: 400,
    1011: 409,
    1012: 409,
    2001: 404,
    2003: 404,
    2004: 401,
    2006: 400,
    2011: 404,
    2012: 401,
    2013: 401,
    3001: 500,
    4002: 503,
    4098: 400,
    4099: 422,
    5001: 404,
    5002: 400,
    5003: 400,
    5004: 400,
}
RETRYABLE = {1007, 3001, 4002}


def _trace_id() -> str:
    return secrets.token_hex(8)


def _canonical(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class SandboxModel:
    """Chert's documented ``/send`` behaviour, plus faults, a ledger and counters."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._lock = threading.Lock()
        self.reset()

    # ----------------------------------------------------------------- state

    def reset(self) -> None:
        with self._lock:
            self._rng = random.Random(self.config.faults.seed)
            self._leads: dict[str, _Lead] = {}
            self._idempotent: dict[str, tuple[str, float, dict[str, Any]]] = {}
            self._recent: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
            self._attachments: dict[str, _Attachment] = {}
            self._messages: dict[str, Delivery] = {}
            self._ledger: list[Delivery] = []
            self._fates: dict[str, Fate] = {}  # message_id -> what happens after the send
            self._events = EventLog()
            self._window: deque[float] = deque()
            self._next_line = 0
            self._pending_line: str | None = None
            self.repins: list[tuple[str, str, str]] = []  # (phone, old line, new line): a conversation moved
            self._capacity = LineCapacity(self.config.capacity, self.config.lines) if self.config.capacity else None
            self._in_flight = 0
            self.counters: dict[str, int] = {
                "requests": 0,
                "deliveries": 0,
                "replays": 0,
                "duplicates": 0,
                "errors": 0,
                "peak_concurrency": 0,
                "capacity_refusals": 0,
                "repins": 0,
                "lookups": 0,
                "event_pages": 0,
            }
            self.fault_counts: dict[str, int] = {
                "error_500": 0,
                "rate_limited": 0,
                "saturated": 0,
                "drop_before": 0,
                "drop_after": 0,
                "rate_limit_per_s": 0,
            }

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._ledger)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counters, "faults": dict(self.fault_counts)}

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.counters["peak_concurrency"] = max(self.counters["peak_concurrency"], self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def latency_s(self) -> float:
        faults = self.config.faults
        with self._lock:
            jitter = self._rng.uniform(0, faults.jitter_ms) if faults.jitter_ms else 0.0
        return (faults.latency_ms + jitter) / 1000.0

    # ------------------------------------------------------------------ auth

    def authenticate(self, headers: Mapping[str, str], raw_body: bytes, *, envelope: bool = False) -> Reply | None:
        """None when the caller may proceed, else the 401/404 reply: flat on ``/send``, in the
        ``{success: false, error: {...}}`` envelope on every other route (``envelope=True``)."""
        problem = self._auth_problem(headers, raw_body)
        return None if problem is None else self._error(*problem, envelope=envelope)

    def _auth_problem(self, headers: Mapping[str, str], raw_body: bytes) -> tuple[int, str] | None:
        signature = headers.get("x-chert-signature")
        if signature is not None:
            return self._signature_problem(signature, headers.get("x-chert-tenant"), raw_body)
        authorization = headers.get("authorization")
        if authorization is None:
            return 2012, "No credentials supplied"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.config.secret.encode()):
            return 2004, "Authentication failed"
        tenant = headers.get("x-chert-tenant")
        if tenant is not None and tenant != self.config.tenant:
            return 2001, f"Tenant not found: {tenant}"
        return None

    def _signature_problem(self, value: str, tenant: str | None, raw_body: bytes) -> tuple[int, str] | None:
        """SPEC §1: ``v1,<ts>,<hex HMAC-SHA256 of "<ts>.<raw body>">`` keyed with the secret's UTF-8
        bytes (checked here on its own, not with the client's signing code)."""
        parts = value.split(",")
        if len(parts) != 3 or parts[0] != "v1" or not parts[1].isdigit():
            return 2004, "Malformed x-chert-signature header"
        if tenant != self.config.tenant:
            return 2001, f"Tenant not found: {tenant}"
        timestamp = int(parts[1])
        if abs(self.config.clock() - timestamp) > SIGNATURE_SKEW_S:
            return 2013, "Request timestamp outside the 5 minute window"
        expected = hmac.new(self.config.secret.encode(), parts[1].encode() + b"." + raw_body, hashlib.sha256)
        if not hmac.compare_digest(expected.hexdigest(), parts[2]):
            return 2004, "Authentication failed"
        return None

    # ------------------------------------------------------------------ send

    def send(self, raw_body: bytes, headers: Mapping[str, str]) -> Reply:
        with self._lock:
            self.counters["requests"] += 1
        faults = self.config.faults
        if self._roll("drop_before", faults.drop_before):
            return Reply(0, {}, drop="before")
        refused = self.authenticate(headers, raw_body) or self._injected_error()
        if refused is not None:
            return refused
        with self._lock:
            reply = self._send_locked(raw_body, headers)
        if reply.status == 200 and self._roll("drop_after", faults.drop_after):
            return Reply(reply.status, reply.body, reply.headers, drop="after")
        return reply

    def _injected_error(self) -> Reply | None:
        faults = self.config.faults
        if self._over_rate_limit():
            with self._lock:
                self.fault_counts["rate_limit_per_s"] += 1
            return self._error(1007, "Rate limited", retry_after=1)
        if self._roll("error_500", faults.error_500):
            return self._error(3001, "Internal server error")
        if self._roll("rate_limited", faults.rate_limited):
            return self._error(1007, "Rate limited", retry_after=faults.retry_after_s)
        if self._roll("saturated", faults.saturated):
            return self._error(4002, "All phone lines saturated for this recipient", retry_after=faults.retry_after_s)
        return None

    def _over_rate_limit(self) -> bool:
        limit = self.config.faults.rate_limit_per_s
        if not limit:
            return False
        now = self.config.clock()
        with self._lock:
            while self._window and now - self._window[0] >= 1.0:
                self._window.popleft()
            if len(self._window) >= limit:
                return True
            self._window.append(now)
            return False

    def _roll(self, name: str, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._lock:
            hit = self._rng.random() < probability
            if hit:
                self.fault_counts[name] += 1
        return hit

    def _send_locked(self, raw_body: bytes, headers: Mapping[str, str]) -> Reply:
        content_type = headers.get("content-type", "")
        if not content_type.lower().startswith("application/json"):
            return self._error(1004, "Content-Type must be application/json")
        try:
            payload = json.loads(raw_body)
        except (ValueError, UnicodeDecodeError):
            return self._error(1004, "Request body is not valid JSON")
        if not isinstance(payload, dict):
            return self._error(1004, "Request body must be a JSON object")
        problem = self._validate(payload) or self._link_refusal(payload)
        if problem is not None:
            return problem
        now = self.config.clock()
        key = payload.get("idempotency_key")
        fingerprint = _canonical(payload)
        if key is not None:
            cached = self._idempotent.get(key)
            if cached is not None and now - cached[1] < self.config.idempotency_ttl_s:
                if cached[0] != fingerprint:
                    return self._error(1012, "idempotency_key was already used with a different request body")
                self.counters["replays"] += 1
                return Reply(200, dict(cached[2]))
        reply = self._dedup_or_deliver(payload, now)
        if key is not None and reply.status == 200:  # failed attempts are not cached
            self._idempotent[key] = (fingerprint, now, reply.body)
        return reply

    def _validate(self, payload: dict[str, Any]) -> Reply | None:
        for name in ("phone", "body"):
            value = payload.get(name)
            if value is None or value == "":
                return self._error(1001, f"Missing required field: {name}")
            if not isinstance(value, str):
                return self._error(1002, f"Field {name} must be a string")
        for name in ("idempotency_key", "name", "external_id", "phone_line_id", "effect"):
            if payload.get(name) is not None and not isinstance(payload[name], str):
                return self._error(1002, f"Field {name} must be a string")
        if not E164.match(payload["phone"]):
            return self._error(1003, "Phone number is not valid E.164")
        if len(payload["body"]) > self.config.max_body_chars:
            return self._error(1009, f"Text is longer than the maximum of {self.config.max_body_chars} characters")
        attachment_problem = self._validate_attachments(payload.get("attachments"))
        if attachment_problem is not None:
            return attachment_problem
        effect = payload.get("effect")
        if effect is not None and effect not in ALLOWED_EFFECTS:
            return self._error(4098, f"Unknown effect: {effect}", allowed_effects=list(ALLOWED_EFFECTS))
        line = payload.get("phone_line_id")
        if line is not None and line not in self.config.lines:
            return self._error(2006, f"Phone line {line} is not assigned to this tenant")
        return None

    def _link_refusal(self, payload: dict[str, Any]) -> Reply | None:
        """``reject_links``: a first message (no conversation with the phone yet) holding a link → 1005."""
        if not self.config.reject_links or payload["phone"] in self._leads or _LINK.search(payload["body"]) is None:
            return None
        return self._error(1005, "The first message to a recipient must not contain URLs; use a rich_link part")

    def _validate_attachments(self, attachments: Any) -> Reply | None:
        if attachments is None:
            return None
        if not isinstance(attachments, list):
            return self._error(1002, "attachments must be an array")
        for index, entry in enumerate(attachments):
            if (isinstance(entry, dict) and "url" in entry) or _is_url(entry):
                return self._error(
                    1011,
                    "URL attachment references are not accepted on /send",
                    attachment_index=index,
                )
            if _attachment_ref(entry) is None:
                return self._error(1002, "Malformed attachments array", attachment_index=index)
        for index, entry in enumerate(attachments):
            stored = self._attachments.get(_attachment_ref(entry) or "")
            if stored is None:
                return self._error(5001, "Attachment not found", attachment_index=index)
            if not stored.uploaded:
                return self._error(5004, "Attachment bytes not uploaded yet", attachment_index=index)
        return None

    def _dedup_or_deliver(self, payload: dict[str, Any], now: float) -> Reply:
        phone, body = payload["phone"], payload["body"]
        recent = self._recent.get((phone, body))
        if recent is not None and now - recent[0] < self.config.dedup_window_s:
            self.counters["duplicates"] += 1
            return Reply(200, {**recent[1], "status": "duplicate", "lead_created": False})
        refused = self._capacity_refusal(phone, payload.get("phone_line_id"), now)
        if refused is not None:
            return refused
        lead, created = self._lead_for(phone, payload.get("phone_line_id"))
        message_id = uuid.uuid4().hex
        delivery = Delivery(
            phone=phone,
            body=body,
            idempotency_key=payload.get("idempotency_key"),
            message_id=message_id,
            lead_id=lead.lead_id,
            name=payload.get("name"),
            external_id=payload.get("external_id"),
            effect=payload.get("effect"),
            attachments=tuple(_attachment_ref(a) or "" for a in payload.get("attachments") or ()),
            phone_line_id=lead.line,
            time=now,
        )
        self._ledger.append(delivery)
        self._messages[message_id] = delivery
        self._schedule(delivery)
        self.counters["deliveries"] += 1
        body_out = {
            "status": "sent",
            "message_id": message_id,
            "lead_id": lead.lead_id,
            "lead_created": created,
            "convo_id": lead.convo_id,
            "phone_line_id": lead.line,
        }
        self._recent[(phone, body)] = (now, body_out)
        return Reply(200, body_out)

    def _capacity_refusal(self, phone: str, requested_line: str | None, now: float) -> Reply | None:
        """Capacity mode: a first-touch send needs a line with room now, else 4002 + truthful retry_after."""
        if self._capacity is None or phone in self._leads:
            return None
        if requested_line is not None:
            line, at = requested_line, self._capacity.free_at(requested_line, now)
        else:
            line, at = self._capacity.soonest(now)
        if at > now:
            self.counters["capacity_refusals"] += 1
            wait = max(1, math.ceil(min(at - now, 86_400.0)))
            return self._error(4002, "All phone lines saturated for this recipient", retry_after=wait)
        self._capacity.record(line, now)
        self._pending_line = line
        return None

    def _lead_for(self, phone: str, requested_line: str | None) -> tuple[_Lead, bool]:
        lead = self._leads.get(phone)
        created = lead is None
        if lead is None:
            line = requested_line or self._pending_line or self._pick_line()
            self._pending_line = None
            lead = _Lead(str(uuid.uuid4()), str(uuid.uuid4()), line)
            self._leads[phone] = lead
        elif requested_line is not None and requested_line != lead.line:
            self.repins.append((phone, lead.line, requested_line))  # SPEC §7: the pin moves
            self.counters["repins"] += 1
            lead.line = requested_line
        return lead, created

    def seed_conversation(self, phone: str, line: str) -> None:
        """An existing conversation (an earlier campaign, a reply): ``phone`` is pinned to ``line``."""
        with self._lock:
            self._leads[phone] = _Lead(str(uuid.uuid4()), str(uuid.uuid4()), line)

    def _pick_line(self) -> str:
        line = self.config.lines[self._next_line % len(self.config.lines)]
        self._next_line += 1
        return line

    # ----------------------------------------------------------- attachments

    def create_attachment(self, raw_body: bytes, base_url: str, content_type: str = "application/json") -> Reply:
        if not content_type.lower().startswith("application/json"):  # SPEC §1: JSON on every POST
            return self._error(1004, "Content-Type must be application/json", envelope=True)
        try:
            payload = json.loads(raw_body)
        except (ValueError, UnicodeDecodeError):
            return self._error(1004, "Request body is not valid JSON", envelope=True)
        if not isinstance(payload, dict):
            return self._error(1004, "Request body must be a JSON object", envelope=True)
        for name in ("filename", "content_type", "size_bytes"):
            if payload.get(name) in (None, ""):
                return self._error(1001, f"Missing required field: {name}", envelope=True)
        size, mime = payload["size_bytes"], str(payload["content_type"])
        if not isinstance(size, int) or size < 0:
            return self._error(1002, "size_bytes must be a non-negative integer", envelope=True)
        if size > MAX_UPLOAD_BYTES:
            return self._error(5002, "Attachment exceeds the size limit", envelope=True)
        if not (mime.startswith(ALLOWED_MIME_PREFIXES) or mime in ALLOWED_MIME_TYPES):
            return self._error(5003, f"Attachment MIME type not supported: {mime}", envelope=True)
        attachment_id = "att_" + secrets.token_hex(12)
        with self._lock:
            self._attachments[attachment_id] = _Attachment(mime, size)
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.config.clock() + 3600))
        return Reply(
            200,
            {
                "attachment_id": attachment_id,
                "upload_url": f"{base_url}/attachments/{attachment_id}/upload",
                "required_headers": {"authorization": "Bearer <secret>", "content-type": mime},
                "expires_at": expires,
            },
        )

    def upload(self, attachment_id: str, headers: Mapping[str, str], data: bytes) -> Reply:
        if "x-chert-signature" in headers and "authorization" not in headers:
            return self._error(2004, "Uploads accept bearer authentication only", envelope=True)
        with self._lock:
            stored = self._attachments.get(attachment_id)
            if stored is None:
                return self._error(5001, "Attachment not found", envelope=True)
            if headers.get("content-type", "") != stored.content_type:
                return self._error(1002, "content-type differs from the declared one", envelope=True)
            if len(data) > stored.size_bytes:
                return self._error(5002, "Upload is larger than the declared size_bytes", envelope=True)
            stored.uploaded = True
        return Reply(200, {"attachment_id": attachment_id, "status": "uploaded", "size_bytes": len(data)})

    # ------------------------------------------------------------ lookups

    def message(self, message_id: str) -> Reply:
        refused = self.lookup_fault()
        if refused is not None:
            return refused
        with self._lock:
            delivery = self._messages.get(message_id)
            fate = self._fates.get(message_id)
        if delivery is None or fate is None:
            return self._error(2003, "Message not found", envelope=True)
        data = message_object(fate, delivery.body, self.config.clock())
        data["parts"] += [{"type": "media", "attachment_id": ref} for ref in delivery.attachments]
        return Reply(200, {"message": data})

    def _schedule(self, delivery: Delivery) -> None:
        fate = fate_of(self.config.outcomes, delivery.phone, delivery.message_id, delivery.lead_id, delivery.time)
        self._fates[delivery.message_id] = fate
        self._events.add(fate)

    def adopt(self, phone: str, message_id: str, lead_id: str, body: str, sent_at: float) -> None:
        """A message an earlier sandbox process sent (``sync --sandbox``): its story goes on here."""
        delivery = Delivery(phone, body, None, message_id, lead_id, None, None, None, (), "", sent_at)
        with self._lock:
            self._messages[message_id] = delivery
            self._schedule(delivery)

    def events(self, query: Mapping[str, str]) -> Reply:
        """``GET /events`` as SPEC §12 shapes it: type, since, lead_id, limit (1-200), cursor."""
        if self.config.faults.events_down:
            return self._error(3001, "Event log unavailable", envelope=True, http_status=503)
        refused = self.lookup_fault()
        if refused is not None:
            return refused
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 200:
            return self._error(1002, "limit must be an integer from 1 to 200", envelope=True)
        since = None
        if query.get("since"):
            try:
                since = datetime.fromisoformat(query["since"].replace("Z", "+00:00")).timestamp()
            except ValueError:
                return self._error(1002, "since must be an ISO-8601 time", envelope=True)
        if query.get("type", "message.received") != "message.received":
            return Reply(200, {"events": [], "next_cursor": None, "count": 0})
        now = self.config.clock()
        try:
            with self._lock:
                page = self._events.page(
                    now, limit=limit, cursor=query.get("cursor"), since=since, lead_id=query.get("lead_id")
                )
        except CursorError as exc:
            return self._error(1002, str(exc), envelope=True)
        self.counters["event_pages"] += 1
        return Reply(200, page)

    def replies(self) -> list[dict[str, Any]]:
        """The ledger of replies made so far (visible in the event log), for tests and rehearsals."""
        with self._lock:
            fates = self._events.visible(self.config.clock())
        return [
            {
                "phone": f.phone,
                "lead_id": f.lead_id,
                "event_id": f.event_id,
                "text": f.reply_text,
                "kind": f.reply_kind,
                "at": f.reply_at,
            }
            for f in fates
        ]

    def lookup_fault(self) -> Reply | None:
        """Lookups share the server-side rate limit and injected 429s with /send."""
        with self._lock:
            self.counters["lookups"] += 1
        if self._over_rate_limit():
            with self._lock:
                self.fault_counts["rate_limit_per_s"] += 1
            return self._error(1007, "Rate limited", envelope=True, retry_after=1)
        if self._roll("rate_limited", self.config.faults.rate_limited):
            return self._error(1007, "Rate limited", envelope=True, retry_after=self.config.faults.retry_after_s)
        return None

    def phone_numbers(self) -> Reply:
        numbers = [
            {
                "id": line,
                "phone_line_id": line,
                "phone_number": f"+1555010{index:04d}",
                "service": "imessage",
                "is_active": True,
                "capabilities": ["imessage", "send", "receive"],
            }
            for index, line in enumerate(self.config.lines)
        ]
        return Reply(200, {"phone_numbers": numbers})

    # --------------------------------------------------------------- errors

    def route_error(self, status: int, method: str, path: str) -> Reply:
        """No route for this path (2011, 404), or not for this method (4099 with HTTP 405)."""
        if status == 405:
            return self._error(4099, f"{method} is not supported on {path}", envelope=True, http_status=405)
        return self._error(2011, f"No such route: {method} {path}", envelope=True, http_status=404)

    def _error(
        self, code: int, message: str, *, envelope: bool = False, http_status: int | None = None, **extra: Any
    ) -> Reply:
        """The flat ``/send`` error body, or the ``{success: false, error: {...}}`` envelope."""
        status = http_status or ERROR_HTTP.get(code, 400)
        trace = _trace_id()
        retryable = code in RETRYABLE
        headers = {"Retry-After": str(extra["retry_after"])} if "retry_after" in extra else {}
        self.counters["errors"] += 1
        if envelope:
            error = {"status": status, "code": code, "message": message, "retryable": retryable}
            body = {"success": False, "error": {**error, **extra}, "trace_id": trace}
        else:
            body = {
                "status": "failed",
                "code": code,
                "message": message,
                "retryable": retryable,
                **extra,
                "trace_id": trace,
            }
        return Reply(status, body, headers)


def _is_url(entry: Any) -> bool:
    """A bare string that is a URL: a URL reference, which ``/send`` refuses (1011), not an id."""
    return isinstance(entry, str) and "://" in entry


def _attachment_ref(entry: Any) -> str | None:
    """The id of one ``attachments`` entry in any of the three documented shapes."""
    if isinstance(entry, str) and entry and not _is_url(entry):
        return entry
    if isinstance(entry, dict):
        value = entry.get("attachment_id", entry.get("id"))
        if isinstance(value, str) and value and "url" not in entry:
            return value
    return None
