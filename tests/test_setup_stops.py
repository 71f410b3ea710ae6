"""A broken setup stops the run within its first few requests, at any campaign size (issue 11, finding 5)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from chertcast.campaign import load_campaign
from chertcast.client import Outcome
from chertcast.decide import SetupBreaker
from chertcast.errors import ConfigError
from chertcast.sandbox import DEFAULT_SECRET, SandboxServer
from tests.helpers import run_cli, run_process, write_campaign, write_contacts


def env_with(base_url: str) -> dict[str, str]:
    return {**os.environ, "CHERT_BASE_URL": base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}


def small_campaign(tmp_path: Path, rows: int, extra: str = "") -> Path:
    contacts = write_contacts(tmp_path / "contacts.csv", rows)
    return write_campaign(tmp_path, contacts, extra=extra)


def journal_counts(campaign: Path) -> dict[str, int]:
    data = json.loads(run_cli("status", campaign, "--json").output)
    return {state: data[state] for state in ("pending", "sending", "sent", "failed")}


def test_wrong_base_url_path_stops_a_small_campaign_then_the_right_one_sends_all(tmp_path: Path) -> None:
    campaign = small_campaign(tmp_path, 12, extra="[send]\nconcurrency = 1\n")
    with SandboxServer() as server:
        wrong = run_process("send", campaign, "--yes", env=env_with(server.root_url + "/wrong/v1"))
        requests = server.model.stats()["requests"]
        assert wrong.returncode == 3, wrong.stdout + wrong.stderr
        assert "Stopped: the API base URL answered 3 times with HTTP 404 Not Found" in wrong.stdout
        assert f"{server.root_url}/wrong/v1/send is not Chert's /send" in wrong.stdout
        assert f"12 rows remain. To resume, run: chertcast send {campaign} --yes" in wrong.stdout
        assert journal_counts(campaign) == {"pending": 12, "sending": 0, "sent": 0, "failed": 0}
        status = run_cli("status", campaign).output
        assert "× HTTP 404: HTTP 404 Not Found" in status and "network" not in status
        right = run_process("send", campaign, "--yes", env=env_with(server.base_url))
        assert right.returncode == 0, right.stdout + right.stderr
        assert "Nothing left to send" not in right.stdout
        assert "This run: sent 12" in right.stdout
        assert len(server.model.deliveries()) == 12
    assert requests == 0  # the sandbox's /api/v1 was never reached by the wrong run


def test_unresolvable_host_stops_within_seconds(tmp_path: Path) -> None:
    campaign = small_campaign(tmp_path, 30, extra="[send]\nconcurrency = 1\n")
    started = time.monotonic()
    result = run_process("send", campaign, "--yes", env=env_with("https://nonexistent.invalid/api/v1"), timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Stopped: no connection could be made to the API 3 times and nothing has been sent" in result.stdout
    assert "ConnectError connecting to nonexistent.invalid" in result.stdout
    assert "30 rows remain. To resume, run:" in result.stdout
    assert elapsed < 20, f"took {elapsed:.1f}s"
    assert journal_counts(campaign) == {"pending": 30, "sending": 0, "sent": 0, "failed": 0}


def test_unresolvable_host_during_line_discovery_names_the_host(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 3)
    campaign = write_campaign(tmp_path, contacts, extra="[quiet_hours]\nenabled = false\n", planned=True)
    result = run_process("send", campaign, "--yes", env=env_with("https://nonexistent.invalid/api/v1"), timeout=60)
    assert result.returncode == 3
    assert "cannot list sender lines (GET https://nonexistent.invalid/api/v1/phone-numbers): ConnectError" in (
        result.stderr
    )
    assert "connecting to nonexistent.invalid" in result.stderr
    assert f"Nothing was sent; fix it, then resume with: chertcast send {campaign} --yes" in result.stderr


def test_wrong_secret_during_line_discovery_says_what_it_means(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 3)
    campaign = write_campaign(tmp_path, contacts, extra="[quiet_hours]\nenabled = false\n", planned=True)
    with SandboxServer() as server:
        env = {**env_with(server.base_url), "CHERT_SIGNING_SECRET": "x" * 32}
        result = run_process("send", campaign, "--yes", env=env)
    assert result.returncode == 3
    assert "answered HTTP 401: 2004: authentication failed: the signing secret" in result.stderr


def test_unknown_campaign_wide_attachment_stops_at_the_first_answer(tmp_path: Path) -> None:
    campaign = small_campaign(tmp_path, 40, extra='[send]\nattachments = ["att_does_not_exist"]\n')
    with SandboxServer() as server:
        result = run_process("send", campaign, "--yes", env=env_with(server.base_url))
        requests = server.model.stats()["requests"]
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Stopped: 5001: the campaign's attachment 'att_does_not_exist' ([send] attachments) is unknown" in (
        result.stdout
    )
    assert requests <= 8  # at most the first wave in flight (concurrency 8), never the whole sheet
    assert journal_counts(campaign)["failed"] == 0 and journal_counts(campaign)["pending"] == 40


@pytest.mark.parametrize("spaced", [" {url}", "{url} ", "  {url}/  "])
def test_base_url_with_surrounding_spaces_is_trimmed_at_load(tmp_path: Path, spaced: str) -> None:
    with SandboxServer() as server:
        campaign = small_campaign(tmp_path, 3, extra=f'[api]\nbase_url = "{spaced.format(url=server.base_url)}"\n')
        assert load_campaign(campaign).api.base_url == server.base_url
        env = {k: v for k, v in env_with(server.base_url).items() if k != "CHERT_BASE_URL"}
        from_file = run_process("send", campaign, "--yes", env=env)
        assert from_file.returncode == 0, from_file.stdout + from_file.stderr
        (tmp_path / "campaign.journal.sqlite").unlink()
        from_env = run_process("send", campaign, "--yes", env=env_with(spaced.format(url=server.base_url)))
        assert from_env.returncode == 0, from_env.stdout + from_env.stderr
        assert len(server.model.deliveries()) == 3  # the second run replayed the same keys


def test_base_url_with_an_inner_space_is_refused_at_load(tmp_path: Path) -> None:
    campaign = small_campaign(tmp_path, 3, extra='[api]\nbase_url = "https://console.trychert.com/api /v1"\n')
    with pytest.raises(ConfigError, match=r"api.base_url: .*contains a space"):
        load_campaign(campaign)


def _http(status: int, code: int | None = None) -> Outcome:
    return Outcome(kind="error", http_status=status, code=code, message=f"HTTP {status}")


def test_setup_breaker_needs_identical_answers_before_any_success() -> None:
    base = "https://x.example/api/v1"
    breaker = SetupBreaker()
    assert breaker.observe(_http(404), base) is None
    assert breaker.observe(_http(405), base) is None  # different answer: counting starts again
    assert breaker.observe(_http(405), base) is None
    assert breaker.observe(_http(400, code=1003), base) is None  # a row's own problem is no setup sign
    assert breaker.observe(_http(405), base) is not None
    proven = SetupBreaker()
    proven.success()
    assert all(proven.observe(_http(404), base) is None for _ in range(10))
    chert = SetupBreaker()
    assert all(chert.observe(_http(404, code=2011), base) is None for _ in range(10))  # Chert's own 404
