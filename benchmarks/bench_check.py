"""Scale: `check` and `send --dry-run` on a large sheet (time, peak RSS) against the bare
phonenumbers loop, and a large journal's time from `send` to its first request."""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import machine, sandbox, save, write_campaign

BARE_LOOP = """
import csv, sys, time, phonenumbers
with open(sys.argv[1], newline="", encoding="utf-8") as handle:
    numbers = [row[0] for row in csv.reader(handle)][1:]
start = time.perf_counter()
valid = 0
for raw in numbers:
    valid += phonenumbers.is_valid_number(phonenumbers.parse(raw, "US"))
print(time.perf_counter() - start, valid)
"""


def measure(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall time and peak memory of a command and its forked workers, sampled every 50 ms.

    Memory is the sum of PSS (proportional set size): forked workers share the parent's
    pages copy-on-write, and summing their RSS would count those pages two or three times.
    """
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out_file, stderr=err_file, text=True, env=env)
        parent = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(p.memory_full_info().pss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    return {
        "seconds": round(elapsed, 2),
        "peak_rss_mb": round(peak / 2**20, 1),
        "exit": proc.returncode,
        "stdout": out,
        "stderr": err[-400:],
    }


def check_scale(rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        campaign = write_campaign(Path(tmp), rows, duplicate_share=0.05)
        contacts = Path(tmp) / "contacts.csv"
        bare_run = subprocess.run([sys.executable, "-c", BARE_LOOP, str(contacts)], capture_output=True, text=True)
        bare_s = float(bare_run.stdout.split()[0])
        check = measure([sys.executable, "-m", "chertcast", "check", str(campaign), "--json"])
        dry = measure([sys.executable, "-m", "chertcast", "send", str(campaign), "--dry-run"])
        summary = json.loads(check.pop("stdout")) if check["exit"] in (0, 1) else {}
    return {
        "rows": rows,
        "distinct_numbers_share": 0.95,
        "bare_phonenumbers_loop_s": round(bare_s, 2),
        "bare_rows_per_s": round(rows / bare_s),
        "check_s": check["seconds"],
        "check_rows_per_s": round(rows / check["seconds"]),
        "check_peak_rss_mb": check["peak_rss_mb"],
        "check_over_bare_time": round(check["seconds"] / bare_s, 2),
        "check_sendable": summary.get("sendable"),
        "dry_run_s": dry["seconds"],
        "dry_run_peak_rss_mb": dry["peak_rss_mb"],
    }


def journal_first_request(rows: int, already_sent: float = 0.9) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, sandbox() as server:
        campaign = write_campaign(Path(tmp), rows)
        journal = Path(tmp) / "j.sqlite"
        command = [sys.executable, "-m", "chertcast", "send", str(campaign), "--journal", str(journal)]
        command += ["--limit", "1", "--yes"]
        prep = measure(command, env=server.env())
        with sqlite3.connect(journal) as db:  # the fixture: mark the first 90 % as sent
            db.execute("UPDATE recipients SET state = 'sent' WHERE row <= ?", (int(rows * already_sent) + 1,))
        resumed = measure(command, env=server.env())
        deliveries = len(server.deliveries())
    return {
        "journal_rows": rows,
        "already_sent": int(rows * already_sent),
        "first_run_with_sync_s": prep["seconds"],
        "resume_to_first_request_s": resumed["seconds"],
        "resume_peak_rss_mb": resumed["peak_rss_mb"],
        "deliveries": deliveries,
    }


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    results = {"machine": machine(), "check": check_scale(args.rows), "journal": journal_first_request(args.rows)}
    return save("check", results)


if __name__ == "__main__":
    main()
