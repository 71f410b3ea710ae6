"""Chaos, short version: SIGKILL a real `chertcast send` mid-run several times, under the
fault mix, then finish: no duplicates, nobody lost, journal and ledger agree row for row —
also when drops outlast max_attempts and the template changes before the last run."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from benchmarks.chaos import run_chaos

from chertcast.sandbox import DEFAULT_SECRET, Faults, SandboxConfig, SandboxModel, SandboxServer
from tests.helpers import assert_journal_matches_ledger, run_process, write_campaign, write_contacts

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
    assert_journal_matches_ledger(tmp_path / "j.sqlite", "test-campaign", model.deliveries(), settled=True)


def test_chaos_drops_outlasting_max_attempts_then_a_changed_template(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 200)
    extra = "[send]\nrate = 300\nburst = 20\nconcurrency = 16\nmax_attempts = 2\n"
    campaign = write_campaign(tmp_path, contacts, extra=extra)
    journal = tmp_path / "j.sqlite"
    # error_500 = 0.3 with max_attempts = 2: about 18 of 200 rows fail outright (the chance that none
    # does is below 1e-8), so the final run always has rows to send with the changed template.
    model = SandboxModel(SandboxConfig(faults=Faults(drop_after=0.3, error_500=0.3, latency_ms=5, seed=5)))
    with SandboxServer(model) as server:
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}

        def ledger() -> list[dict[str, Any]]:
            return [d.as_json() for d in model.deliveries()]

        outcome = run_chaos(campaign, journal, env, ledger, kills=2, expected=200, seed=4, max_wait_s=1.0)
        assert outcome["final_exit"] == 1 and outcome["duplicates"] == 0  # some outcomes unknown, none lied about
        assert_journal_matches_ledger(journal, "test-campaign", model.deliveries(), settled=False)
        campaign.write_text(campaign.read_text().replace("Hi {{", "Hello {{"))
        model.config.faults.drop_after = model.config.faults.error_500 = 0.0
        before = {d.phone: d.body for d in model.deliveries()}
        with sqlite3.connect(journal) as db:  # requests that may have reached Chert are replayed as they were
            replayed = dict(
                db.execute(
                    "SELECT phone, json_extract(sent_payload, '$.message') FROM recipients "
                    "WHERE maybe_delivered = 1 AND sent_payload IS NOT NULL"
                ).fetchall()
            )
        final = run_process(
            "send", campaign, "--yes", "--journal", journal, "--allow-changes", "--retry-failed", env=env
        )
        assert final.returncode == 0, final.stdout + final.stderr
        deliveries = model.deliveries()
    assert_journal_matches_ledger(journal, "test-campaign", deliveries, settled=True)
    assert len({d.phone for d in deliveries}) == len(deliveries) == 200
    # Whoever got the first text keeps it (nobody is messaged again), a request that may have reached
    # Chert is replayed byte for byte under its key, and everyone else gets the new text.
    assert len(before) < 200
    for d in deliveries:
        expected = before.get(d.phone) or replayed.get(d.phone)
        assert d.body == expected if expected else d.body.startswith("Hello "), d
    assert any(d.body.startswith("Hello ") for d in deliveries)
