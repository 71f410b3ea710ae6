"""The engine against the sandbox: exactly once under faults, pacing, retries, stops, resume."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest

from chertcast.campaign import load_campaign
from chertcast.client import ChertClient, Outcome, Secret
from chertcast.decide import RetryPolicy, outcome_unknown, retry_delay
from chertcast.engine import Engine, EngineSettings, RunHooks
from chertcast.errors import JournalError
from chertcast.journal import UNFINISHED, Journal
from chertcast.pacing import FakeClock, RealClock, TokenBucket
from chertcast.preflight import Plan, build_plan
from chertcast.sandbox import DEFAULT_SECRET, Faults, SandboxConfig, SandboxModel, SandboxServer, sandbox_transport
from tests.helpers import assert_journal_matches_ledger, write_campaign, write_contacts

pytestmark = pytest.mark.anyio


def make_plan(tmp_path: Path, rows: int, body: str = "Hi {{ name }}", extra: str = "") -> Plan:
    contacts = write_contacts(tmp_path / "contacts.csv", rows)
    return build_plan(load_campaign(write_campaign(tmp_path, contacts, body=body, extra=extra)))


async def run_engine(
    plan: Plan,
    journal: Journal,
    model: SandboxModel,
    clock: FakeClock,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    base_url: str = "http://sandbox/api/v1",
    secret: str = DEFAULT_SECRET,
    **settings: object,
) -> Engine:
    journal.sync_plan(plan)
    states = journal.states()
    todo = [r for r in plan.sendable if states[r.key or ""] in UNFINISHED]
    options = {"rate": 50.0, "burst": 5, "concurrency": 16, "handle_signals": False, **settings}
    async with httpx.AsyncClient(transport=transport or sandbox_transport(model)) as http:
        engine = Engine(
            ChertClient(http, base_url, Secret(secret)), journal, EngineSettings(**options), clock, rng=random.Random(1)
        )  # type: ignore[arg-type]
        await engine.run(todo)
    return engine


def assert_exactly_once(plan: Plan, journal: Journal, model: SandboxModel) -> None:
    ledger = model.deliveries()
    per_phone = Counter(d.phone for d in ledger)
    assert max(per_phone.values()) == 1, "someone was messaged twice"
    assert set(per_phone) == {r.phone for r in plan.sendable}, "someone was forgotten"
    by_key = {d.idempotency_key: d for d in ledger}
    rows = {r.key: r for r in journal.rows() if not r.key.startswith("skip:")}
    assert set(rows) == set(by_key)
    for key, row in rows.items():
        assert row.state == "sent", (key, row)
        assert row.message_id == by_key[key].message_id and row.phone == by_key[key].phone


FAULT_MIX = Faults(error_500=0.05, rate_limited=0.05, retry_after_s=1, drop_after=0.03, drop_before=0.02, seed=11)


async def test_exactly_once_under_faults_in_process(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 2000)
    model = SandboxModel(SandboxConfig(faults=FAULT_MIX))
    clock = FakeClock()
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        engine = await run_engine(plan, journal, model, clock, rate=200.0, burst=20, retry=RetryPolicy(max_attempts=12))
        assert_exactly_once(plan, journal, model)
    faults = model.stats()["faults"]
    assert faults["drop_after"] > 30 and faults["rate_limited"] > 50 and faults["error_500"] > 50
    assert engine.stats.sent == 2000 and engine.stats.failed == 0  # replays after a drop count as sent
    assert model.stats()["replays"] >= faults["drop_after"]


async def test_exactly_once_under_faults_over_loopback(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 400)
    model = SandboxModel(SandboxConfig(faults=FAULT_MIX))
    with SandboxServer(model) as server, Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        await run_engine(
            plan,
            journal,
            model,
            FakeClock(),
            transport=httpx.AsyncHTTPTransport(),
            base_url=server.base_url,
            rate=500.0,
            burst=50,
            retry=RetryPolicy(max_attempts=12),
        )
        assert_exactly_once(plan, journal, model)
    assert model.stats()["peak_concurrency"] > 1


async def test_pacing_never_exceeds_rate_plus_burst(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 300)
    clock = FakeClock()
    model = SandboxModel(SandboxConfig(clock=clock.now))
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        await run_engine(plan, journal, model, clock, rate=10.0, burst=3, concurrency=8)
    times = sorted(d.time for d in model.deliveries())
    assert len(times) == 300
    worst = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert worst <= 10 + 3
    assert times[-1] - times[0] == pytest.approx((300 - 3) / 10.0, rel=0.02)


async def test_token_bucket_pause_holds_every_caller() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(rate=100, burst=10, clock=clock)
    for _ in range(10):
        await bucket.acquire()
    assert clock.now() == 0.0
    bucket.pause(5.0)
    await bucket.acquire()
    assert clock.now() == pytest.approx(5.0 + 1 / 100)


async def test_rate_limit_pauses_the_whole_run(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 40)
    clock = FakeClock()
    model = SandboxModel(SandboxConfig(clock=clock.now, faults=Faults(rate_limited=0.1, retry_after_s=30, seed=3)))
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        await run_engine(plan, journal, model, clock, rate=1000.0, burst=50, concurrency=4)
        assert_exactly_once(plan, journal, model)
    times = sorted(d.time for d in model.deliveries())
    limited = model.stats()["faults"]["rate_limited"]
    assert limited >= 2
    # each 1007 (retry_after 30) paused everyone: the run took at least that many waits
    assert times[-1] - times[0] >= 30 * (limited - 1)


def test_retry_policy_is_a_pure_function() -> None:
    rng = random.Random(0)
    policy = RetryPolicy(max_attempts=4, base_delay_s=1, max_delay_s=3)
    assert retry_delay(Outcome("error", retryable=False, code=1003), 1, policy, rng) is None
    assert retry_delay(Outcome("error", retryable=True, retry_after=7.0), 1, policy, rng) == 7.0
    delays = [retry_delay(Outcome("network", retryable=True), n, policy, rng) for n in (1, 2, 3)]
    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and 1.5 <= delays[2] <= 3  # type: ignore[operator]
    assert retry_delay(Outcome("network", retryable=True), 4, policy, rng) is None


async def test_exhausted_retries_fail_the_row_with_its_code(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 5)
    model = SandboxModel(SandboxConfig(faults=Faults(error_500=1.0)))
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        engine = await run_engine(plan, journal, model, FakeClock(), retry=RetryPolicy(max_attempts=3))
        rows = [r for r in journal.rows() if r.state != "skipped"]
    assert engine.stats.failed == 5 and engine.stats.requests == 15
    assert all(r.state == "failed" and r.error_code == 3001 and r.attempts == 3 for r in rows)
    assert "after 3 attempts" in (rows[0].error_message or "")


async def test_non_retryable_row_error_fails_only_that_row(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 6)
    text = contacts.read_text().replace("phone,name", "phone,name,fx")
    lines = text.splitlines()
    lines = [lines[0]] + [line + (",sparkle" if i == 2 else ",") for i, line in enumerate(lines[1:])]
    contacts.write_text("\n".join(lines) + "\n")
    plan = build_plan(load_campaign(write_campaign(tmp_path, contacts, extra='[columns]\neffect = "fx"\n')))
    model = SandboxModel()
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        engine = await run_engine(plan, journal, model, FakeClock())
        states = Counter(r.state for r in journal.rows())
        failed = [r for r in journal.rows() if r.state == "failed"]
    assert engine.stats.failed == 1 and states["sent"] == 5
    assert failed[0].error_code == 4098 and failed[0].attempts == 1 and failed[0].row == 4


async def test_auth_failure_stops_the_campaign_and_keeps_rows_pending(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 50)
    model = SandboxModel()
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        engine = await run_engine(plan, journal, model, FakeClock(), secret="0" * 32, concurrency=4)
        counts = journal.counts()
    assert model.deliveries() == []
    assert engine.result.stop_kind == "campaign" and "2004" in (engine.result.stop_reason or "")
    assert counts["failed"] == 0 and counts["pending"] == 50
    assert engine.stats.requests <= 4  # stopped launching at once


async def test_campaign_wide_effect_rejected_stops_the_run(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 20, extra='[send]\neffect = "sparkles"\n')
    model = SandboxModel()
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        engine = await run_engine(plan, journal, model, FakeClock(), concurrency=2, campaign_effect="sparkles")
    assert engine.result.stop_kind == "campaign"
    assert "allowed: slam" in (engine.result.stop_reason or "")


async def test_failure_share_breaker(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 200)
    model = SandboxModel(SandboxConfig(faults=Faults(error_500=1.0)))
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        engine = await run_engine(
            plan,
            journal,
            model,
            FakeClock(),
            concurrency=4,
            failure_window=10,
            failure_threshold=0.5,
            retry=RetryPolicy(max_attempts=2),
        )
        counts = journal.counts()
    assert engine.result.stop_kind == "campaign" and "of the last 10 sends failed" in (engine.result.stop_reason or "")
    assert counts["failed"] < 20 and counts["pending"] > 150


async def test_capacity_wait_does_not_fail_rows(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 30)
    model = SandboxModel(SandboxConfig(faults=Faults(saturated=0.3, retry_after_s=60, seed=5)))
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        engine = await run_engine(plan, journal, model, FakeClock(), retry=RetryPolicy(max_attempts=2))
        assert_exactly_once(plan, journal, model)
    assert engine.stats.failed == 0 and engine.stats.capacity_waits > 3


async def test_long_capacity_wait_ends_the_run_cleanly(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 30)
    model = SandboxModel(SandboxConfig(faults=Faults(saturated=1.0, retry_after_s=7200)))
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        engine = await run_engine(plan, journal, model, FakeClock(), concurrency=2)
        counts = journal.counts()
    assert engine.result.stop_kind == "capacity" and engine.result.next_possible_in_s == 7200
    assert counts["pending"] == 30 and counts["failed"] == 0


async def test_resume_sends_only_what_is_left_and_new_rows(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 30)
    model = SandboxModel()
    path = tmp_path / "j.sqlite"
    with Journal(path, plan.campaign.id) as journal:
        journal.sync_plan(plan)
        todo = plan.sendable[:10]
        async with httpx.AsyncClient(transport=sandbox_transport(model)) as http:
            engine = Engine(
                ChertClient(http, "http://s/api/v1", Secret(DEFAULT_SECRET)),
                journal,
                EngineSettings(rate=100, burst=10, concurrency=4, handle_signals=False),
                FakeClock(),
            )
            await engine.run(todo)
    write_contacts(tmp_path / "contacts.csv", 35)  # five rows added to the sheet since
    bigger = build_plan(load_campaign(tmp_path / "campaign.toml"))
    with Journal(path, plan.campaign.id) as journal:
        await run_engine(bigger, journal, model, FakeClock())
        assert_exactly_once(bigger, journal, model)
    assert len(model.deliveries()) == 35


async def test_drops_that_outlast_max_attempts_leave_rows_unknown_then_a_rerun_settles_them(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, 13)
    model = SandboxModel(SandboxConfig(faults=Faults(drop_after=1.0)))
    path = tmp_path / "j.sqlite"
    with Journal(path, plan.campaign.id) as journal:
        engine = await run_engine(plan, journal, model, FakeClock(), retry=RetryPolicy(max_attempts=3))
        counts = journal.counts()
    assert (engine.stats.unknown, engine.stats.failed, counts["unknown"], counts["failed"]) == (13, 0, 13, 0)
    assert_journal_matches_ledger(path, plan.campaign.id, model.deliveries(), settled=False)
    model.config.faults.drop_after = 0.0
    with Journal(path, plan.campaign.id) as journal:
        engine = await run_engine(plan, journal, model, FakeClock())
        assert_exactly_once(plan, journal, model)
    assert engine.stats.sent == 13 and len(model.deliveries()) == 13
    assert_journal_matches_ledger(path, plan.campaign.id, model.deliveries(), settled=True)


async def test_an_error_answer_after_a_lost_one_is_still_an_unknown_outcome(tmp_path: Path) -> None:
    """A drop after delivery, then 500s until the retries run out: the row may have been delivered,
    so it is 'unknown' (never 'failed') and the next run's replay finds its message_id."""
    plan = make_plan(tmp_path, 300)
    model = SandboxModel(SandboxConfig(faults=Faults(drop_after=0.4, error_500=0.5, seed=8)))
    path = tmp_path / "j.sqlite"
    with Journal(path, plan.campaign.id) as journal:
        await run_engine(plan, journal, model, FakeClock(), retry=RetryPolicy(max_attempts=2))
        rows = [r for r in journal.rows() if r.state == "unknown"]
    assert any(r.error_code == 3001 for r in rows), "no row met a drop and then a 500"
    assert_journal_matches_ledger(path, plan.campaign.id, model.deliveries(), settled=False)
    model.config.faults.drop_after = model.config.faults.error_500 = 0.0
    with Journal(path, plan.campaign.id) as journal:
        await run_engine(plan, journal, model, FakeClock(), retry=RetryPolicy(max_attempts=2))
        await run_engine(plan, journal, model, FakeClock())  # rows failed by a plain 500 stay failed
        journal.reset_failed()
        await run_engine(plan, journal, model, FakeClock())
        assert_exactly_once(plan, journal, model)


