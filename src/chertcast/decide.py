"""What to do with an answer that is not a delivery: one pure decision, its tables and breakers.

As hynek/stamina keeps its retry policy in one pure hook, ``decide`` is a function of the
outcome, the attempt and the rules: retry (and after how long, and whether everyone pauses),
wait for capacity (or hand the row back to the scheduler), fail the row, or stop the campaign.
It does no I/O, reads no clock and draws randomness only from the ``rng`` it is handed, so
tests check every case as a table without sending or sleeping. The engine executes the answer.

Beside it: the stop-code table (answers that mean the whole campaign is wrong, not a row), the
setup breaker (the same setup-shaped answer before any success) and the failure breaker (too
large a share of recent sends failed). The breakers keep a little state and no I/O.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from chertcast.client import SETUP_STATUSES, Outcome
from chertcast.preflight import AttachmentRef

# Answers that stop the campaign at once: the setup is wrong for every row alike.
LINK_CODE = 1005  # Chert refuses a first message holding a link: the campaign stops
STOP_CODES: dict[int, str] = {
    2001: "the tenant is unknown (check [api] tenant / x-chert-tenant)",
    2004: "authentication failed: the signing secret (CHERT_SIGNING_SECRET or the secret file) is wrong for this API",
    2005: "the tenant is suspended or lacks permission",
    2008: "the account limit is reached",
    2012: "no credentials reached the API",
    2013: "this machine's clock is more than 5 minutes off; fix it and rerun",
    3003: "Chert's delivery provider is not configured for this tenant; contact Chert support",
    LINK_CODE: (
        "the first message must not contain links (URLs, www., domains such as example.com): Chert refused "
        "it, so the campaign stops here instead of failing row after row. Take the link out of the message "
        "(`chertcast check` lists every row with one), then resume with --allow-changes (the rows Chert "
        "refused were attempted with the old text)"
    ),
}
CAPACITY_CODE = 4002  # every sender line is saturated for this recipient: never the row's fault
RATE_LIMIT_CODE = 1007  # rate limited: the whole run pauses for retry_after
ATTACHMENT_UNKNOWN_CODE = 5001
UNKNOWN_EFFECT_CODE = 4098
LINE_NOT_ASSIGNED_CODE = 2006
CAPACITY_WAIT_DEFAULT_S = 60.0  # a 4002 without retry_after


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Rules:
    """The campaign's side of each decision."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    capacity_wait_s: float = 900.0  # a 4002 asking us to wait longer than this ends today's run
    campaign_effect: str | None = None  # [send] effect: a 4098 on it stops the run
    campaign_line: str | None = None  # [send] phone_line_id: a 2006 on it stops the run
    campaign_attachments: tuple[AttachmentRef, ...] = ()  # [send] attachments: a 5001 on one stops the run


@dataclass(frozen=True, slots=True)
class Attempt:
    """The attempt an answer came back to."""

    number: int  # 1 for the first request of this row in this run
    planned: bool = False  # launched by the capacity scheduler: a 4002 hands the row back to it
    effect: str | None = None
    phone_line_id: str | None = None
    attachments: tuple[AttachmentRef, ...] = ()
    setup_stop: str | None = None  # the setup breaker tripped on this answer: its reason


@dataclass(frozen=True, slots=True)
class Retry:
    """Send again after ``after_s`` (the journal notes the error; the row stays unfinished)."""

    after_s: float
    maybe_delivered: bool = False  # the request may have arrived: the row stays 'sending'
    pause_all: bool = False  # 1007: nobody starts a request for ``after_s``


@dataclass(frozen=True, slots=True)
class CapacityWait:
    """4002: the row waits ``after_s`` without it counting as an attempt; past ``capacity_wait_s`` the run ends."""

    after_s: float
    hand_back: bool  # a planned send: its line waits and the row goes back to the scheduler
    stop_reason: str | None = None  # the wait ends today's run (exit 0, capacity returns later)


