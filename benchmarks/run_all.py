"""Run every benchmark, save benchmarks/results/*.json and print one table.

.venv/bin/python -m benchmarks.run_all            # full sizes (1M-row sheet: ~10-20 min on 2 cores)
.venv/bin/python -m benchmarks.run_all --quick    # smaller sizes, a few minutes
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def run(module: str, *args: str) -> dict[str, Any]:
    subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args], check=True, stdout=subprocess.DEVNULL)
    name = {
        "bench_send": "send",
        "bench_check": "check",
        "bench_chaos": "chaos",
        "bench_capacity": "capacity",
        "bench_realtime": "realtime",
        "bench_rerun": "rerun",
        "bench_pages": "pages",
        "bench_sync": "sync",
    }[module]
    return dict(json.loads((RESULTS / f"{name}.json").read_text()))


def table(results: dict[str, Any]) -> list[str]:
    lines = [f"machine: {results['send']['machine']['cores']} cores, Python {results['send']['machine']['python']}", ""]
    lines.append("| benchmark | measured | baseline / aim | ratio |")
    lines.append("|---|---|---|---|")
    for row in results["send"]["pacing"]:
        lines.append(
            f"| pacing {row['rate']:g}/s, 20 ms latency | {row['achieved_per_s']}/s, max {row['max_in_any_1s_window']} "
            f"in any 1 s (server clock) | {row['rate']:g}/s, rate+burst {row['limit_rate_plus_burst']:g} | "
            f"{row['achieved_over_configured']} |"
        )
    for row in results["send"]["ceiling"]:
        lines.append(
            f"| ceiling, concurrency {row['concurrency']} | chertcast {row['chertcast_per_s']}/s | "
            f"bare httpx {row['bare_httpx_per_s']}/s (aim ≥ 0.9) | {row['ratio']} |"
        )
    faults = results["send"]["under_faults"]
    lines.append(
        f"| {faults['messages']} msgs at {faults['rate']:g}/s under faults | {faults['elapsed_s']} s, "
        f"{faults['duplicates']} duplicates | ideal {faults['ideal_s']} s | {faults['elapsed_over_ideal']} |"
    )
    check = results["check"]["check"]
    lines.append(
        f"| check, {check['rows']:,} rows | {check['check_s']} s ({check['check_rows_per_s']:,} rows/s), "
        f"peak PSS {check['check_peak_rss_mb']} MB | bare phonenumbers loop {check['bare_phonenumbers_loop_s']} s; "
        f"memory aim ≤ 1,536 MB | {check['check_over_bare_time']} (time) |"
    )
    lines.append(
        f"| send --dry-run, {check['rows']:,} rows | {check['dry_run_s']} s, "
        f"peak PSS {check['dry_run_peak_rss_mb']} MB | | |"
    )
    journal = results["check"]["journal"]
    lines.append(
        f"| resume: journal of {journal['journal_rows']:,} rows, {journal['already_sent']:,} sent | "
        f"{journal['resume_to_first_request_s']} s from `send` to its first request (whole command, --limit 1) | | |"
    )
    if "rerun" in results:
        rerun = results["rerun"]["rerun"]
        lines.append(
            f"| rerun to first request, journal of {rerun['journal_rows']:,} rows, {rerun['already_sent']:,} sent | "
            f"unchanged {min(r['first_request_s'] for r in rerun['unchanged'])} s ; one cell changed "
            f"{rerun['one_row_changed']['first_request_s']} s | full check {rerun['full_check']['first_request_s']} s; "
            f"aim unchanged ≤ {rerun['aim_unchanged_s']:g} s | {rerun['full_over_unchanged']}× ; "
            f"{rerun['full_over_one_row_changed']}× |"
        )
    chaos = results["chaos"]
    lines.append(
        f"| chaos: {chaos['rows']:,} rows, {chaos['kills']} SIGKILLs, fault mix | duplicates {chaos['duplicates']}, "
        f"lost {chaos['lost']}, journal/ledger disagreements {chaos['journal_ledger_disagreements']} | all 0 | |"
    )
    if "capacity" in results:
        cap = results["capacity"]
        lines.append(
            f"| capacity: {cap['lines']} lines × {cap['days']} simulated days | capacity used per full day "
            f"{cap['capacity_used_full_days']} ; wasted 4002 calls {cap['wasted_share']:.2%} | 1.00 ; < 1 % | |"
        )
    if "realtime" in results:
        real = results["realtime"]
        lines.append(
            f"| capacity in real time: {real['lines']} lines, {real['gap_s']:g} s gap, cap {real['line_daily_cap']}, "
            f"300±200 ms latency | capacity used {real['capacity_used']} ; wasted 4002 calls "
            f"{real['wasted_share']:.2%} ; pace {real['pace']} ; exit {real['exit_code']}, "
            f"{real['failed_rows']} failed, {real['replays']} replays | ≥ 0.98 ; < 1 % | |"
        )
    if "pages" in results:
        lines.append(pages_row(results["pages"]["pages"]))
    if "sync" in results:
        for name, label in (("first_sync", "first sync"), ("resync", "resync, ~90 % final")):
            run = results["sync"][name]
            lines.append(
                f"| sync: {label}, {run['messages']:,} sent, rate {results['sync']['rate']:g}/s | "
                f"{run['requests_per_message']} requests/message; {run['sync_seconds']} s vs floor "
                f"{run['rate_floor_seconds']} s | ≤ {1.2 if name == 'first_sync' else 0.3} ; ≤ 1.1× | "
                f"{run['sync_over_floor']} |"
            )
    return lines


def pages_row(pages: dict[str, Any]) -> str:
    paint = pages["preview_paint"]
    return (
        f"| pages: {pages['rows']:,}-row sheet | preview page {pages['preview_page_mb']} MB, first contentful paint "
        f"{paint['first_contentful_paint_s']} s (first cards {paint['first_card_s']} s); `preview --html` "
        f"{pages['preview_html_s']} s vs `check` {pages['check_s']} s; report page {pages['report_page_mb']} MB | "
        f"≤ 25 MB, ≤ 2 s; ≤ 1.2× check | {pages['preview_html_over_check']} |"
    )


def main() -> None:
    quick = "--quick" in sys.argv
    results = {
        "send": run("bench_send", *(["--quick"] if quick else [])),
        "check": run("bench_check", *(["--rows", "100000"] if quick else [])),
        "chaos": run("bench_chaos", *(["--rows", "1000", "--kills", "5"] if quick else [])),
        "rerun": run("bench_rerun", *(["--rows", "100000"] if quick else [])),
    }
    if (Path(__file__).parent / "bench_capacity.py").exists():
        results["capacity"] = run("bench_capacity")
    results["realtime"] = run("bench_realtime", *(["--gap-s", "1.5", "--cap", "12"] if quick else []))
    results["pages"] = run("bench_pages", *(["--rows", "20000"] if quick else []))
    results["sync"] = run("bench_sync", *(["--quick"] if quick else []))
    (RESULTS / "all.json").write_text(json.dumps(results, indent=2))
    text = "\n".join(table(results))
    (RESULTS / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
