"""Chert API client: one request in, one typed ``Outcome`` out. ``send`` and the lookups never
raise for HTTP trouble; the setup calls (``get_json``, ``post_json``, ``put_bytes``) let httpx
errors through to the runner, which stops the campaign with the reason.

The transport is the seam (as in httpx itself): ``ChertClient`` takes an ``httpx.AsyncClient``,
so tests run this exact code against the sandbox in-process or over loopback.
The secret lives in ``Secret``, whose repr is masked, and is only ever put in a header.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx

from chertcast.errors import ConfigError
from chertcast.signing import sign

# sent / duplicate: delivered. error: an HTTP answer that is not a success (a Chert error with
# its code, or a non-Chert answer such as a proxy's page, which has an http_status but no code).
# unreachable: no connection was made (DNS failure, refused, TLS): nothing was sent.
# network: the connection failed after the request may have left: the outcome is unknown.
OutcomeKind = Literal["sent", "duplicate", "error", "unreachable", "network"]
# Non-Chert answers that mean "wrong place" or a gateway's own refusal: never Chert's verdict
# on the row, so retried with the same key (and, before any success, a sign of a broken setup).
SETUP_STATUSES = frozenset({401, 403, 404, 405, 407, 410, 421})


class Secret:
    """The API signing secret. ``str()`` and ``repr()`` never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        # The secret goes in an HTTP header: a line break, a space or a non-ASCII character (a
        # curly quote pasted from a document) would fail in httpx with the value in its message.
        if not value or not all("!" <= char <= "~" for char in value):
            raise ConfigError(
                "the signing secret holds a space, a line break or a character that cannot go in an "
                "HTTP header (such as a curly quote); copy it again from the Chert console"
            )
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt achieved, whatever the server or the network did."""

    kind: OutcomeKind
    http_status: int | None = None
    code: int | None = None
    message: str = ""
    retryable: bool = False
    retry_after: float | None = None
    message_id: str | None = None
    lead_id: str | None = None
    lead_created: bool | None = None
    convo_id: str | None = None
    phone_line_id: str | None = None
    extra: Mapping[str, Any] | None = None
    request_sent: bool = True  # False only when the connection never opened (nothing reached Chert)

    @property
    def delivered(self) -> bool:
        return self.kind in ("sent", "duplicate")

    @property
    def is_chert_answer(self) -> bool:
        """A Chert error carries a numeric code; anything else came from somewhere else."""
        return self.code is not None


@dataclass(frozen=True, slots=True)
class Lookup:
    """A GET's answer: the JSON object on success, else the ``Outcome`` that says why not
    (retryable or not, and any ``retry_after``), exactly as for ``/send``."""

    data: Mapping[str, Any] | None = None
    failure: Outcome | None = None


MAX_RETRY_AFTER_S = 86_400.0  # a longer (or infinite) ask is read as a day: no wait is endless


def _parse_retry_after(body_value: Any, header: str | None) -> float | None:
    for value in (body_value, header):
        if value is None:
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = None
        if seconds is not None:
            return None if math.isnan(seconds) else min(MAX_RETRY_AFTER_S, max(0.0, seconds))
        if isinstance(value, str):
            try:
                return min(MAX_RETRY_AFTER_S, max(0.0, parsedate_to_datetime(value).timestamp() - time.time()))
            except (TypeError, ValueError):
                pass
    return None


def parse_response(response: httpx.Response) -> Outcome:
    """Turn any answer into an Outcome: success, flat error, envelope error, or junk."""
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        return _non_json(response)
    status = data.get("status")
    if response.is_success and status in ("sent", "duplicate"):
        return Outcome(
            kind=status,
            http_status=response.status_code,
            message_id=_opt_str(data.get("message_id")),
            lead_id=_opt_str(data.get("lead_id")),
            lead_created=data.get("lead_created") if isinstance(data.get("lead_created"), bool) else None,
            convo_id=_opt_str(data.get("convo_id")),
            phone_line_id=_opt_str(data.get("phone_line_id")),
        )
    error = data["error"] if isinstance(data.get("error"), dict) else data
    code = error.get("code")
    if not isinstance(code, int):  # JSON, but not Chert's error shape (another service, a gateway)
        return _non_json(response)
    retryable = error.get("retryable")
    if not isinstance(retryable, bool):  # a 2xx we cannot read may have been delivered: retry, same key
        retryable = response.status_code >= 500 or response.status_code == 429 or response.is_success
    extra = {k: v for k, v in error.items() if k in ("attachment_index", "allowed_effects")}
    return Outcome(
        kind="error",
        http_status=response.status_code,
        code=code,
        message=str(error.get("message") or f"HTTP {response.status_code}")[:500],
        retryable=retryable,
        retry_after=_parse_retry_after(error.get("retry_after"), response.headers.get("retry-after")),
        extra=extra or None,
    )


def _non_json(response: httpx.Response) -> Outcome:
    """A proxy's HTML page, an empty 502, a success without the fields we need."""
    status = response.status_code
    retryable = status >= 500 or status == 429 or response.is_success or status in SETUP_STATUSES
    reason = f" {response.reason_phrase}" if response.reason_phrase else ""
    return Outcome(
        kind="error",
        http_status=status,
        message=f"HTTP {status}{reason}{_from(response)} without a Chert error code",
        retryable=retryable,
        retry_after=_parse_retry_after(None, response.headers.get("retry-after")),
    )


