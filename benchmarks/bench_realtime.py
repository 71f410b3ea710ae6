"""Capacity in real time: `chertcast send` against `chertcast sandbox` in its own process, in
capacity mode with a second-scale gap, a per-line daily cap, several lines and 300 ms ± 200 ms
of latency (100 ms + 0-400 ms of jitter). More recipients than the day's capacity, so the run
sends the day's capacity and stops for the day, as a real campaign does.

Reports
- capacity used: first-touch sends / the day's capacity (lines × cap) — aim ≥ 0.98;
- wasted calls: 4002 answers / requests — aim < 1 %;
- pace: each line's ideal span ((cap - 1) × gap) / its real span (first to last first touch),
  the share of the clock the run kept; the price of planning each gap from the answer to the
  previous first touch (plus the margin) instead of from the request.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import machine, sandbox, save, write_campaign


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=5)
    parser.add_argument("--gap-s", type=float, default=3.0)
    parser.add_argument("--cap", type=int, default=25)
    args = parser.parse_args()
    capacity = args.lines * args.cap
    flags = (
        *("--lines", str(args.lines), "--line-gap-s", str(args.gap_s), "--line-daily-cap", str(args.cap)),
        *("--latency-ms", "100", "--jitter-ms", "400", "--seed", "9"),
    )
    extra = (
        f"[send]\nrate = 20\n[capacity]\nline_gap_minutes = {args.gap_s / 60}\nline_daily_cap = {args.cap}\n"
        "[quiet_hours]\nenabled = false\n"
    )
    with tempfile.TemporaryDirectory() as tmp, sandbox(*flags) as server:
        campaign = write_campaign(Path(tmp), capacity + 25, extra=extra, planned=True)
        began = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "chertcast", "send", str(campaign), "--yes", "--json"],
            capture_output=True,
            text=True,
            env=server.env(),
            timeout=900,
        )
        wall = time.perf_counter() - began
        ledger, stats = server.deliveries(), server.stats()
    summary = json.loads(result.stdout) if result.returncode in (0, 1) else {}
    by_line: dict[str, list[float]] = defaultdict(list)
    for delivery in ledger:
        by_line[delivery["phone_line_id"]].append(delivery["time"])
    spans = {line: max(times) - min(times) for line, times in by_line.items()}
    ideal_span = (args.cap - 1) * args.gap_s
    closest = min((b - a for times in by_line.values() for a, b in itertools.pairwise(sorted(times))), default=None)
    results = {
        "machine": machine(),
        "lines": args.lines,
        "gap_s": args.gap_s,
        "line_daily_cap": args.cap,
        "latency": "100 ms + uniform 0-400 ms (300 ms ± 200 ms)",
        "exit_code": result.returncode,
        "internal_error": "internal error" in result.stderr,
        "wall_seconds": round(wall, 1),
        "first_touch_sends": len(ledger),
        "day_capacity": capacity,
        "capacity_used": round(len(ledger) / capacity, 3),
        "requests": stats["requests"],
        "capacity_refusals_4002": stats["capacity_refusals"],
        "wasted_share": stats["capacity_refusals"] / max(1, stats["requests"]),
        "replays": stats["replays"],
        "failed_rows": summary.get("journal_counts", {}).get("failed"),
        "stop_kind": summary.get("stop_kind"),
        "closest_first_touches_on_a_line_s": round(closest, 3) if closest is not None else None,
        "pace": round(ideal_span / max(spans.values()), 3) if spans else None,
        "ideal_span_s": ideal_span,
        "slowest_line_span_s": round(max(spans.values()), 2) if spans else None,
    }
    return save("realtime", results)


if __name__ == "__main__":
    main()
