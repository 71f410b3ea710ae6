"""Secret hygiene: the token never appears in output, logs, the journal or reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chertcast.sandbox import Faults, SandboxConfig, SandboxModel, SandboxServer
from tests.helpers import run_process, write_campaign, write_contacts

TOKEN = "c0ffee5ec2e7c0ffee5ec2e7c0ffee5e"


def test_token_never_leaks(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 40, extra_rows="not-a-number,Broken\n")
    campaign = write_campaign(
        tmp_path, contacts, extra="[send]\nmax_attempts = 2\nrate = 500\n[api]\nauth = 'hmac'\ntenant = 'sandbox'\n"
    )
    faults = Faults(error_500=0.3, rate_limited=0.1, retry_after_s=1, drop_after=0.1, seed=9)
    model = SandboxModel(SandboxConfig(secret=TOKEN, faults=faults))
    outputs: list[str] = []
    with SandboxServer(model) as server:
        env = {
            **os.environ,
            "CHERT_BASE_URL": server.base_url,
            "CHERT_SIGNING_SECRET": TOKEN,
            "XDG_CACHE_HOME": str(tmp_path / "cache"),  # any crash file lands in the scanned tree
        }
        commands = [
            ["check", campaign],
            ["check", campaign, "--json"],
            ["preview", campaign, "--out", tmp_path / "preview.csv"],
            ["send", campaign, "--yes"],
            ["send", campaign, "--yes", "--json", "--retry-failed"],
            ["status", campaign],
            ["status", campaign, "--json"],
            ["report", campaign, "--out", tmp_path / "report.csv"],
            ["report", campaign, "--out", tmp_path / "report.xlsx"],
        ]
        for command in commands:
            result = run_process(*command, env=env)
            outputs += [result.stdout, result.stderr]
        wrong = run_process("send", campaign, "--yes", env={**env, "CHERT_SIGNING_SECRET": TOKEN[::-1]})
        outputs += [wrong.stdout, wrong.stderr]
    assert model.deliveries(), "the run must really have sent with the token"
    assert model.stats()["faults"]["error_500"] > 0
    assert any("retries" in text for text in outputs)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".journal.sqlite") for p in files)
    for needle in (TOKEN, TOKEN[::-1]):
        assert not any(needle in text for text in outputs)
        for path in files:
            assert needle.encode() not in path.read_bytes(), path


# A bug whose exception message and traceback carry the secret (as a careless f-string would).
CRASH_WITH_SECRET = """
import os, click
from chertcast.cli import friendly

@click.command()
@click.argument("value")
@friendly
def buggy(value):
    token = os.environ["CHERT_SIGNING_SECRET"]
    raise RuntimeError(f"could not use {token}")

