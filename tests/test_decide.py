"""The decision function as a table: every Chert error code, the network, capacity, breakers.

``decide`` is pure, so each case is one call: an outcome, the attempt it answered, the rules.
``chert_errors.json`` is Chert's published error list (code, HTTP status, retryable).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest

from chertcast.client import Outcome
from chertcast.decide import (
    STOP_CODES,
    Attempt,
    CapacityWait,
    Decision,
    Fail,
    FailureBreaker,
    Retry,
    RetryPolicy,
    Rules,
    Stop,
    decide,
)
from chertcast.preflight import AttachmentRef
from tests.conftest import ROOT

ERRORS = json.loads((ROOT / "tests" / "data" / "chert_errors.json").read_text(encoding="utf-8"))
RULES = Rules(RetryPolicy(max_attempts=6, base_delay_s=1.0, max_delay_s=60.0), capacity_wait_s=900.0)
LOGO = AttachmentRef("att_logo")
OWN = AttachmentRef("att_own")
CAMPAIGN = Rules(RULES.retry, 900.0, campaign_effect="slam", campaign_line="line-a", campaign_attachments=(LOGO,))


def chert(code: int, http: int, retryable: bool, retry_after: float | None = None, **extra: object) -> Outcome:
    return Outcome(
        "error", http_status=http, code=code, message=f"{code} from Chert", retryable=retryable,
        retry_after=retry_after, extra=extra or None,
    )  # fmt: skip


def run(outcome: Outcome, attempt: Attempt | None = None, rules: Rules = RULES) -> Decision:
    return decide(outcome, attempt or Attempt(1), rules, random.Random(0))


@pytest.mark.parametrize("entry", ERRORS, ids=[str(e["code"]) for e in ERRORS])
def test_every_chert_error_code_on_a_first_attempt(entry: dict[str, object]) -> None:
    code, http, retryable = int(entry["code"]), int(entry["http"]), bool(entry["retryable"])  # type: ignore[call-overload]
    decision = run(chert(code, http, retryable, retry_after=30.0 if code in (1007, 4002) else None))
    if code in STOP_CODES:  # the campaign's setup is wrong for every row alike
        assert decision == Stop(f"{code}: {STOP_CODES[code]}")
    elif code == 4002:  # capacity: a wait, never the row's fault
        assert decision == CapacityWait(30.0, hand_back=False)
    elif retryable:
        assert isinstance(decision, Retry) and not decision.maybe_delivered
        assert decision.pause_all == (code == 1007)  # only a rate limit pauses everyone
        assert decision.after_s == 30.0 if code == 1007 else 0.5 <= decision.after_s <= 1.0
    else:  # the row's own problem: failed at once, with Chert's message
        assert decision == Fail(f"{code} from Chert")


@dataclass(frozen=True)
class Case:
    name: str
    outcome: Outcome
    attempt: Attempt
    expected: Decision
    rules: Rules = RULES


NETWORK_LOST = Outcome("network", message="ReadError: peer closed", retryable=True)
NEVER_CONNECTED = Outcome("network", message="ConnectError: refused", retryable=True, request_sent=False)
GATEWAY = Outcome("error", http_status=504, message="HTTP 504 with an unexpected body", retryable=True)
NOT_CHERT = Outcome("error", http_status=404, message="HTTP 404 with an unexpected body")

CASES = [
    Case("retry_after honoured exactly", chert(3002, 503, True, retry_after=7.0), Attempt(1), Retry(7.0)),
    Case("retry_after of zero", chert(3001, 500, True, retry_after=0.0), Attempt(2), Retry(0.0)),
    Case("huge retry_after (read as a day)", chert(3002, 503, True, 86_400.0), Attempt(1), Retry(86_400.0)),
    Case("1007 pauses everyone", chert(1007, 429, True, retry_after=12.0), Attempt(1), Retry(12.0, pause_all=True)),
    Case("1007 huge", chert(1007, 429, True, retry_after=86_400.0), Attempt(3), Retry(86_400.0, pause_all=True)),
    Case("last attempt fails the row", chert(3001, 500, True), Attempt(6), Fail("3001 from Chert after 6 attempts")),
    Case(
        "exhausted despite retry_after",
        chert(3002, 503, True, 5.0),
        Attempt(6),
        Fail("3002 from Chert after 6 attempts"),
    ),
    Case("1007 exhausted", chert(1007, 429, True, 5.0), Attempt(6), Fail("1007 from Chert after 6 attempts")),
    Case(
        "non-retryable on a later attempt",
        chert(1003, 400, False),
        Attempt(3),
        Fail("1003 from Chert after 3 attempts"),
    ),
    Case(
        "lost answer: maybe delivered", NETWORK_LOST, Attempt(6), Fail("ReadError: peer closed after 6 attempts", True)
    ),
    Case("never connected: not delivered", NEVER_CONNECTED, Attempt(6), Fail("ConnectError: refused after 6 attempts")),
    Case(
        "gateway page, exhausted", GATEWAY, Attempt(6), Fail("HTTP 504 with an unexpected body after 6 attempts", True)
    ),
    Case("not Chert's 404", NOT_CHERT, Attempt(1), Fail("HTTP 404 with an unexpected body")),
    Case(
        "setup breaker tripped",
        NOT_CHERT,
        Attempt(1, setup_stop="the base URL is wrong"),
        Stop("the base URL is wrong"),
    ),
    Case(
        "setup breaker on a lost answer",
        NETWORK_LOST,
        Attempt(2, setup_stop="down"),
        Stop("down", maybe_delivered=True),
    ),
    Case("stop code wins over retries left", chert(2004, 401, False), Attempt(1), Stop(f"2004: {STOP_CODES[2004]}")),
    Case("stop code on the last attempt", chert(2013, 401, False), Attempt(6), Stop(f"2013: {STOP_CODES[2013]}")),
    Case(
        "4002 without retry_after waits 60 s", chert(4002, 503, True), Attempt(1), CapacityWait(60.0, hand_back=False)
    ),
    Case("4002 never exhausts attempts", chert(4002, 503, True, 30.0), Attempt(6), CapacityWait(30.0, hand_back=False)),
    Case("4002 planned: hand back", chert(4002, 503, True, 30.0), Attempt(1, planned=True), CapacityWait(30.0, True)),
    Case("4002 at the limit still waits", chert(4002, 503, True, 900.0), Attempt(1), CapacityWait(900.0, False)),
    Case(
        "4002 too long ends the run",
        chert(4002, 503, True, 7_200.0),
        Attempt(1),
        CapacityWait(7_200.0, False, "every sender line is saturated for now (4002, retry after 7,200s)"),
    ),
    Case(
        "4002 planned too long ends the run",
        chert(4002, 503, True, 86_400.0),
        Attempt(1, planned=True),
        CapacityWait(86_400.0, True, "Chert's sender lines are saturated (4002, retry after 86,400s)"),
    ),
    Case(
        "4002 planned wins over the setup breaker",
        chert(4002, 503, True, 30.0),
        Attempt(1, planned=True, setup_stop="ignored"),
        CapacityWait(30.0, True),
    ),
    Case(
        "campaign-wide effect refused",
        chert(4098, 400, False, allowed_effects=["slam", "loud"]),
        Attempt(1, effect="slam"),
        Stop("4098: the campaign's effect 'slam' is unknown to Chert (allowed: slam, loud)"),
        CAMPAIGN,
    ),
    Case(
        "a row's own effect refused",
        chert(4098, 400, False),
        Attempt(1, effect="sparkle"),
        Fail("4098 from Chert"),
        CAMPAIGN,
    ),
    Case(
        "campaign-wide line refused",
        chert(2006, 400, False),
        Attempt(1, phone_line_id="line-a"),
        Stop("2006: the campaign's phone_line_id 'line-a' is not assigned to this tenant"),
        CAMPAIGN,
    ),
    Case(
        "a row's own line refused",
        chert(2006, 400, False),
        Attempt(1, phone_line_id="line-b"),
        Fail("2006 from Chert"),
        CAMPAIGN,
    ),
    Case(
        "campaign attachment unknown (by index)",
        chert(5001, 404, False, attachment_index=1),
        Attempt(1, attachments=(OWN, LOGO)),
        Stop("5001: the campaign's attachment 'att_logo' ([send] attachments) is unknown to Chert"),
        CAMPAIGN,
    ),
    Case(
        "a row's own attachment unknown (by index)",
        chert(5001, 404, False, attachment_index=0),
        Attempt(1, attachments=(OWN, LOGO)),
        Fail("5001 from Chert (attachment 0)"),
        CAMPAIGN,
    ),
    Case(
        "campaign attachment unknown (no index, only shared ones)",
        chert(5001, 404, False),
        Attempt(1, attachments=(LOGO,)),
        Stop("5001: the campaign's attachment 'att_logo' ([send] attachments) is unknown to Chert"),
        CAMPAIGN,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision_table(case: Case) -> None:
    assert run(case.outcome, case.attempt, case.rules) == case.expected


@pytest.mark.parametrize(
    ("outcome", "maybe_delivered"),
    [(NETWORK_LOST, True), (NEVER_CONNECTED, False), (GATEWAY, True), (chert(3001, 500, True), False)],
    ids=["lost-answer", "never-connected", "gateway-5xx", "chert-5xx"],
)
def test_retries_back_off_with_jitter_and_say_whether_the_request_may_have_arrived(
    outcome: Outcome, maybe_delivered: bool
) -> None:
    delays = []
    for number in (1, 2, 3, 4, 5):
        decision = run(outcome, Attempt(number))
        assert isinstance(decision, Retry) and decision.maybe_delivered == maybe_delivered and not decision.pause_all
        delays.append(decision.after_s)
    for number, delay in enumerate(delays, start=1):
        assert 2 ** (number - 1) * 0.5 <= delay <= 2 ** (number - 1)  # 1 s, 2 s, 4 s… with jitter in [½, 1]×


def test_backoff_is_capped_and_draws_randomness_only_when_it_backs_off() -> None:
    rules = Rules(RetryPolicy(max_attempts=20, base_delay_s=1.0, max_delay_s=10.0))
    decision = decide(NETWORK_LOST, Attempt(15), rules, random.Random(0))
    assert isinstance(decision, Retry) and 5.0 <= decision.after_s <= 10.0
    rng = random.Random(0)
    before = rng.getstate()
    for outcome in (
        chert(3002, 503, True, 5.0),
        chert(1003, 400, False),
        chert(4002, 503, True),
        chert(2004, 401, False),
    ):
        decide(outcome, Attempt(1), rules, rng)
    assert rng.getstate() == before  # a seeded run's backoffs do not depend on other answers


def test_failure_breaker_trips_only_on_a_full_window_over_the_threshold() -> None:
    breaker = FailureBreaker(threshold=0.5, window=4)
    assert [breaker.record(failed=f) for f in (True, True, True)] == [None, None, None]  # the window is not full
    assert breaker.record(failed=False) == "75% of the last 4 sends failed (threshold 50%)"
    calm = FailureBreaker(threshold=0.5, window=4)
    assert [calm.record(failed=f) for f in (False, True, False, True, False, True)] == [None] * 6  # 50% is not over
    assert calm.record(failed=True) == "75% of the last 4 sends failed (threshold 50%)"  # the oldest success left
