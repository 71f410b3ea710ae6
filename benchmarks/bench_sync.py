"""Sync: requests per message and wall time against the rate floor, first sync and resync.

10,000 messages are sent to a sandbox in its own process (`chertcast sandbox`, seeded outcomes:
2 % failed, 90 % of the delivered read, 30 % reply), then `chertcast sync` runs twice:

- first sync: every message needs its status (Chert documents no delivery event, SPEC §9),
  plus the reply pages (200 events a page). Aim: <= 1.2 requests per message.
- resync: ~90 % of the messages are final (read or failed); only the others are looked up,
  and the reply log resumes from its cursor. Aim: <= 0.3 requests per message.

Wall time is compared with the floor the campaign's rate sets (messages looked up / rate);
aim <= 1.1x. Requests are counted by the sandbox (its own counters), not by chertcast.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine, sandbox, save, write_campaign

OUTCOMES = (
    *("--outcome-seed", "1", "--fail-share", "0.02", "--read-share", "0.9", "--reply-share", "0.3"),
    *("--opt-out-share", "0.1", "--contains-word-share", "0.05", "--outcome-delay-s", "1", "--latency-ms", "2"),
)


def lookups(server: Any) -> int:
    return int(server.stats()["lookups"])


def timed_sync(campaign: Path, env: dict[str, str], journal: Path, rate: float, server: Any) -> dict[str, Any]:
    before = lookups(server)
    started = time.monotonic()
    command = [sys.executable, "-m", "chertcast", "sync", str(campaign), "--journal", str(journal), "--json"]
    command += ["--rate", str(rate)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    wall = time.monotonic() - started
    data = json.loads(done.stdout)
    return {"wall_s": round(wall, 2), "sync_s": data["seconds"], "server_requests": lookups(server) - before, **data}


def measure(count: int, rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, sandbox(*OUTCOMES) as server:
        extra = 'opt_out_list = "optouts.csv"\n[send]\nrate = 5000\nburst = 20\nconcurrency = 16\n'
        campaign = write_campaign(Path(tmp), count, extra=extra)
        journal = Path(tmp) / "j.sqlite"
        env = server.env()
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "chertcast", "send", str(campaign), "--yes", "--journal", str(journal)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        send_s = time.monotonic() - started
        time.sleep(4)  # every outcome (delivery within 1 s, reads and replies within 2 s more) has happened
        campaign.write_text(campaign.read_text().replace("rate = 5000", f"rate = {rate}"))
        first = timed_sync(campaign, env, journal, rate, server)
        second = timed_sync(campaign, env, journal, rate, server)
    rows = {}
    for name, run in (("first_sync", first), ("resync", second)):
        floor = run["status_requests"] / rate
        rows[name] = {
            "messages": count,
            "status_lookups": run["status_requests"],
            "event_pages": run["event_pages"],
            "server_requests": run["server_requests"],
            "requests_per_message": round(run["server_requests"] / count, 4),
            "sync_seconds": run["sync_s"],
            "process_wall_seconds": run["wall_s"],
            "rate_floor_seconds": round(floor, 2),
            "sync_over_floor": round(run["sync_s"] / floor, 3) if floor else None,
            "replies_new": run["replies_new"],
            "opt_outs_new": run["opt_outs_new"],
            "needs_review_new": run["needs_review_new"],
            "final_share_after": round((run["read"] + run["failed_after_send"]) / count, 4),
            "retries": run["retries"],
        }
    return {"send_seconds": round(send_s, 2), "rate": rate, **rows}


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2,000 messages instead of 10,000")
    parser.add_argument("--rate", type=float, default=200.0, help="campaign rate for the sync (requests/s)")
    args = parser.parse_args()
    count = 2_000 if args.quick else 10_000
    results = {
        "machine": machine(),
        "aims": {"first_sync_requests_per_message": 1.2, "resync_requests_per_message": 0.3, "over_floor": 1.1},
        **measure(count, args.rate),
    }
    return save("sync", results)


if __name__ == "__main__":
    main()
