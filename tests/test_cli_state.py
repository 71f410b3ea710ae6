"""What chertcast says is precise: resume and cron commands, signals, estimates, wording (issue 11, 6-8)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chertcast import cli, present, runner
from chertcast.campaign import GAP_MARGIN_S, CapacitySettings
from chertcast.capacity import QuietHours
from chertcast.credentials import SecretSource
from chertcast.engine import RunStats
from chertcast.outlook import held_by_quiet_hours
from chertcast.progress import LineProgress
from chertcast.sandbox import DEFAULT_SECRET, SandboxServer
from tests.helpers import run_cli, run_process, start_process, write_campaign, write_contacts


def env_for(server: SandboxServer, secret: str = DEFAULT_SECRET) -> dict[str, str]:
    return {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": secret}


def campaign(tmp_path: Path, rows: int, extra: str = "", contacts_extra: str = "", **kwargs: object) -> Path:
    contacts = write_contacts(tmp_path / "contacts.csv", rows, extra_rows=contacts_extra)
    return write_campaign(tmp_path, contacts, extra=extra, **kwargs)  # type: ignore[arg-type]


def test_resume_and_report_commands_come_from_parsed_options_not_argv_positions(tmp_path: Path) -> None:
    path = campaign(tmp_path, 4)
    journal = tmp_path / "j.sqlite"
    with SandboxServer() as server:
        result = run_process(
            "send", "--journal", journal, "--rate", "5", path, "--yes", env=env_for(server, secret="f" * 32)
        )
    assert result.returncode == 3
    assert f"4 rows remain. To resume, run: chertcast send {path} --journal {journal} --rate 5 --yes" in result.stdout
    assert f"Report: chertcast report {path} --journal {journal} --out results.csv" in result.stdout


def test_dry_run_json_resume_command_has_no_dry_run(tmp_path: Path) -> None:
    path = campaign(tmp_path, 3)
    result = run_process("send", path, "--dry-run", "--json", "--limit", "2")
    summary = json.loads(result.stdout)
    assert summary["resume_command"] == f"chertcast send {path} --limit 2"


def test_cron_line_is_absolute_has_yes_and_never_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = runner.SendOptions(journal=Path("j.sqlite"), rate=5, wait=True, yes=False)
    source = SecretSource("env_file", tmp_path / "secret")
    line = present.cron_line(Path("c.toml"), options, present.Invocation(cli._program(), "", source))
    assert line == (
        f"*/15 * * * * cd {tmp_path} && CHERT_SIGNING_SECRET_FILE={tmp_path / 'secret'} {sys.executable} -m chertcast "
        f"send {tmp_path / 'c.toml'} --journal {tmp_path / 'j.sqlite'} --rate 5 --yes >> {tmp_path / 'send.log'} 2>&1"
    )
    assert present.resume_command(Path("c.toml"), options) == "chertcast send c.toml --journal j.sqlite --rate 5 --wait"
    from_env = present.cron_lines(Path("c.toml"), options, present.Invocation(secret=SecretSource("env")))
    assert "cron does not see CHERT_SIGNING_SECRET from this shell" in from_env[1]
    override = present.Invocation("chertcast", "https://chert.example/api/v1", source)
    assert " && CHERT_BASE_URL=https://chert.example/api/v1 CHERT_SIGNING_SECRET_FILE=" in present.cron_line(
        Path("c.toml"), options, override
    )
    rehearsal = runner.SendOptions(sandbox=True)  # the built-in sandbox ignores the override
    assert "CHERT_BASE_URL" not in present.cron_line(Path("c.toml"), rehearsal, override)


def test_sigterm_is_reported_as_sigterm_and_the_last_line_is_not_waiting(tmp_path: Path) -> None:
    path = campaign(tmp_path, 300, extra="[send]\nrate = 50\nburst = 5\nconcurrency = 4\n")
    with SandboxServer() as server:
        proc = start_process("send", path, "--yes", env=env_for(server))
        deadline = time.monotonic() + 30
        while len(server.model.deliveries()) < 10:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "Stopped: interrupted (SIGTERM)\n" in out
    assert "Ctrl-C" not in out and "waiting for messages in flight" not in out
    assert "(a second SIGTERM quits now)" in err and "Ctrl-C" not in err  # the notice names the signal it answers


def test_the_interrupt_notice_names_the_signal_it_answers(capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's hook: a SIGTERM (a service manager, `kill`) is not told to press Ctrl-C."""
    cli._interrupted(False, "SIGTERM")
    term = capsys.readouterr().err
    assert term == "\nchertcast: stopping: waiting for messages in flight (a second SIGTERM quits now)\n"
    cli._interrupted(False)
    assert "(Ctrl-C again to quit now)" in capsys.readouterr().err


