"""Reruns: time from `send` to its first request on a large journal (90 % already sent), for a
full check (the stored check dropped: what every rerun cost before, and what any changed
template, list or campaign key costs now), an unchanged rerun, and a rerun after one cell of
the sheet changed — all in the same run, against `chertcast sandbox` in its own process.

First request = the sandbox's clock when it receives the run's first /send, minus the wall
clock when the command started; "whole command" includes that one request and the exit.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ExternalSandbox, machine, sandbox, save, write_campaign


def rerun(command: list[str], server: ExternalSandbox) -> dict[str, Any]:
    """One `send --limit 1`: seconds to its first request and to its end, and how it checked."""
    before = len(server.deliveries())
    started = time.time()
    done = subprocess.run(command, env=server.env(), capture_output=True, text=True)
    ended = time.time()
    deliveries = server.deliveries()
    if done.returncode != 0 or len(deliveries) != before + 1:
        raise RuntimeError(f"rerun failed ({done.returncode}): {done.stderr[-400:]}")
    first = min(d["time"] for d in deliveries[before:])
    if "check is reused" in done.stdout:
        how = "reused"
    elif "only the sheet changed" in done.stdout:
        how = "changed rows only"
    else:
        how = "full"
    return {"first_request_s": round(first - started, 2), "whole_command_s": round(ended - started, 2), "check": how}


def drop_stored_check(journal: Path) -> None:
    with sqlite3.connect(journal) as db:
        db.execute("DELETE FROM input_fingerprint")


def edit_one_cell(contacts: Path, row: int) -> None:
    """Change the first name on one sheet row (header = row 1)."""
    lines = contacts.read_text(encoding="utf-8").split("\n")
    phone, name, city = lines[row - 1].split(",")
    lines[row - 1] = f"{phone},{name}x,{city}"
    contacts.write_text("\n".join(lines), encoding="utf-8")


def measure(rows: int, already_sent: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, sandbox() as server:
        campaign = write_campaign(Path(tmp), rows)
        journal = Path(tmp) / "j.sqlite"
        command = [sys.executable, "-m", "chertcast", "send", str(campaign), "--journal", str(journal)]
        command += ["--limit", "1", "--yes"]
        started = time.perf_counter()
        first_run = rerun(command, server)
        first_run["seconds_to_build_fixture"] = round(time.perf_counter() - started, 1)
        sent = int(rows * already_sent)
        with sqlite3.connect(journal) as db:  # the fixture: most rows already sent
            db.execute("UPDATE recipients SET state = 'sent' WHERE row <= ?", (sent + 1,))
        drop_stored_check(journal)
        full = rerun(command, server)  # the check every rerun ran before
        unchanged = [rerun(command, server) for _ in range(2)]
        edit_one_cell(Path(tmp) / "contacts.csv", rows - rows // 20)  # a row not sent yet
        one_row = rerun(command, server)
        after = rerun(command, server)
    best = min(unchanged, key=lambda r: r["first_request_s"])
    return {
        "journal_rows": rows,
        "already_sent": sent,
        "first_run": first_run,
        "full_check": full,
        "unchanged": unchanged,
        "one_row_changed": one_row,
        "unchanged_after_the_change": after,
        "full_over_unchanged": round(full["first_request_s"] / best["first_request_s"], 1),
        "full_over_one_row_changed": round(full["first_request_s"] / one_row["first_request_s"], 2),
        "aim_unchanged_s": 3.0,
    }


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--already-sent", type=float, default=0.9)
    args = parser.parse_args()
    return save("rerun", {"machine": machine(), "rerun": measure(args.rows, args.already_sent)})


if __name__ == "__main__":
    main()
