"""`chertcast sandbox` starts, prints its URL and secret, and answers /send."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from chertcast.sandbox import DEFAULT_SECRET
from tests.helpers import run_cli, write_campaign, write_contacts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sandbox_command_serves_until_terminated() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chertcast", "sandbox", "--port", str(port), "--latency-ms", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip() == f"chertcast sandbox listening on http://127.0.0.1:{port}/api/v1"
        assert DEFAULT_SECRET in proc.stdout.readline()
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/api/v1/send",
                    json={"phone": "+14155552671", "body": "hello"},
                    headers={"authorization": f"Bearer {DEFAULT_SECRET}"},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "sandbox never answered"
                time.sleep(0.05)
        assert response.status_code == 200 and response.json()["status"] == "sent"
        ledger = httpx.get(f"http://127.0.0.1:{port}/_sandbox/deliveries").json()["deliveries"]
        assert [d["body"] for d in ledger] == ["hello"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sandbox_port_in_use_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "chertcast", "sandbox", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"chertcast: error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # neither "listening" nor the secret before failing


def test_sandbox_port_out_of_range_is_a_usage_error() -> None:
    """It was an internal error (OverflowError from bind)."""
    result = subprocess.run(
        [sys.executable, "-m", "chertcast", "sandbox", "--port", "70000"], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 2 and "70000 is not in the range 0<=x<=65535" in result.stderr
    assert "internal error" not in result.stderr


def test_sandbox_probabilities_outside_0_to_1_are_refused() -> None:
    for option, value in (("--error-500", "2"), ("--drop-after", "-0.1"), ("--saturated", "1.5")):
        result = subprocess.run(
            [sys.executable, "-m", "chertcast", "sandbox", "--port", "0", option, value],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode == 2, (option, result.stdout)
        assert f"Invalid value for '{option}'" in result.stderr and "0<=x<=1" in result.stderr
        assert result.stdout == ""


def test_status_after_a_rehearsal_points_at_the_rehearsals_journal(tmp_path: Path) -> None:
    """Found by a new-user walkthrough: `status` without --sandbox after a rehearsal only said 'no journal yet'."""
    campaign = write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 2))
    assert run_cli("send", campaign, "--sandbox", "--yes").exit_code == 0
    for command in (["status"], ["report", "--out", tmp_path / "r.csv"]):
        result = run_cli(command[0], campaign, *command[1:])
        assert result.exit_code == 2 and "add --sandbox to read it" in result.output, result.output
    assert run_cli("status", campaign, "--sandbox").exit_code == 0