@dataclass(frozen=True, slots=True)
class Fail:
    """The row is finished without a delivery: 'failed', or 'unknown' when it may have been delivered."""

    message: str
    maybe_delivered: bool = False


@dataclass(frozen=True, slots=True)
class Stop:
    """The answer means the campaign cannot go on: stop launching, let what is in flight land."""

    reason: str
    maybe_delivered: bool = False


Decision = Retry | CapacityWait | Fail | Stop


def decide(outcome: Outcome, attempt: Attempt, rules: Rules, rng: random.Random) -> Decision:
    """What to do with ``outcome``, an answer to ``attempt`` that is not a delivery."""
    if outcome.code == CAPACITY_CODE and attempt.planned:
        return _capacity(outcome, rules, hand_back=True)
    unknown = outcome_unknown(outcome)
    stop = stop_reason(outcome, attempt, rules) or attempt.setup_stop
    if stop is not None:
        return Stop(stop, unknown)
    if outcome.code == CAPACITY_CODE:
        return _capacity(outcome, rules, hand_back=False)
    delay = retry_delay(outcome, attempt.number, rules.retry, rng)
    if delay is None:
        return Fail(describe(outcome, attempt.number), unknown)
    return Retry(delay, unknown, pause_all=outcome.code == RATE_LIMIT_CODE)


def _capacity(outcome: Outcome, rules: Rules, *, hand_back: bool) -> CapacityWait:
    wait = float(outcome.retry_after) if outcome.retry_after is not None else CAPACITY_WAIT_DEFAULT_S
    if wait <= rules.capacity_wait_s:
        return CapacityWait(wait, hand_back)
    if hand_back:
        reason = f"Chert's sender lines are saturated (4002, retry after {wait:,.0f}s)"
    else:
        reason = f"every sender line is saturated for now (4002, retry after {wait:,.0f}s)"
    return CapacityWait(wait, hand_back, reason)


def stop_reason(outcome: Outcome, attempt: Attempt, rules: Rules) -> str | None:
    """Why this answer stops the whole campaign: a stop code, or a campaign-wide setting Chert refused."""
    code = outcome.code
    if code in STOP_CODES:
        return f"{code}: {STOP_CODES[code]}"
    if code == UNKNOWN_EFFECT_CODE and attempt.effect and attempt.effect == rules.campaign_effect:
        allowed = ", ".join((outcome.extra or {}).get("allowed_effects", []) or [])
        return f"4098: the campaign's effect {attempt.effect!r} is unknown to Chert (allowed: {allowed})"
    if code == LINE_NOT_ASSIGNED_CODE and attempt.phone_line_id and attempt.phone_line_id == rules.campaign_line:
        return f"2006: the campaign's phone_line_id {attempt.phone_line_id!r} is not assigned to this tenant"
    if code == ATTACHMENT_UNKNOWN_CODE:
        shared = _campaign_attachment(outcome, attempt, rules)
        if shared is not None:
            return f"5001: the campaign's attachment {shared!r} ([send] attachments) is unknown to Chert"
    return None


def _campaign_attachment(outcome: Outcome, attempt: Attempt, rules: Rules) -> str | None:
    """The campaign-wide attachment a 5001 names (by ``attachment_index``, or the only kind the row has)."""
    shared = rules.campaign_attachments
    index = (outcome.extra or {}).get("attachment_index")
    if isinstance(index, int) and 0 <= index < len(attempt.attachments):
        ref = attempt.attachments[index]
        return ref.value if ref in shared else None
    if attempt.attachments and all(ref in shared for ref in attempt.attachments):
        return ", ".join(ref.value for ref in attempt.attachments)
    return None


