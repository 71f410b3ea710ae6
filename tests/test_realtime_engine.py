"""The scheduler with time passing while requests are in flight.

trio's MockClock gives a virtual event-loop clock that jumps only when every task is blocked;
the in-process sandbox sleeps its latency (plus jitter) on that clock before it answers, so
requests really take time, answers come back out of order, and the engine's waits are real
``anyio`` waits (which raise on a negative delay, as in production). Minutes of sending run
in a fraction of a second, deterministically.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import httpx
import pytest
import trio.testing

from chertcast.campaign import load_campaign
from chertcast.capacity import CapacityRules, LinePlanner, QuietHours
from chertcast.client import ChertClient, Secret
from chertcast.decide import RetryPolicy
from chertcast.engine import Engine, EngineSettings, RunResult
from chertcast.journal import Journal
from chertcast.pacing import FakeClock, InFlight, LoopClock, RealClock
from chertcast.preflight import Plan, build_plan
from chertcast.sandbox import DEFAULT_SECRET, Delivery, Faults, SandboxConfig, SandboxModel, sandbox_transport
from chertcast.schedule import Scheduler
from tests.helpers import sandbox_limits, write_campaign, write_contacts

NY = ZoneInfo("America/New_York")
LINES = tuple(f"pl_line_{i}" for i in range(1, 6))
MONDAY_10AM = dt.datetime(2026, 11, 30, 10, 0, tzinfo=NY).timestamp()


def in_virtual_time(scenario: Callable[[], Awaitable[None]]) -> None:
    anyio.run(scenario, backend="trio", backend_options={"clock": trio.testing.MockClock(autojump_threshold=0)})


class Order(httpx.AsyncBaseTransport):
    """Test instrumentation: the order requests went out and the order their answers came back."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[int] = []
        self.answered: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        number = len(self.sent)
        self.sent.append(number)
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.answered.append(number)


@dataclass
class Run:
    model: SandboxModel
    result: RunResult | None = None
    engine: Engine | None = None
    order: Order | None = None
    counts: dict[str, int] = field(default_factory=dict)


def plan_for(tmp_path: Path, rows: int, phones: list[str] | None = None) -> Plan:
    contacts = tmp_path / "contacts.csv"
    if phones is None:
        write_contacts(contacts, rows)
    else:
        contacts.write_text("phone,name\n" + "".join(f"{p},Lead {i}\n" for i, p in enumerate(phones)))
    return build_plan(load_campaign(write_campaign(tmp_path, contacts)))


def run_scheduled(
    tmp_path: Path,
    plan: Plan,
    *,
    server_rules: CapacityRules,
    plan_gap_s: float,
    faults: Faults,
    start: float = MONDAY_10AM,
    quiet: QuietHours | None = None,
    lines: tuple[str, ...] = LINES,
    **settings: object,
) -> Run:
    """The engine with capacity planning against the capacity-mode sandbox, in virtual time."""
    run = Run(SandboxModel())

    async def scenario() -> None:
        clock = LoopClock(start)
        run.model = SandboxModel(
            SandboxConfig(lines=lines, capacity=sandbox_limits(server_rules), clock=clock.wall, faults=faults)
        )
        run.order = Order(sandbox_transport(run.model))
        planned = CapacityRules(
            line_gap_s=plan_gap_s,
            line_daily_cap=server_rules.line_daily_cap,
            timezone=server_rules.timezone,
        )
        options = {"rate": 5.0, "burst": 1, "concurrency": 8, "handle_signals": False, **settings}
        with Journal(tmp_path / "j.sqlite", plan.campaign.id, clock=clock.wall) as journal:
            journal.sync_plan(plan)
            async with httpx.AsyncClient(transport=run.order) as http:
                client = ChertClient(http, "http://sandbox/api/v1", Secret(DEFAULT_SECRET), clock=clock.wall)
                scheduler = Scheduler(LinePlanner(planned, lines), quiet)
                engine = Engine(
                    client,
                    journal,
                    EngineSettings(**options, scheduler=scheduler),  # type: ignore[arg-type]
                    clock,
                    rng=random.Random(7),
                )
                run.engine = engine
                run.result = await engine.run(plan.sendable)
            run.counts = dict(journal.counts())

    in_virtual_time(scenario)
    return run


def gaps_per_line(ledger: list[Delivery]) -> dict[str, list[float]]:
    by_line: dict[str, list[float]] = defaultdict(list)
    for delivery in ledger:
        by_line[delivery.phone_line_id].append(delivery.time)
    return {line: [b - a for a, b in itertools.pairwise(sorted(times))] for line, times in by_line.items()}


