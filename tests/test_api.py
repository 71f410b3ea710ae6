"""The library API: every CLI verb is one call whose result's as_json() is what --json prints;
the endpoint is passed in (the environment untouched), sync and async alike."""

from __future__ import annotations

import ast
import json
import os
from importlib.metadata import version
from pathlib import Path

import anyio
import pytest

import chertcast
from chertcast import ConfigError, Endpoint, Secret, SendOptions
from chertcast.sandbox import DEFAULT_SECRET, SandboxModel, SandboxServer, sandbox_transport
from tests.helpers import run_process, write_campaign, write_contacts

SRC = Path(chertcast.__file__).parent


def test_public_names_and_version() -> None:
    assert set(chertcast.__all__) >= {"check", "send", "asend", "status", "report", "Endpoint", "__version__"}
    for name in chertcast.__all__:
        assert hasattr(chertcast, name), name
    assert chertcast.__version__ == version("chertcast")
    assert '__version__ = "' not in (SRC / "__init__.py").read_text()  # one source: the metadata


def test_check_result_is_what_check_json_prints(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 5, extra_rows="not a phone,Nobody\n")
    campaign = write_campaign(tmp_path, contacts)
    result = chertcast.check(campaign)
    assert result.exit_code == 1 and len(result.plan.sendable) == 5
    printed = run_process("check", campaign, "--json")
    assert printed.returncode == result.exit_code
    assert json.loads(printed.stdout) == result.as_json()


def test_send_status_report_with_an_endpoint_and_no_environment(tmp_path: Path) -> None:
    before = dict(os.environ)
    campaign = write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 12))
    model = SandboxModel()
    endpoint = Endpoint("http://sandbox.invalid/api/v1", Secret(DEFAULT_SECRET), transport=sandbox_transport(model))
    seen: list[int] = []

    def on_plan(prepared: chertcast.api.Prepared) -> bool:
        seen.append(len(prepared.to_send))
        return True

    outcome = chertcast.send(campaign, endpoint=endpoint, options=SendOptions(handle_signals=False), on_plan=on_plan)
    assert seen == [12] and outcome.exit_code == 0 and not outcome.declined
    assert len(model.deliveries()) == 12
    data = outcome.as_json()
    assert data["sent"] == 12 and json.dumps(data)  # serialisable, as --json prints it
    assert dict(os.environ) == before  # nothing read from or written to the environment

    again = chertcast.send(campaign, endpoint=endpoint, options=SendOptions(handle_signals=False))
    assert again.result is None and again.exit_code == 0 and len(model.deliveries()) == 12  # exactly once

    status = chertcast.status(campaign)
    assert status.as_json()["sent"] == 12 and status.as_json()["total"] == 12
    printed = run_process("status", campaign, "--json")
    assert json.loads(printed.stdout) == status.as_json()

    report = chertcast.report(campaign, tmp_path / "report.csv")
    assert report.rows == 12 and report.as_json() == {"out": str(tmp_path / "report.csv"), "rows": 12}
    assert (tmp_path / "report.csv").read_text().count("\n") == 13


def test_declined_plan_sends_nothing(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 3))
    model = SandboxModel()
    endpoint = Endpoint("http://sandbox.invalid/api/v1", Secret(DEFAULT_SECRET), transport=sandbox_transport(model))
    outcome = chertcast.send(campaign, endpoint=endpoint, on_plan=lambda prepared: False)
    assert outcome.declined and outcome.result is None and model.deliveries() == []


def test_a_real_send_needs_an_endpoint_a_dry_run_does_not(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 3))
    with pytest.raises(ConfigError, match="no endpoint"):
        chertcast.send(campaign)
    dry = chertcast.send(campaign, options=SendOptions(dry_run=True))
    assert dry.exit_code == 0 and dry.as_json()["dry_run"] is True
    assert not (tmp_path / "campaign.journal.sqlite").exists()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_asend_over_loopback(tmp_path: Path, anyio_backend: str) -> None:
    campaign = write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 8))
    model = SandboxModel()
    with SandboxServer(model) as server:
        endpoint = Endpoint(server.base_url, Secret(DEFAULT_SECRET))

        async def main() -> chertcast.SendOutcome:
            return await chertcast.asend(campaign, endpoint=endpoint, options=SendOptions(handle_signals=False))

        outcome = anyio.run(main, backend=anyio_backend)
    assert outcome.exit_code == 0 and len(model.deliveries()) == 8


def test_the_product_never_imports_the_sandbox() -> None:
    """Only the CLI wires --sandbox (lazily); no other product module imports it."""
    offenders = []
    for path in sorted(SRC.glob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.startswith("chertcast.sandbox") for n in names):
                offenders.append(path.name)
    assert offenders == []


def test_the_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    """The README's "Use it from Python" block, run unchanged against a sandbox over loopback."""
    import re
    import subprocess
    import sys

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Use it from Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 4))
    model = SandboxModel()
    with SandboxServer(model) as server:
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        done = subprocess.run(
            [sys.executable, "-c", code.group(1)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "0 4" and len(model.deliveries()) == 4
    assert (tmp_path / "report.xlsx").exists()


def test_report_refuses_an_only_that_is_not_a_state(tmp_path: Path) -> None:
    """report(only="Failed") wrote a header-only file: a typo read as "nothing failed"."""
    import pytest

    from chertcast.errors import ConfigError

    with pytest.raises(ConfigError, match=r"report: only='Failed' is not one of pending, sending, .*failed-delivery"):
        chertcast.report(tmp_path / "campaign.toml", tmp_path / "out.csv", only="Failed")
    assert not (tmp_path / "out.csv").exists()
