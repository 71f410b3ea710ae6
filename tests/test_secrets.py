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