LATENCY = Faults(latency_ms=500, jitter_ms=400, seed=3)  # 0.5-0.9 s, slots 0.2 s apart (rate 5/s)
UNRELIABLE = Faults(
    latency_ms=300, jitter_ms=400, error_500=0.1, drop_after=0.05, drop_before=0.03, rate_limited=0.03, seed=21
)


@pytest.mark.parametrize(
    ("faults", "concurrency"),
    [(LATENCY, 8), (LATENCY, 2), (UNRELIABLE, 8)],
    ids=["latency-jitter", "latency-low-concurrency", "latency-retries-drops"],
)
def test_latency_longer_than_slot_spacing_fills_the_day(tmp_path: Path, faults: Faults, concurrency: int) -> None:
    """Finding 1: with answers slower than the spacing of lines' slots, the second round of
    first-touch sends crashed (a negative sleep: ExceptionGroup, exit 70)."""
    rules = CapacityRules(line_gap_s=2.0, line_daily_cap=6)
    plan = plan_for(tmp_path, 60)
    run = run_scheduled(
        tmp_path,
        plan,
        server_rules=rules,
        plan_gap_s=2.2,
        faults=faults,
        concurrency=concurrency,
        retry=RetryPolicy(max_attempts=12),
    )
    assert run.result is not None and run.engine is not None and run.order is not None
    ledger = run.model.deliveries()
    assert len(ledger) == len(LINES) * 6  # the day's capacity, all of it
    assert max(Counter(d.phone for d in ledger).values()) == 1
    assert Counter(d.phone_line_id for d in ledger) == dict.fromkeys(LINES, 6)
    assert min(min(gaps) for gaps in gaps_per_line(ledger).values()) >= 2.0
    assert run.result.stop_kind == "capacity" and run.engine.stats.failed == 0
    assert run.counts["sent"] == 30 and run.counts["pending"] == 30 and run.counts.get("failed", 0) == 0
    assert run.model.stats()["capacity_refusals"] == 0  # planned from answers: latency cannot cause a 4002
    if concurrency > 2:
        assert run.order.answered != sorted(run.order.answered)  # answers really came back out of order
    if faults is UNRELIABLE:
        injected = run.model.stats()["faults"]
        assert injected["error_500"] and injected["drop_after"] and run.engine.stats.retries > 3


def test_line_with_an_unanswered_first_touch_waits_for_the_answer(tmp_path: Path) -> None:
    """Latency longer than the gap itself: a line's next first touch waits for the answer to the
    last one (Chert may time that one as late as its answer), so no 4002 is ever provoked."""
    rules = CapacityRules(line_gap_s=0.5, line_daily_cap=4)
    plan = plan_for(tmp_path, 12)
    run = run_scheduled(
        tmp_path, plan, server_rules=rules, plan_gap_s=0.5, faults=Faults(latency_ms=1500, jitter_ms=1000, seed=5)
    )
    assert run.result is not None
    assert len(run.model.deliveries()) == 12 and run.model.stats()["capacity_refusals"] == 0
    assert min(min(gaps, default=9.9) for gaps in gaps_per_line(run.model.deliveries()).values()) >= 0.5


def test_quiet_hours_end_while_answers_are_in_flight(tmp_path: Path) -> None:
    """The quiet-hours wait with time passing: rows held until 08:00 in Los Angeles go out when
    the hold ends, while slow answers for New York rows are still landing (the wait is cut
    short by answers and recomputed, never stale)."""
    start = dt.datetime(2026, 11, 30, 10, 59, 59, 500_000, tzinfo=NY).timestamp()  # 07:59:59.5 in LA
    phones = [f"(212) 555-{i:04d}" for i in range(6)] + [f"(415) 555-{i:04d}" for i in range(4)]
    plan = plan_for(tmp_path, 0, phones)
    run = run_scheduled(
        tmp_path,
        plan,
        server_rules=CapacityRules(line_gap_s=0.0, line_daily_cap=30),
        plan_gap_s=0.0,
        faults=Faults(latency_ms=900, jitter_ms=300, seed=2),
        start=start,
        quiet=QuietHours(),
        lines=("pl_a",),
        rate=10.0,
    )
    assert run.result is not None and run.result.stop_kind is None
    ledger = run.model.deliveries()
    assert len(ledger) == 10
    la = [d for d in ledger if d.phone.startswith("+1415")]
    opening = dt.datetime(2026, 11, 30, 8, 0, tzinfo=ZoneInfo("America/Los_Angeles")).timestamp()
    assert min(d.time for d in la) >= opening


