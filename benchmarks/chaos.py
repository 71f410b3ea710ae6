"""Chaos: SIGKILL a real `chertcast send` at random moments, restart it, finish, then audit.

Used by the long benchmark (bench_chaos.py) and by the short test in the suite.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chertcast.journal import Journal


def run_chaos(
    campaign: Path,
    journal: Path,
    env: dict[str, str],
    deliveries: Callable[[], list[dict[str, Any]]],
    *,
    kills: int,
    expected: int,
    seed: int,
    max_wait_s: float = 2.0,
) -> dict[str, Any]:
    rng = random.Random(seed)
    command = [sys.executable, "-m", "chertcast", "send", str(campaign), "--yes", "--journal", str(journal)]
    killed = 0
    finished_early = 0
    for _ in range(kills):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + rng.uniform(0.3, max_wait_s)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        else:
            finished_early += 1
        proc.wait()
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    return audit(journal, campaign_id(campaign), deliveries(), expected) | {
        "kills": killed,
        "runs_that_finished_before_their_kill": finished_early,
        "final_exit": final.returncode,
    }


def campaign_id(campaign: Path) -> str:
    from chertcast.campaign import load_campaign

    return load_campaign(campaign).id


def audit(journal_path: Path, campaign: str, ledger: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    per_phone = Counter(d["phone"] for d in ledger)
    by_key = {d["idempotency_key"]: d["message_id"] for d in ledger}
    with Journal(journal_path, campaign, readonly=True) as journal:
        rows = [r for r in journal.rows() if not r.key.startswith("skip:")]
    disagreements = sum(1 for r in rows if r.state != "sent" or by_key.get(r.key) != r.message_id)
    disagreements += len(set(by_key) - {r.key for r in rows})
    return {
        "expected": expected,
        "delivered_recipients": len(per_phone),
        "duplicates": sum(n - 1 for n in per_phone.values()),
        "lost": expected - len(per_phone),
        "journal_ledger_disagreements": disagreements,
    }