async def test_a_crash_mid_request_then_a_changed_template_resends_the_first_message(tmp_path: Path) -> None:
    """SIGKILL after the request left (rows 'sending'), then the template is edited and the run
    resumed with --allow-changes: those rows repeat their first request under the same key (Chert
    replays it: no 1012, no 'failed'); the rows never attempted get the new text."""
    plan = make_plan(tmp_path, 6)
    model = SandboxModel()
    path = tmp_path / "j.sqlite"
    with Journal(path, plan.campaign.id) as journal:
        journal.sync_plan(plan)
        async with httpx.AsyncClient(transport=sandbox_transport(model)) as http:
            client = ChertClient(http, "http://sandbox/api/v1", Secret(DEFAULT_SECRET))
            for recipient in plan.sendable[:3]:  # as the engine does, then the process dies unanswered
                assert recipient.key is not None
                journal.mark_sending(recipient.key, None, recipient.payload())
                assert (await client.send(recipient.payload())).kind == "sent"
    campaign = tmp_path / "campaign.toml"
    campaign.write_text(campaign.read_text().replace("Hi {{", "Hello {{"))
    changed = build_plan(load_campaign(campaign))
    with Journal(path, plan.campaign.id) as journal:
        with pytest.raises(JournalError, match="3 of them may already have been delivered"):
            journal.sync_plan(changed)
        assert journal.sync_plan(changed, allow_changes=True).kept_original == 3
        engine = await run_engine(changed, journal, model, FakeClock())
        assert_exactly_once(changed, journal, model)
    assert engine.stats.failed == 0 and model.stats()["replays"] == 3
    bodies = {d.phone: d.body.split()[0] for d in model.deliveries()}
    assert [bodies[r.phone] for r in changed.sendable] == ["Hi"] * 3 + ["Hello"] * 3