def test_preview_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    path = campaign(tmp_path, 600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "chertcast", "preview", str(path), "--rows", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert err == ""
    assert proc.returncode == 141


def test_preview_options_and_rows_that_cannot_be_sent(tmp_path: Path) -> None:
    template = tmp_path / "message.j2"
    template.write_text("Hi {{ name }}\n\n    indented line\nnext\n", encoding="utf-8")
    path = campaign(tmp_path, 2, contacts_extra="n/a,Broken\n", body=None, template=template)
    negative = run_cli("preview", path, "--rows", "-2")
    assert negative.exit_code == 2 and "-2 is not in the range x>=1" in negative.output
    broken = run_cli("preview", path, "--row", "4").output
    assert "not sent: error:" in broken and "key None" not in broken
    shown = run_cli("preview", path, "--rows", "1").output
    assert "   │     indented line\n   │ next" in shown
    nothing = campaign(tmp_path, 0, contacts_extra="n/a,Broken\n")
    result = run_cli("preview", nothing)
    assert result.exit_code == 0
    assert (
        result.output.strip() == f"No row of contacts.csv can be sent (1 read); see why with: chertcast check {nothing}"
    )


def test_missing_suppression_file_is_called_a_suppression_list(tmp_path: Path) -> None:
    path = campaign(tmp_path, 2)
    path.write_text(path.read_text().replace("\n", '\nsuppress = ["optouts.csv"]\n', 1))
    result = run_cli("check", path)
    assert result.exit_code == 2
    assert result.output.strip().endswith("optouts.csv: suppression list does not exist")


def test_estimates_follow_capacity_planning_with_the_send_margin(tmp_path: Path) -> None:
    # 20 first-touch sends on one line 30 s apart in a 10-minute window: 20 fit without the
    # 5 s planning margin, 18 with it — so the plan send uses needs a second day.
    capacity = (
        '[capacity]\nlines = ["pl_a"]\nline_gap_minutes = 0.5\nline_daily_cap = 100\n'
        'window_start = "09:00"\nwindow_end = "09:10"\n[quiet_hours]\nenabled = false\n'
    )
    path = campaign(tmp_path, 20, extra=capacity, planned=True)
    check = run_cli("check", path).output
    assert "0.5 min apart, window 09:00-09:10, UTC): 2 sending days" in check
    assert "estimated send time: 2 sending days (first-touch capacity on 1 line; expected finish" in check
    dry = run_process("send", path, "--dry-run")
    assert "; estimated 2 sending days (first-touch capacity on 1 line;" in dry.stdout
    prepared = runner.prepare(path, runner.SendOptions(dry_run=True, limit=1))
    assert present.confirm_question(prepared).startswith("Send 1 message to 1 recipient at 5 msg/s (about ")
    assert CapacitySettings().planning_rules().line_gap_s == 600 + GAP_MARGIN_S  # 5 s on 10 minutes


def test_quiet_hours_count_uses_the_rows_own_time_zone() -> None:
    noon_utc = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC).timestamp()  # 07:00 in New York
    hours = QuietHours(dt.time(8), dt.time(21))
    assert held_by_quiet_hours([("+12125550100", None)], noon_utc, hours) == 1
    assert held_by_quiet_hours([("+12125550100", "Europe/London")], noon_utc, hours) == 0


def test_progress_counts_duplicates_apart_from_sent() -> None:
    stream = io.StringIO()
    progress = LineProgress(5, stream=stream)
    progress.close(RunStats(sent=2, duplicate=3))
    assert "5/5 done, 2 sent, 3 duplicate, 0 failed" in stream.getvalue()


def test_nothing_to_send_does_not_call_failed_rows_finished(tmp_path: Path) -> None:
    from chertcast.sandbox import Faults, SandboxConfig, SandboxModel

    path = campaign(tmp_path, 3, extra="[send]\nmax_attempts = 1\n")
    model = SandboxModel(SandboxConfig(faults=Faults(error_500=1.0, seed=1)))
    with SandboxServer(model) as server:
        first = run_process("send", path, "--yes", env=env_for(server))
        again = run_process("send", path, "--yes", env=env_for(server))
    assert first.returncode == 1 and "3 rows failed: see them with" in first.stdout
    assert "Nothing left to send" not in again.stdout
    assert (
        f"Nothing to send now, but 3 rows failed and were never delivered: see chertcast report {path} "
        "--only failed --out failed.csv; send them again with --retry-failed"
    ) in again.stdout


def test_fix_list_puts_the_plural_on_the_noun_not_the_phrase() -> None:
    from chertcast.preflight import Issue

    def issue(code: str) -> Issue:
        return Issue(row=2, column="c", severity="error", code=code, message="m")

    issues = [issue("render_failed"), issue("render_failed"), issue("not_imessage"), issue("row_extra_cells")]
    assert present.fix_list(issues) == (
        "fix 2 rows the template cannot render, check 1 number that may not receive iMessage, "
        "fix 1 row with more cells than the header"
    )
