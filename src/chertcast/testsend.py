"""``send CAMPAIGN --to +1…``: one row's message, sent to the operator's own number first.

The request is the one the campaign would send for that row — built by the same
``Recipient.payload`` (body, attachments, effect, line) — with three differences: the phone is
the operator's, the idempotency key is the test send's own, and the row's ``name`` and
``external_id`` are left out (they would label the operator's number in Chert with a customer's
name and CRM id). It never opens the campaign's journal (a local attachment is uploaded for the
test send and recorded nowhere), takes no run lock and is not counted in capacity planning.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import httpx

from chertcast.campaign import Campaign, load_campaign
from chertcast.client import ChertClient, Outcome, Secret
from chertcast.decide import LINK_CODE, STOP_CODES, RetryPolicy, SetupBreaker, outcome_unknown, retry_delay
from chertcast.errors import InputError
from chertcast.pacing import Clock, RealClock
from chertcast.phones import normalise
from chertcast.preflight import Plan, Recipient, build_plan
from chertcast.present import bubble_view, plural
from chertcast.runner import SendOptions, journal_path_for, upload_file

TEST_KEY_PREFIX = "ct1_"  # a campaign's keys start "cc1_": a test send's key is never one of them
MAX_WAIT_S = 30.0  # a test send waits this long at most for a retry; a longer ask ends it


def key_for(campaign_id: str, row: int, request: dict[str, Any]) -> str:
    """``ct1_`` + 40 hex of sha256("chertcast/test-send/v1" ␟ campaign id ␟ row ␟ phone ␟ request).

    ``request`` is the /send body without its key (the operator's phone, the row's body,
    attachments, effect, line), in canonical JSON: the same test send gets the same key, so
    Chert answers a rerun from its idempotency store instead of delivering it twice, and any
    change to the message makes a new key.
    """
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = f"chertcast/test-send/v1\x1f{campaign_id}\x1f{row}\x1f{request['phone']}\x1f{canonical}"
    return TEST_KEY_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:40]


def operator_phone(raw: str, campaign: Campaign) -> tuple[str, str | None]:
    """The ``--to`` number in E.164 (read with the campaign's default region) and any warning."""
    result = normalise(raw, campaign.default_region)
    if result.e164 is None:
        raise InputError(f"--to {raw!r}: {result.reason}")
    return result.e164, result.warning


def choose_row(plan: Plan, row: int | None) -> Recipient:
    """Row ``row`` of the sheet (default: the first sendable one); it must be sendable."""
    name = plan.sheet.path.name
    if row is None:
        if not plan.sendable:
            raise InputError(f"{name}: no row can be sent, so there is no message to test; see `chertcast check`")
        return plan.sendable[0]
    chosen = next((r for r in plan.recipients if r.row == row), None)
    if chosen is None:
        numbers = plan.sheet.row_numbers
        span = f"data rows are {numbers[0]}-{numbers[-1]}" if numbers else "it has no data rows"
        raise InputError(f"{name}: --row {row} is not a data row ({span}, blank rows skipped)")
    if chosen.status != "sendable":
        raise InputError(f"{name}: row {row} is not sendable ({chosen.status}: {chosen.reason})")
    return chosen


def addressed_to(source: Recipient, to: str, campaign_id: str, uploaded: dict[str, str]) -> Recipient:
    """``source``'s message addressed to ``to``, under the test send's own key."""
    draft = replace(source, phone=to, key=None, name=None, external_id=None)
    request = {k: v for k, v in draft.payload(uploaded).items() if k != "idempotency_key"}
    return replace(draft, key=key_for(campaign_id, source.row, request))


@dataclass
class SentToSelf:
    campaign: Campaign
    source: Recipient  # the sheet row whose message was sent
    sent: Recipient  # that message as addressed to the operator (its phone and key)
    outcome: Outcome
    attempts: int
    journal_path: Path  # the campaign's journal, which the test send left as it was
    sandbox: bool
    sandbox_deliveries: int | None = None  # the caller that started a sandbox fills it in
    phone_warning: str | None = None
    setup_problem: str | None = None  # the base URL or the host is wrong: said instead of the last answer

    @property
    def delivered(self) -> bool:
        return self.outcome.delivered

    @property
    def exit_code(self) -> int:
        return 0 if self.delivered else 1


def run_test_send(
    campaign_path: Path,
    to: str,
    row: int | None,
    *,
    base_url: str,
    secret: Secret,
    transport: httpx.AsyncBaseTransport | None = None,
    sandbox: bool = False,
    encoding: str | None = None,
    clock: Clock | None = None,
) -> SentToSelf:
    """Check the campaign, pick the row, send its message to ``to``. Blocking.

    Where it goes is passed in (``base_url``, ``secret``, optionally an httpx ``transport``), as
    for a campaign send: only the command line reads ``CHERT_*`` or starts a sandbox.
    ``sandbox`` only names the journal the output says is unchanged (the rehearsal's)."""
    campaign = load_campaign(campaign_path)
    phone, warning = operator_phone(to, campaign)
    source = choose_row(build_plan(campaign, encoding=encoding), row)
    where = (base_url, secret, transport)
    sent, outcome, attempts, broken = anyio.run(_send, campaign, source, phone, where, clock or RealClock())
    path = journal_path_for(campaign, SendOptions(sandbox=sandbox))
    return SentToSelf(campaign, source, sent, outcome, attempts, path, sandbox, None, warning, broken)


async def _send(
    campaign: Campaign,
    source: Recipient,
    phone: str,
    where: tuple[str, Secret, httpx.AsyncBaseTransport | None],
    clock: Clock,
) -> tuple[Recipient, Outcome, int, str | None]:
    settings, api = campaign.send, campaign.api
    base_url, secret, transport = where
    timeout = httpx.Timeout(settings.timeout_s, connect=10.0)
    async with httpx.AsyncClient(timeout=timeout, transport=transport) as http:
        client = ChertClient(http, base_url, secret, auth=api.auth, tenant=api.tenant, clock=clock.wall)
        uploaded = {}
        for path in sorted({a.value for a in source.attachments if a.is_file}):
            uploaded[path] = await upload_file(client, Path(path), Path(path).read_bytes())
        sent = addressed_to(source, phone, campaign.id, uploaded)
        policy = RetryPolicy(max_attempts=settings.max_attempts, max_delay_s=settings.max_backoff_s)
        outcome, attempts, broken = await _deliver(client, sent.payload(uploaded), policy, clock)
        return sent, outcome, attempts, broken


async def _deliver(
    client: ChertClient, payload: dict[str, Any], policy: RetryPolicy, clock: Clock
) -> tuple[Outcome, int, str | None]:
    """The campaign's retry policy, with the same key on every attempt; no wait over ``MAX_WAIT_S``;
    a broken setup (a wrong base URL, an unreachable host) ends it after 3 identical answers, as
    it stops a campaign. Returns the last outcome, the attempts and the setup problem, if any."""
    rng = random.Random()
    setup = SetupBreaker()
    attempt = 0
    while True:
        attempt += 1
        outcome = await client.send(payload)
        if outcome.delivered:
            return outcome, attempt, None
        broken = setup.observe(outcome, client.base_url)
        delay = retry_delay(outcome, attempt, policy, rng)
        if broken is not None or delay is None or delay > MAX_WAIT_S:
            return outcome, attempt, broken
        await clock.sleep(delay)


# ------------------------------------------------------------------ output


def summary_lines(result: SentToSelf) -> list[str]:
    """What ``send --to`` prints: the message as sent, Chert's answer, and that the journal is unchanged."""
    source, sent, outcome = result.source, result.sent, result.outcome
    mode = "SANDBOX: " if result.sandbox else ""
    who = f" ({source.name})" if source.name else ""
    lines = [f"{mode}test send of row {source.row}'s message{who} to {sent.phone}", *bubble_view(result.sent)]
    if result.phone_warning:
        lines.append(f"note: {result.phone_warning}")
    lines.append(_answer(outcome, result.attempts, result.setup_problem))
    if result.sandbox_deliveries is not None:
        ledger = plural(result.sandbox_deliveries, "delivery", "deliveries")
        lines.append(f"Sandbox ledger: {ledger} (a rehearsal; nothing reached a phone)")
    lines.append(f"test send to {sent.phone}; the campaign journal is unchanged ({result.journal_path})")
    return lines


def _answer(outcome: Outcome, attempts: int, setup_problem: str | None) -> str:
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if setup_problem is not None:
        return f"not delivered: {setup_problem}"
    if outcome.kind == "sent":
        return f"sent: message_id {outcome.message_id}{tries}"
    if outcome.kind == "duplicate":
        return f"duplicate: Chert had already delivered this text to this number (message_id {outcome.message_id})"
    if outcome_unknown(outcome):
        return (
            f"outcome unknown{tries}: {outcome.message}; run the same command again "
            "(same key: Chert will not deliver it twice)"
        )
    code = f"{outcome.code}: " if outcome.code is not None else ""
    meaning = STOP_CODES.get(outcome.code or 0, outcome.message)
    if outcome.code == LINK_CODE:  # this number has no conversation with the sender yet
        meaning = "the first message must not contain links (URLs, www., domains such as example.com)"
    wait = f" (Chert asks to wait {outcome.retry_after:,.0f}s; try again later)" if outcome.retry_after else ""
    return f"not delivered{tries}: {code}{meaning}{wait}"


def summary_json(result: SentToSelf) -> dict[str, Any]:
    outcome = result.outcome
    return {
        "test_send": True,
        "campaign": result.campaign.id,
        "row": result.source.row,
        "to": result.sent.phone,
        "idempotency_key": result.sent.key,
        "body": result.sent.body,
        "status": outcome.kind if result.delivered else ("unknown" if outcome_unknown(outcome) else "failed"),
        "message_id": outcome.message_id,
        "error_code": outcome.code,
        "error_message": None if result.delivered else (result.setup_problem or outcome.message),
        "attempts": result.attempts,
        "sandbox": result.sandbox,
        "sandbox_deliveries": result.sandbox_deliveries,
        "journal": str(result.journal_path),
        "journal_unchanged": True,
        "exit_code": result.exit_code,
    }