buggy()
"""


def test_crash_file_and_line_never_hold_the_secret(tmp_path: Path) -> None:
    for debug in ("0", "1"):
        env = {**os.environ, "CHERT_SIGNING_SECRET": TOKEN, "XDG_CACHE_HOME": str(tmp_path), "CHERTCAST_DEBUG": debug}
        result = subprocess.run(
            [sys.executable, "-c", CRASH_WITH_SECRET, TOKEN], capture_output=True, text=True, env=env, timeout=60
        )
        assert result.returncode == 70
        assert "RuntimeError: could not use <CHERT_SIGNING_SECRET>" in result.stderr
        assert TOKEN not in result.stderr + result.stdout
    crash_files = list((tmp_path / "chertcast" / "crashes").glob("crash-*.txt"))
    assert len(crash_files) == 1  # debug printed instead of writing one
    text = crash_files[0].read_text()
    assert "could not use <CHERT_SIGNING_SECRET>" in text and "command: " in text  # argv held it too
    assert TOKEN not in text


def _env_without_secret(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CHERT_SIGNING_SECRET", "CHERT_SIGNING_SECRET_FILE")}
    return {**env, **extra}


def test_secret_file_for_unattended_runs_never_leaks(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 5)
    campaign = write_campaign(tmp_path, contacts)
    secret_file = tmp_path / "secret"
    secret_file.write_text(TOKEN + "\n")
    secret_file.chmod(0o644)
    model = SandboxModel(SandboxConfig(secret=TOKEN))
    with SandboxServer(model) as server:
        env = _env_without_secret(CHERT_BASE_URL=server.base_url, CHERT_SIGNING_SECRET_FILE=str(secret_file))
        open_file = run_process("send", campaign, "--yes", env=env)
        assert open_file.returncode == 2
        assert open_file.stderr.strip() == (
            f"chertcast: error: {secret_file}: the secret file is open to group or others (mode 0644); "
            f"run: chmod 600 {secret_file}"
        )
        assert not (tmp_path / "campaign.journal.sqlite").exists()
        secret_file.chmod(0o600)
        sent = run_process("send", campaign, "--yes", env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert len(model.deliveries()) == 5
    outputs = open_file.stdout + open_file.stderr + sent.stdout + sent.stderr
    assert TOKEN not in outputs
    for path in tmp_path.rglob("*.sqlite*"):
        assert TOKEN.encode() not in path.read_bytes()


def test_default_and_campaign_secret_files(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 2)
    home = tmp_path / "home"
    default = home / ".config" / "chertcast" / "secret"
    default.parent.mkdir(parents=True)
    default.write_text(TOKEN)
    default.chmod(0o600)
    model = SandboxModel(SandboxConfig(secret=TOKEN))
    with SandboxServer(model) as server:
        env = _env_without_secret(CHERT_BASE_URL=server.base_url, HOME=str(home))
        campaign = write_campaign(tmp_path, contacts)
        by_default = run_process("send", campaign, "--yes", env=env)
        assert by_default.returncode == 0, by_default.stdout + by_default.stderr
        named = tmp_path / "keys" / "chert.secret"
        named.parent.mkdir()
        named.write_text(TOKEN)
        named.chmod(0o640)
        campaign = write_campaign(tmp_path, contacts, extra='[api]\nsecret_file = "keys/chert.secret"\n')
        refused = run_process("send", campaign, "--yes", "--journal", tmp_path / "j2.sqlite", env=env)
        assert refused.returncode == 2 and f"run: chmod 600 {named}" in refused.stderr
        assert not (tmp_path / "j2.sqlite").exists()
    assert len(model.deliveries()) == 2
    assert TOKEN not in by_default.stdout + by_default.stderr + refused.stdout + refused.stderr


def test_send_without_a_secret_creates_no_journal(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 2)
    campaign = write_campaign(tmp_path, contacts)
    env = _env_without_secret(HOME=str(tmp_path), CHERT_BASE_URL="http://127.0.0.1:9/api/v1")
    result = run_process("send", campaign, "--yes", env=env)
    assert result.returncode == 2 and "CHERT_SIGNING_SECRET is not set" in result.stderr
    assert "~/.config/chertcast/secret (chmod 600)" in result.stderr
    assert not (tmp_path / "campaign.journal.sqlite").exists()


def test_a_secret_that_cannot_go_in_a_header_is_refused_in_one_line_without_showing_it(tmp_path: Path) -> None:
    """A line break in the secret reached httpx, whose error (with the secret in it) went to
    status, the journal and the report; a curly quote crashed send with exit 70 (new-user
    walkthrough). Both are refused before anything is written, naming where it came from."""
    campaign = write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 2))
    with SandboxServer() as server:
        for secret in ("LEAKME1234\nX", "\u201cLEAKME1234\u201d", "LEAK ME1234"):
            env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": secret}
            for args in (["--yes"], ["--to", "+14155550100"]):
                result = run_process("send", campaign, *args, env=env)
                assert result.returncode == 2, result.stdout + result.stderr
                assert result.stderr.startswith("chertcast: error: CHERT_SIGNING_SECRET: the signing secret holds ")
                assert result.stderr.count("\n") == 1 and "LEAKME" not in result.stdout + result.stderr
        assert server.model.stats()["requests"] == 0
    assert not (tmp_path / "campaign.journal.sqlite").exists()
