"""An internal error: one line naming a crash file that holds the traceback; CHERTCAST_DEBUG=1
prints the traceback instead. (The secret never reaches either: see tests/test_secrets.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# A command with a bug in it, behind the real `friendly` decorator, in its own process.
BUGGY = """
import click
from chertcast.cli import friendly

def inner_helper(values):
    return values["missing"]

@click.command()
@friendly
def buggy():
    inner_helper({})

buggy()
"""


def run_buggy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CHERTCAST_DEBUG"}
    environ.update({"XDG_CACHE_HOME": str(tmp_path / "cache"), **env})
    return subprocess.run([sys.executable, "-c", BUGGY], capture_output=True, text=True, env=environ, timeout=60)


def test_internal_error_writes_a_crash_file_and_names_it(tmp_path: Path) -> None:
    result = run_buggy(tmp_path)
    assert result.returncode == 70
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("chertcast: internal error: KeyError: 'missing' (a bug in chertcast; details in ")
    crash_files = list((tmp_path / "cache" / "chertcast" / "crashes").glob("crash-*.txt"))
    assert len(crash_files) == 1 and str(crash_files[0]) in lines[0]
    text = crash_files[0].read_text()
    assert "Traceback (most recent call last)" in text and "inner_helper" in text and "KeyError: 'missing'" in text
    assert text.startswith("chertcast ") and "command: " in text
    assert oct(crash_files[0].stat().st_mode & 0o777) == "0o600"


def test_crash_file_falls_back_to_the_temp_folder(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    (tmp_path / "tmp").mkdir()
    result = run_buggy(tmp_path, XDG_CACHE_HOME=str(blocked), TMPDIR=str(tmp_path / "tmp"))
    assert result.returncode == 70
    written = list((tmp_path / "tmp").glob("chertcast-crashes-*/crash-*.txt"))
    assert len(written) == 1 and f"details in {written[0]}" in result.stderr
    assert "KeyError: 'missing'" in written[0].read_text()


def test_debug_prints_the_traceback_instead(tmp_path: Path) -> None:
    result = run_buggy(tmp_path, CHERTCAST_DEBUG="1")
    assert result.returncode == 70
    assert "Traceback (most recent call last)" in result.stderr and "inner_helper" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("chertcast: internal error: KeyError: 'missing'")
    assert not (tmp_path / "cache").exists()