def retry_delay(outcome: Outcome, attempt: int, policy: RetryPolicy, rng: random.Random) -> float | None:
    """Seconds to wait before the next attempt, or None to give up on this row.

    Network errors and ``retryable: true`` answers are retried; ``retry_after`` is honoured
    exactly; otherwise exponential backoff 1 s, 2 s, 4 s… (up to ``max_delay_s``), each drawn in [½, 1]×.
    """
    if not (outcome.kind in ("network", "unreachable") or outcome.retryable) or attempt >= policy.max_attempts:
        return None
    if outcome.retry_after is not None:
        return float(outcome.retry_after)
    backoff = min(policy.max_delay_s, policy.base_delay_s * 2.0 ** (attempt - 1))
    return backoff * (0.5 + rng.random() / 2)


def outcome_unknown(outcome: Outcome) -> bool:
    """Whether an attempt that brought no success may still have been delivered.

    An error answer from Chert (it carries a code) means not sent, and so does a connection that
    never opened. A request that left but whose answer was lost (a dropped connection, a
    timeout), a 2xx we cannot read, or a gateway's 5xx page may have been delivered.
    """
    if outcome.kind == "network":
        return outcome.request_sent
    if outcome.code is not None or outcome.http_status is None:
        return False
    return outcome.http_status >= 500 or 200 <= outcome.http_status < 300


def describe(outcome: Outcome, attempt: int) -> str:
    """The journal's error message for a row that failed on ``attempt``."""
    tries = f" after {attempt} attempts" if attempt > 1 else ""
    where = (
        f" (attachment {outcome.extra['attachment_index']})"
        if outcome.extra and "attachment_index" in outcome.extra
        else ""
    )
    return f"{outcome.message}{where}{tries}"


@dataclass
class SetupBreaker:
    """Stops a run whose setup is broken, before it fails row after row.

    Some answers can only mean a setup problem when nothing has succeeded yet: a non-Chert
    404 (the base URL's path is wrong), a connection that cannot be made (a host typo, a
    closed port). The first ``threshold`` identical ones before any success stop the
    campaign — at any campaign size, within the first few requests. After one success the
    setup is proven, and the same answers are ordinary trouble (retried, then failed).
    """

    threshold: int = 3
    succeeded: bool = False
    _signature: str | None = None
    _count: int = 0

    def success(self) -> None:
        self.succeeded = True

    def observe(self, outcome: Outcome, base_url: str) -> str | None:
        """The stop reason once ``threshold`` identical setup answers have come; else None."""
        signature = setup_signature(outcome)
        if self.succeeded or signature is None:
            return None
        self._count = self._count + 1 if signature == self._signature else 1
        self._signature = signature
        if self._count < self.threshold:
            return None
        if outcome.kind == "unreachable":
            return (
                f"no connection could be made to the API {self._count} times and nothing has been sent "
                f"({outcome.message}): check [api] base_url / CHERT_BASE_URL ({base_url}) and the network"
            )
        return (
            f"the API base URL answered {self._count} times with {outcome.message} and nothing has been sent: "
            f"{base_url}/send is not Chert's /send — check [api] base_url / CHERT_BASE_URL"
        )


def setup_signature(outcome: Outcome) -> str | None:
    """What makes two setup answers identical; None for answers that may be the row's own."""
    if outcome.kind == "unreachable":
        return f"unreachable {outcome.message}"
    if outcome.kind == "error" and not outcome.is_chert_answer and outcome.http_status in SETUP_STATUSES:
        return f"http {outcome.http_status}"
    return None


@dataclass
class FailureBreaker:
    """Stops the campaign when more than ``threshold`` of the last ``window`` finished sends failed."""

    threshold: float = 0.5
    window: int = 50
    _recent: deque[bool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._recent = deque(maxlen=self.window)

    def record(self, *, failed: bool) -> str | None:
        """Count one finished send; the stop reason once the window is full and too many failed."""
        self._recent.append(failed)
        if len(self._recent) < self.window:
            return None
        share = sum(self._recent) / len(self._recent)
        if share <= self.threshold:
            return None
        return f"{share:.0%} of the last {len(self._recent)} sends failed (threshold {self.threshold:.0%})"
