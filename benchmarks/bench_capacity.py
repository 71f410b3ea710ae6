"""Capacity on a simulated clock: a multi-day campaign against the capacity-mode sandbox,
rerun like cron each time chertcast stops for the day.

Reports capacity used per full day (first-touch sends / (lines × 30); aim 1.00) and wasted
calls (4002 answers / requests; aim < 1 %)."""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import chertcast
from benchmarks.common import machine, save
from chertcast import Endpoint, Secret, runner
from chertcast.capacity import CapacityRules
from chertcast.pacing import FakeClock
from chertcast.sandbox import DEFAULT_SECRET, CapacityLimits, SandboxConfig, SandboxModel, SandboxServer

ZONE = "America/New_York"
EASTERN = ("212", "646", "917", "718", "617", "305", "404", "202")


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=10)
    parser.add_argument("--recipients", type=int, default=2000)
    args = parser.parse_args()
    lines = tuple(f"pl_{i}" for i in range(args.lines))
    rules = CapacityRules(window_start=dt.time(9), window_end=dt.time(18), timezone=ZONE)
    start = dt.datetime(2026, 11, 30, 8, 0, tzinfo=ZoneInfo(ZONE)).timestamp()
    clock = FakeClock(start)
    model = SandboxModel(
        SandboxConfig(
            lines=lines,
            capacity=CapacityLimits(
                rules.line_gap_s,
                rules.line_daily_cap,
                rules.project_daily_cap,
                rules.window_start,
                rules.window_end,
                rules.timezone,
            ),
            clock=clock.wall,
        )
    )
    began = time.perf_counter()
    runs = 0
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(model) as server:
        contacts = Path(tmp) / "contacts.csv"
        contacts.write_text(
            "phone,name\n"
            + "".join(
                f"({EASTERN[i % 8]}) {555 + i // 80_000}-{(i // 8) % 10_000:04d},L{i}\n" for i in range(args.recipients)
            )
        )
        listed = ", ".join(f'"{line}"' for line in lines)
        campaign = Path(tmp) / "campaign.toml"
        campaign.write_text(
            f'id = "capacity-bench"\ncontacts = "contacts.csv"\nbody = "Hi {{{{ name }}}}"\n[send]\nrate = 20\n'
            f'[capacity]\nlines = [{listed}]\nwindow_start = "09:00"\nwindow_end = "18:00"\ntimezone = "{ZONE}"\n'
        )
        endpoint = Endpoint(server.base_url, Secret(DEFAULT_SECRET))
        while True:
            options = runner.SendOptions(journal=Path(tmp) / "j.sqlite", handle_signals=False)
            result = chertcast.send(campaign, endpoint=endpoint, options=options, clock=clock).result
            assert result is not None
            runs += 1
            if result.run is None or result.run.stop_kind != "capacity" or result.run.next_possible_at is None:
                break
            clock.time = result.run.next_possible_at  # cron, on the simulated clock
    per_day = Counter(dt.datetime.fromtimestamp(d.time, ZoneInfo(ZONE)).date() for d in model.deliveries())
    days = sorted(per_day)
    full_days = days[:-1]  # the last day sends what is left
    used = [per_day[day] / (len(lines) * rules.line_daily_cap) for day in full_days]
    stats = model.stats()
    results = {
        "machine": machine(),
        "lines": len(lines),
        "recipients": args.recipients,
        "days": len(days),
        "runs": runs,
        "sends_per_day": [per_day[day] for day in days],
        "capacity_used_full_days": round(min(used), 3) if used else None,
        "capacity_refusals_4002": stats["capacity_refusals"],
        "requests": stats["requests"],
        "wasted_share": stats["capacity_refusals"] / stats["requests"],
        "delivered": len({d.phone for d in model.deliveries()}),
        "wall_seconds": round(time.perf_counter() - began, 1),
    }
    return save("capacity", results)


if __name__ == "__main__":
    main()