# ------------------------------------------------------------------- clocks


def test_clocks_refuse_negative_sleeps_and_clamp_deadlines() -> None:
    async def scenario() -> None:
        fake = FakeClock(100.0)
        with pytest.raises(ValueError, match="never negative"):
            await fake.sleep(-0.001)
        await fake.sleep_until(50.0)  # in the past: no wait, no time travel backwards
        assert fake.wall() == 100.0
        await fake.sleep_until(160.0)
        assert fake.wall() == 160.0
        real = RealClock()
        with pytest.raises(ValueError, match="never negative"):
            await real.sleep(-1.0)
        began = real.now()
        await real.sleep_until(real.wall() - 3600)  # an hour ago: returns at once
        assert real.now() - began < 0.5
        loop = LoopClock(1_000.0)
        await loop.sleep_until(1_030.0)
        assert loop.wall() == pytest.approx(1_030.0)

    in_virtual_time(scenario)


def test_sleep_until_wakes_when_an_answer_lands() -> None:
    async def scenario() -> None:
        clock = LoopClock(0.0)
        in_flight = InFlight(2)
        await in_flight.acquire()
        await in_flight.acquire()
        async with anyio.create_task_group() as group:

            async def answer_after(seconds: float) -> None:
                await anyio.sleep(seconds)
                in_flight.release()

            group.start_soon(answer_after, 0.7)
            group.start_soon(answer_after, 1.5)
            await clock.sleep_until(60.0, in_flight.changed())
            assert clock.wall() == pytest.approx(0.7)  # woken by the answer, not the deadline
            await in_flight.acquire()  # a slot is free: no wait
            assert clock.wall() == pytest.approx(0.7)
            await in_flight.acquire()  # full again: waits for the answer at 1.5 s, without polling
            assert clock.wall() == pytest.approx(1.5)
            in_flight.release()
            in_flight.release()
            await in_flight.idle()

    in_virtual_time(scenario)


def test_fake_clock_lets_answers_in_flight_land_before_jumping() -> None:
    async def scenario() -> None:
        clock = FakeClock(0.0)
        in_flight = InFlight(1)
        await in_flight.acquire()
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: _release_soon(in_flight))
            await clock.sleep_until(600.0, in_flight.changed())
        assert clock.wall() == 0.0  # zero-latency network: the answer came first

    anyio.run(scenario)


async def _release_soon(in_flight: InFlight) -> None:
    await anyio.lowlevel.checkpoint()
    in_flight.release()


def test_run_ends_the_moment_the_last_answer_lands(tmp_path: Path) -> None:
    """The drain waits on an event, not a 10 ms poll: in virtual time the run ends exactly
    when the slowest answer arrives."""
    plan = plan_for(tmp_path, 3)
    ended: list[float] = []

    async def scenario() -> None:
        clock = LoopClock(MONDAY_10AM)
        model = SandboxModel(SandboxConfig(clock=clock.wall, faults=Faults(latency_ms=1234)))
        with Journal(tmp_path / "j.sqlite", plan.campaign.id, clock=clock.wall) as journal:
            journal.sync_plan(plan)
            async with httpx.AsyncClient(transport=sandbox_transport(model)) as http:
                client = ChertClient(http, "http://sandbox/api/v1", Secret(DEFAULT_SECRET), clock=clock.wall)
                settings = EngineSettings(rate=100.0, burst=3, concurrency=3, handle_signals=False)
                await Engine(client, journal, settings, clock).run(plan.sendable)
        ended.append(clock.wall() - MONDAY_10AM)

    in_virtual_time(scenario)
    assert ended == [pytest.approx(1.234, abs=1e-6)]


def test_cut_waits_end_at_once_and_later_ones_never_start() -> None:
    """pacing.Cuttable: the engine's stop() and the follow-ups' halt() share it."""
    from chertcast.pacing import Cuttable

    async def scenario() -> None:
        waits, done = Cuttable(), []

        async def long_wait() -> None:
            await waits.wait(lambda: anyio.sleep(3_600))
            done.append(anyio.current_time())

        started = anyio.current_time()
        async with anyio.create_task_group() as group:
            group.start_soon(long_wait)
            await anyio.sleep(1)
            waits.cut()
        await waits.wait(lambda: anyio.sleep(3_600))  # after the cut: returns at once
        assert done == [started + 1] and anyio.current_time() == started + 1

    in_virtual_time(scenario)
