"""Bad input: one clear line naming the file (and row, column or key), exit 2, no traceback,
nothing sent, and the journal untouched."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from chertcast.journal import Journal
from chertcast.sandbox import DEFAULT_SECRET, SandboxServer
from tests.conftest import DATA
from tests.helpers import run_process, write_campaign, write_contacts

BAD = DATA / "bad"

# (contacts file or None, template file or None, extra campaign text, what the line must contain)
CASES = {
    "binary_csv": ("binary.csv", None, "", ["binary.csv", "binary file"]),
    "truncated_xlsx": ("truncated.xlsx", None, "", ["truncated.xlsx", "not a valid XLSX"]),
    "zip_bomb": ("bomb.xlsx", None, "", ["bomb.xlsx", "zip bomb"]),
    "xlsx_no_rows": ("no_rows.xlsx", None, "", ["no_rows.xlsx", "empty"]),
    "csv_header_only": ("header_only.csv", None, "", ["header_only.csv", "no data rows"]),
    "no_phone_column": ("no_phone_column.csv", None, "", ["no_phone_column.csv", "no phone column", "[columns] phone"]),
    "unknown_variable": (None, "unknown_variable.j2", "", ["unknown_variable.j2", "nickname is not a column"]),
    "python_internals": (None, "python_internals.j2", "", ["python_internals.j2", "unsafe", "__class__"]),
    "huge_cell": ("huge_cell.csv", None, "", ["huge_cell.csv", "row 2, column 'note'"]),
    "utf32": ("utf32.csv", None, "", ["utf32.csv", "UTF-32"]),
    "duplicate_headers": ("dup_headers.csv", None, "", ["dup_headers.csv", "duplicate column header 'phone'"]),
    "unknown_key": (None, None, "colour = 'red'\n", ["campaign.toml", "colour: unknown key"]),
    "bad_send_key": (None, None, "[send]\nrate = 'fast'\n", ["campaign.toml", "send.rate"]),
    "misspelt_key": (
        None,
        None,
        "[send]\nrat = 5\n",
        ["campaign.toml", "send.rat: unknown key (did you mean `rate`?)"],
    ),
    "plain_http": (None, None, "[api]\nbase_url = 'http://chert.example.com/api/v1'\n", ["api.base_url", "plain http"]),
    "missing_sheet": ("numbers.xlsx", None, "sheet = 'Nope'\n", ["numbers.xlsx", "no sheet named 'Nope'"]),
}


@pytest.fixture(scope="module")
def server() -> SandboxServer:
    with SandboxServer() as running:
        yield running  # type: ignore[misc]


def snapshot(journal: Path) -> list[object]:
    with Journal(journal, "test-campaign", readonly=True) as opened:
        return list(opened.rows())


@pytest.fixture
def journal(tmp_path: Path, server: SandboxServer) -> Path:
    """A real journal from a good run, to prove bad input does not touch it."""
    good = (
        write_campaign(tmp_path / "good", write_contacts(tmp_path / "good.csv", 3))
        if (tmp_path / "good").mkdir() is None
        else None
    )
    assert good is not None
    path = tmp_path / "journal.sqlite"
    env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
    assert run_process("send", good, "--yes", "--journal", path, env=env).returncode == 0
    return path


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("chertcast: error: ") and "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case: str, tmp_path: Path, server: SandboxServer, journal: Path) -> None:
    contacts_name, template_name, extra, needles = CASES[case]
    contacts = (
        BAD / contacts_name
        if contacts_name and (BAD / contacts_name).exists()
        else DATA / (contacts_name or "cp1252.csv")
    )
    template = BAD / template_name if template_name else None
    campaign = write_campaign(tmp_path, contacts, template=template, body=None if template else "Hi", extra=extra)
    before = snapshot(journal)
    env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
    requests_before = server.model.stats()["requests"]
    for command in (["check"], ["preview"], ["send", "--yes", "--journal", str(journal)]):
        result = run_process(*command, campaign, env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        line = one_line_error(result.stderr)
        for needle in needles:
            assert needle in line, (command, line)
    assert server.model.stats()["requests"] == requests_before, "something was sent"
    assert snapshot(journal) == before, "the journal changed"


def test_invalid_toml_and_id_with_spaces(tmp_path: Path) -> None:
    for name, needle in (("invalid.toml", "invalid TOML"), ("spaces_id.toml", "id: use lowercase letters, digits and")):
        shutil.copy(BAD / name, tmp_path / name)
        result = run_process("check", tmp_path / name)
        assert result.returncode == 2
        line = one_line_error(result.stderr)
        assert name in line and needle in line


def test_missing_secret_sends_nothing(tmp_path: Path, server: SandboxServer) -> None:
    campaign = write_campaign(tmp_path, write_contacts(tmp_path / "c.csv", 3))
    env = {k: v for k, v in os.environ.items() if k != "CHERT_SIGNING_SECRET"} | {"CHERT_BASE_URL": server.base_url}
    before = server.model.stats()["requests"]
    result = run_process("send", campaign, "--yes", env=env)
    assert result.returncode == 2 and "CHERT_SIGNING_SECRET is not set" in one_line_error(result.stderr)
    assert server.model.stats()["requests"] == before


def test_formula_date_and_merged_cells_are_read_as_text(tmp_path: Path) -> None:
    """Not an error: the cached values are read as text, and what cannot be a phone is a row finding."""
    campaign = write_campaign(tmp_path, BAD / "formula_date_merged.xlsx", body="Hi {{ name }}")
    result = run_process("check", campaign, "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    import json

    data = json.loads(result.stdout)
    assert data["total"] == 2 and data["sendable"] == 1
    assert data["issues"][0]["row"] == 2 and data["issues"][0]["column"] == "Phone"


def test_a_json_command_that_cannot_run_says_so_in_json_too(tmp_path: Path) -> None:
    """`check --json` at exit 2 printed nothing on stdout: a script parsing it got no JSON."""
    result = run_process("check", tmp_path / "missing.toml", "--json")
    assert result.returncode == 2
    said = result.stderr.strip().removeprefix("chertcast: error: ")
    assert json.loads(result.stdout) == {"error": said, "exit_code": 2}
    assert result.stderr.startswith("chertcast: error: ") and str(tmp_path / "missing.toml") in result.stderr
