"""Follow-up sequences over simulated days: a 3-step campaign against the capacity-mode sandbox
(replies and opt-outs on), rerun like cron whenever chertcast says the next thing is possible,
with runs cut off at random moments.

Reports the sequence's calendar length against the ideal (first touches at full line capacity
from the start, each follow-up sent the moment it falls due after the previous delivery), aim
≤ 1.05×, and checks what the issue asks: each step at most once per recipient, none after a
reply or opt-out (by the sandbox's own record of when it replied), every due step sent,
follow-ups never refused for first-touch capacity."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import anyio.lowlevel
import httpx

import chertcast
from benchmarks.common import machine, save
from chertcast import Endpoint, Secret, runner
from chertcast.campaign import gap_margin, load_campaign
from chertcast.capacity import QuietHours, quiet_ok, zones_for
from chertcast.followups import Facts, decide, read_facts, step_key
from chertcast.pacing import FakeClock
from chertcast.sandbox import DEFAULT_SECRET, CapacityLimits, SandboxConfig, SandboxModel, sandbox_transport
from chertcast.sandbox.outcomes import OutcomeConfig

ZONE = "America/New_York"
EASTERN = ("212", "646", "917", "718", "617", "305", "404", "202")
LINE_CAP = 30
GAP_MIN = 10.0
DELAYS = ("1d", "2d")


@dataclass
class Simulation:
    recipients: int
    lines: int
    seed: int = 7
    kills: int = 4  # the first runs are killed after a random number of requests, then rerun
    delays: tuple[str, ...] = DELAYS
    wait: bool = True  # each run is `send --wait` (stays up until the sequence ends); else one pass per run
    results: dict[str, Any] = field(default_factory=dict)


class _KillAfter(httpx.AsyncBaseTransport):
    """The in-process stand-in for a SIGKILL (a real one is tests/test_followups_e2e.py's): after
    ``after`` requests the run is cancelled *inside* a request the sandbox has already handled,
    so its answer is lost, as when a process dies with a send in flight."""

    def __init__(self, inner: httpx.AsyncBaseTransport, after: int | None, scope: anyio.CancelScope) -> None:
        self.inner, self.after, self.scope, self.seen = inner, after, scope, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.seen += 1
        if self.after is not None and self.seen >= self.after:
            self.scope.cancel()
            await anyio.lowlevel.checkpoint()  # raises: the answer never arrives
        return response


def write_campaign(directory: Path, recipients: int, lines: int, delays: tuple[str, ...] = DELAYS) -> Path:
    contacts = directory / "contacts.csv"
    contacts.write_text(
        "phone,name\n"
        + "".join(f"({EASTERN[i % 8]}) {555 + i // 80_000}-{(i // 8) % 10_000:04d},L{i}\n" for i in range(recipients)),
        encoding="utf-8",
    )
    listed = ", ".join(f'"pl_{i}"' for i in range(lines))
    steps = "".join(
        f'[[follow_up]]\nafter = "{d}"\nbody = "Step {n}, {{{{ name }}}}"\n' for n, d in enumerate(delays, 2)
    )
    campaign = directory / "campaign.toml"
    campaign.write_text(
        f'id = "follow-bench"\ncontacts = "contacts.csv"\nbody = "Hi {{{{ name }}}}"\nopt_out_list = "optouts.csv"\n'
        f"{steps}[send]\nrate = 20\nburst = 5\nconcurrency = 8\n"
        f'[capacity]\nlines = [{listed}]\nline_daily_cap = {LINE_CAP}\ntimezone = "{ZONE}"\n',
        encoding="utf-8",
    )
    return campaign


def simulate(sim: Simulation, directory: Path) -> dict[str, Any]:
    """Run the whole sequence like cron on a simulated clock; return the measurements."""
    start = dt.datetime(2026, 11, 30, 8, 0, tzinfo=ZoneInfo(ZONE)).timestamp()
    clock = FakeClock(start)
    lines = tuple(f"pl_{i}" for i in range(sim.lines))
    limits = CapacityLimits(GAP_MIN * 60, LINE_CAP, None, None, None, ZONE)
    outcomes = OutcomeConfig(seed=sim.seed, reply_share=0.3, opt_out_share=0.2, contains_word_share=0.05, delay_s=300)
    model = SandboxModel(SandboxConfig(lines=lines, capacity=limits, clock=clock.wall, outcomes=outcomes))
    campaign = write_campaign(directory, sim.recipients, sim.lines, sim.delays)
    transport = sandbox_transport(model)
    rng = random.Random(sim.seed)
    runs = cut = 0
    journal = directory / "j.sqlite"
    began = time.perf_counter()
    while runs < 10_000:
        runs += 1
        options = runner.SendOptions(journal=journal, handle_signals=False, wait=sim.wait)
        after = rng.randint(1, 3 * sim.recipients) if cut < sim.kills else None
        outcome = anyio.run(_one_run, campaign, transport, options, clock, after)
        if outcome is None:  # cut off: cron starts the next run a minute later
            cut += 1
            clock.time += 60
            continue
        result = outcome.result
        moments = []
        if result is not None and result.run is not None and result.run.stop_kind == "capacity":
            moments.append(result.run.next_possible_at)
        if result is not None and result.follow_ups is not None and result.follow_ups.next_due_at is not None:
            moments.append(result.follow_ups.next_due_at)
        moments = [m for m in moments if m is not None]
        if not moments:
            break
        clock.time = max(clock.time + 1, min(moments))  # cron, on the simulated clock
    return _measure(sim, model, journal, campaign, start, runs, cut, time.perf_counter() - began)


async def _one_run(
    campaign: Path,
    transport: httpx.AsyncBaseTransport,
    options: runner.SendOptions,
    clock: FakeClock,
    after: int | None,
) -> chertcast.api.SendOutcome | None:
    with anyio.CancelScope() as scope:
        endpoint = Endpoint("http://sandbox.test/api/v1", Secret(DEFAULT_SECRET), _KillAfter(transport, after, scope))
        return await chertcast.asend(campaign, endpoint=endpoint, options=options, clock=clock)
    return None


def _measure(
    sim: Simulation, model: SandboxModel, journal: Path, campaign: Path, start: float, runs: int, cut: int, wall: float
) -> dict[str, Any]:
    loaded = load_campaign(campaign)
    with sqlite3.connect(journal) as db:
        first = dict(db.execute("SELECT key, phone FROM recipients"))
        facts = read_facts(db)
        refused = db.execute("SELECT COUNT(*) FROM follow_ups WHERE error_code = 4002").fetchone()[0]
    phone_key = {phone: key for key, phone in first.items()}
    step_of = {step_key(key, n): (key, n) for key in first for n in range(1, loaded.steps + 1)}
    deliveries = model.deliveries()
    per_key = Counter(d.idempotency_key for d in deliveries)
    replied_at: dict[str, float] = {}
    for reply in model.replies():
        key = phone_key[reply["phone"]]
        replied_at[key] = min(replied_at.get(key, math.inf), reply["at"])
    after_reply = sum(
        1
        for d in deliveries
        if step_of[d.idempotency_key or ""][1] > 1
        and replied_at.get(step_of[d.idempotency_key or ""][0], math.inf) <= d.time
    )
    by_step = Counter(step_of[d.idempotency_key or ""][1] for d in deliveries)
    left_due = sum(1 for key in first if decide(loaded.follow_up, facts.get(key, Facts())).at is not None)
    first_days = Counter(
        (dt.datetime.fromtimestamp(d.time, ZoneInfo(ZONE)).date(), d.phone_line_id)
        for d in deliveries
        if step_of[d.idempotency_key or ""][1] == 1
    )
    hours = QuietHours(dt.time(8), dt.time(21), "UTC")  # the campaign's default quiet hours
    outside = sum(
        1
        for d in deliveries
        if step_of[d.idempotency_key or ""][1] > 1 and not quiet_ok(zones_for(d.phone, None, "UTC"), d.time, hours)
    )
    last = max(d.time for d in deliveries)
    ideal = _ideal_end(sim, start, loaded.follow_up)
    return {
        "recipients": sim.recipients,
        "lines": sim.lines,
        "steps": loaded.steps,
        "delays": list(sim.delays),
        "cron_runs": runs,
        "runs_cut_off": cut,
        "sent_per_step": {str(k): v for k, v in sorted(by_step.items())},
        "duplicates": sum(n - 1 for n in per_key.values() if n > 1),
        "after_reply_or_opt_out": after_reply,
        "replies": len(model.replies()),
        "due_but_not_sent": left_due,
        "follow_ups_refused_4002": refused,
        "follow_ups_in_quiet_hours": outside,
        "max_first_touches_per_line_day": max(first_days.values()),
        "calendar_days": round((last - start) / 86_400, 3),
        "ideal_days": round((ideal - start) / 86_400, 3),
        "calendar_vs_ideal": round((last - start) / (ideal - start), 4),
        "wall_seconds": round(wall, 1),
    }


def _ideal_end(sim: Simulation, start: float, steps: Any) -> float:
    """First touches at full line capacity from the first moment (every line, one per gap,
    cap per day, days starting when quiet hours open), then the last recipient's follow-ups
    each sent the moment they fall due (the sandbox's delivery delay is not counted)."""
    per_day = sim.lines * LINE_CAP
    days = math.ceil(sim.recipients / per_day)
    on_last_day = sim.recipients - (days - 1) * per_day
    per_line_last = math.ceil(on_last_day / sim.lines)
    gap = GAP_MIN * 60 + gap_margin(GAP_MIN * 60)
    last_first_touch = start + (days - 1) * 86_400 + (per_line_last - 1) * gap
    return last_first_touch + sum(step.delay_s for step in steps)


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=5)
    parser.add_argument("--cron", action="store_true", help="one pass per run, rerun when due (not send --wait)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measured = simulate(Simulation(args.recipients, args.lines, wait=not args.cron), Path(tmp))
    return save("followups", {"machine": machine(), **measured})


if __name__ == "__main__":
    main()