def test_which_outcomes_may_have_been_delivered() -> None:
    assert outcome_unknown(Outcome("network", message="ReadError: peer closed"))
    assert not outcome_unknown(Outcome("network", message="ConnectError: refused", request_sent=False))
    assert outcome_unknown(Outcome("error", http_status=200, retryable=True))  # a 2xx we could not read
    assert outcome_unknown(Outcome("error", http_status=504, message="HTTP 504 with an unexpected body"))
    assert not outcome_unknown(Outcome("error", http_status=500, code=3001, retryable=True))  # Chert: not sent
    assert not outcome_unknown(Outcome("error", http_status=404, message="HTTP 404 with an unexpected body"))
    assert not outcome_unknown(Outcome("error", http_status=429, code=1007, retryable=True))


async def test_the_engine_prints_nothing_and_its_hooks_hear_the_long_waits(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    plan = make_plan(tmp_path, 30)
    model = SandboxModel(SandboxConfig(faults=Faults(saturated=0.3, retry_after_s=60, seed=5)))
    notices: list[str] = []
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        journal.sync_plan(plan)
        async with httpx.AsyncClient(transport=sandbox_transport(model)) as http:
            client = ChertClient(http, "http://sandbox/api/v1", Secret(DEFAULT_SECRET))
            settings = EngineSettings(rate=50.0, burst=5, concurrency=16, handle_signals=False)
            engine = Engine(client, journal, settings, FakeClock(), hooks=RunHooks(notice=notices.append))
            await engine.run(plan.sendable)
        assert_exactly_once(plan, journal, model)
    assert engine.stats.capacity_waits == len(notices) > 3
    assert all(n.startswith("waiting: row ") and "got 4002 (sender lines saturated); until " in n for n in notices)
    assert capfd.readouterr() == ("", "")  # the caller decides what people see


async def test_a_second_signal_cancels_the_run_at_once_when_the_hook_returns(tmp_path: Path) -> None:
    """The library's own answer to a second Ctrl-C (the CLI's hook leaves the process instead):
    the run ends without waiting for the answers in flight, which stay 'sending' for the next run."""
    plan = make_plan(tmp_path, 20)
    model = SandboxModel(SandboxConfig(faults=Faults(latency_ms=3_000)))
    heard: list[tuple[bool, str]] = []
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        journal.sync_plan(plan)
        async with httpx.AsyncClient(transport=sandbox_transport(model)) as http:
            client = ChertClient(http, "http://sandbox/api/v1", Secret(DEFAULT_SECRET))
            settings = EngineSettings(rate=100.0, burst=10, concurrency=4)
            engine = Engine(
                client, journal, settings, RealClock(), hooks=RunHooks(interrupted=lambda *said: heard.append(said))
            )
            started = time.monotonic()
            async with anyio.create_task_group() as group:
                group.start_soon(engine.run, plan.sendable)
                await anyio.sleep(0.3)
                os.kill(os.getpid(), signal.SIGINT)
                await anyio.sleep(0.1)
                os.kill(os.getpid(), signal.SIGINT)
            elapsed = time.monotonic() - started
        counts = journal.counts()
    assert heard == [(False, "Ctrl-C"), (True, "Ctrl-C")] and engine.result.stop_kind == "interrupted"
    assert elapsed < 2.0  # the answers in flight (3 s away) were not waited for
    assert counts["sending"] == 4 and counts["pending"] == 16 and model.deliveries() == []


async def test_a_long_wait_is_said_once_even_when_answers_wake_it(tmp_path: Path) -> None:
    """An answer landing cuts a wait short and the step plans the same wait again: the user saw
    the same `waiting:` line twice (new-user walkthrough). A new wait, or a new moment, is said."""
    plan = make_plan(tmp_path, 1)
    notices: list[str] = []
    with Journal(tmp_path / "j.sqlite", plan.campaign.id) as journal:
        async with httpx.AsyncClient(transport=sandbox_transport(SandboxModel())) as http:
            client = ChertClient(http, "http://sandbox/api/v1", Secret(DEFAULT_SECRET))
            settings = EngineSettings(rate=50.0, burst=5, concurrency=4, handle_signals=False)
            clock = FakeClock(1_000_000.0)
            engine = Engine(client, journal, settings, clock, hooks=RunHooks(notice=notices.append))
            later = clock.wall() + 3_600
            engine._announce("1 row is held by quiet hours", later)
            engine._announce("1 row is held by quiet hours", later)  # woken by an answer: the same wait
            engine._announce("1 row is held by quiet hours", later + 600)
    assert len(notices) == 2 and all(n.startswith("waiting: 1 row is held by quiet hours; until ") for n in notices)
