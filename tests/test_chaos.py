"""Chaos, short version: SIGKILL a real `chertcast send` mid-run several times, under the
fault mix, then finish: no duplicates, nobody lost, journal and ledger agree row for row."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks.chaos import run_chaos

from chertcast.sandbox import DEFAULT_SECRET, Faults, SandboxConfig, SandboxModel, SandboxServer
from tests.helpers import write_campaign, write_contacts

FAULTS = Faults(error_500=0.05, rate_limited=0.05, retry_after_s=1, drop_after=0.02, latency_ms=5, seed=21)


def test_chaos_kills_then_resume(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 400)
    extra = "[send]\nrate = 300\nburst = 20\nconcurrency = 16\nmax_attempts = 20\n"
    campaign = write_campaign(tmp_path, contacts, extra=extra)
    model = SandboxModel(SandboxConfig(faults=FAULTS))
    with SandboxServer(model) as server:
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}

        def ledger() -> list[dict[str, Any]]:
            return [d.as_json() for d in model.deliveries()]

        outcome = run_chaos(campaign, tmp_path / "j.sqlite", env, ledger, kills=4, expected=400, seed=3, max_wait_s=1.5)
    assert outcome["final_exit"] == 0
    assert outcome["kills"] >= 1
    assert outcome["duplicates"] == 0
    assert outcome["lost"] == 0
    assert outcome["journal_ledger_disagreements"] == 0