def _from(response: httpx.Response) -> str:
    try:
        return f" from {response.request.url.host}"
    except RuntimeError:  # a response built without its request (tests)
        return ""


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class UnsafeUploadURL(httpx.HTTPError):
    """An ``upload_url`` off the API's origin: the bearer secret is not sent there."""


class ChertClient:
    """Speaks to ``{base_url}/send`` and friends with bearer or HMAC auth."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        secret: Secret,
        *,
        auth: Literal["bearer", "hmac"] = "bearer",
        tenant: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self.host = httpx.URL(self._base).host
        self._secret = secret
        self._auth = auth
        self._tenant = tenant
        self._clock = clock

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` is on the API's own scheme, host and port."""
        try:
            theirs, ours = httpx.URL(url), httpx.URL(self._base)
        except httpx.InvalidURL:
            return False
        return (theirs.scheme, theirs.host, theirs.port) == (ours.scheme, ours.host, ours.port)

    def _headers(self, raw_body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self._tenant:
            headers["x-chert-tenant"] = self._tenant
        if self._auth == "hmac":
            # Re-signed on every attempt: a signature is never reused.
            headers["x-chert-signature"] = sign(self._secret.reveal(), int(self._clock()), raw_body)
        else:
            headers["authorization"] = f"Bearer {self._secret.reveal()}"
        return headers

    async def send(self, payload: Mapping[str, Any]) -> Outcome:
        raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            response = await self._http.post(f"{self._base}/send", content=raw, headers=self._headers(raw))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # nothing left this machine
            message = self.describe_transport_error(exc)
            return Outcome(kind="unreachable", message=message, retryable=True, request_sent=False)
        except httpx.TransportError as exc:
            return Outcome(kind="network", message=self.describe_transport_error(exc), retryable=True)
        return parse_response(response)

    @property
    def base_url(self) -> str:
        return self._base

    def describe_transport_error(self, exc: httpx.TransportError) -> str:
        """'ConnectError connecting to api.example.com: [Errno -2] Name or service not known'."""
        verb = "connecting to" if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) else "talking to"
        detail = f": {exc}" if str(exc) else ""
        return f"{type(exc).__name__} {verb} {self.host}{detail}"[:300]

    async def get_message(self, message_id: str) -> Lookup:
        """``GET /messages/{id}`` → ``{"message": {...}}`` (SPEC §9, §12)."""
        return await self._lookup(f"/messages/{quote(message_id, safe='')}", None, "message")

    async def get_events(self, params: Mapping[str, str]) -> Lookup:
        """``GET /events?type=&since=&limit=&cursor=`` → ``{"events": [...], "next_cursor", "count"}``."""
        return await self._lookup("/events", params, "events")

    async def _lookup(self, path: str, params: Mapping[str, str] | None, field: str) -> Lookup:
        try:
            response = await self._http.get(f"{self._base}{path}", params=params, headers=self._headers(b""))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            message = self.describe_transport_error(exc)
            return Lookup(failure=Outcome(kind="unreachable", message=message, retryable=True, request_sent=False))
        except httpx.TransportError as exc:
            return Lookup(failure=Outcome(kind="network", message=self.describe_transport_error(exc), retryable=True))
        try:
            data = response.json()
        except (ValueError, UnicodeDecodeError):
            data = None
        if response.is_success and isinstance(data, dict) and field in data:
            return Lookup(data=data)
        return Lookup(failure=parse_response(response))

    async def get_json(self, path: str) -> tuple[int, Any]:
        response = await self._http.get(f"{self._base}{path}", headers=self._headers(b""))
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    async def post_json(self, path: str, payload: Mapping[str, Any]) -> tuple[int, Any]:
        raw = json.dumps(payload, separators=(",", ":")).encode()
        response = await self._http.post(f"{self._base}{path}", content=raw, headers=self._headers(raw))
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    async def put_bytes(self, url: str, data: bytes, content_type: str) -> int:
        """The attachment upload: bearer only, whatever the run's auth mode.

        The secret goes only where the API itself is: an ``upload_url`` on another origin
        (scheme, host or port) than the base URL is refused before any byte is sent, so a
        misdirected or hostile answer can never collect the bearer token."""
        if not self.same_origin(url):
            raise UnsafeUploadURL(
                f"the upload_url Chert answered ({httpx.URL(url).host or url[:60]}) is not on the API's own host "
                f"({self.host}); refusing to send the secret there"
            )
        headers = {
            "authorization": f"Bearer {self._secret.reveal()}",
            "content-type": content_type,
        }
        response = await self._http.put(url, content=data, headers=headers)
        return response.status_code
