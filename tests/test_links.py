"""Links in a first message: what counts as one, `check`'s warning, the sandbox's 1005 switch, and
the campaign stopping at Chert's first 1005 (end to end over loopback)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from chertcast.links import find_link
from chertcast.sandbox import DEFAULT_SECRET, SandboxConfig, SandboxModel, SandboxServer, sandbox_transport
from tests.conftest import BEARER
from tests.helpers import numbers, run_cli, run_process, write_campaign, write_contacts
from tests.test_cli_sandbox import free_port


@pytest.mark.parametrize(
    ("text", "link"),
    [
        ("Book here: https://northwind.example/book?x=1.", "https://northwind.example/book?x=1"),
        ("(http://1.2.3.4:8080/admin)", "http://1.2.3.4:8080/admin"),
        ("ftp://files.northwind.io/a", "ftp://files.northwind.io/a"),
        ("See www.Northwind.org/spring!", "www.Northwind.org/spring"),
        ("Visit northwind.com, then reply", "northwind.com"),
        ("go.northwind.io", "go.northwind.io"),
        ("shop.northwind.co.uk", "shop.northwind.co.uk"),
        ("tap bit.ly/3xYz", "bit.ly/3xYz"),
        ("northwind.travel/spring", "northwind.travel/spring"),
        ("t.me/maya", "t.me/maya"),
        ("Hi Ada,\nnorthwind.com/x", "northwind.com/x"),
        ("NORTHWIND.COM", "NORTHWIND.COM"),
    ],
)
def test_links_are_found(text: str, link: str) -> None:
    assert find_link(text) == link


@pytest.mark.parametrize(
    "text",
    [
        "Mr.Smith will call",
        "St.Louis and Washington D.C.",
        "It costs 3.5% less, v2.0 is out",
        "e.g. this, i.e. that, U.S. only, etc.",
        "Built on Node.js; see the file.pdf",
        "Great.It works. Hi Ada.So glad",
        "write to ada@northwind.com",
        "northwind.community is our forum name",
        "call 555.123.4567 or $3.99/mo",
        "Hi Ada, it's Maya from Northwind 👋\n\nWant me to save Acme a spot?",
        "",
    ],
)
def test_words_with_dots_that_are_not_links(text: str) -> None:
    assert find_link(text) is None


def test_check_warns_per_row_and_the_exit_code_stays_0(tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    ada, grace, alan = numbers(3)
    contacts.write_text(f"phone,name,site\n{ada},Ada,\n{grace},Grace,grace.dev/cv\n{alan},Mr.Smith,\n")
    path = write_campaign(tmp_path, contacts, body="Hi {{ name }} {{ site | default('', true) }}")
    result = run_cli("check", path, "--json")
    report = json.loads(result.output)
    assert result.exit_code == 0, result.output  # a warning, not an error
    links = [issue for issue in report["issues"] if issue["code"] == "body_link"]
    assert [(i["row"], i["severity"]) for i in links] == [(3, "warning")]
    assert "(grace.dev/cv)" in links[0]["message"] and "code 1005" in links[0]["message"]
    path.write_text(path.read_text().replace("Hi {{ name }}", "Hi {{ name }}, see northwind.com"))
    text = run_cli("check", path)
    assert text.exit_code == 0
    assert "To do: remove 3 links from first messages" in text.output
    assert text.output.count("warning   the message holds a link (northwind.com)") == 3


def send_link(model: SandboxModel, phone: str, body: str, key: str | None = None) -> dict[str, object]:
    async def post() -> dict[str, object]:
        async with httpx.AsyncClient(transport=sandbox_transport(model), base_url="http://sandbox.test") as http:
            payload = {"phone": phone, "body": body, **({"idempotency_key": key} if key else {})}
            response = await http.post("/api/v1/send", json=payload, headers=BEARER)
            return {"http": response.status_code, **response.json()}

    return anyio.run(post)


def test_the_sandbox_switch_refuses_only_a_first_message_with_a_link() -> None:
    strict = SandboxModel(SandboxConfig(reject_links=True))
    refused = send_link(strict, "+14155550100", "Hi, see northwind.com")
    assert (refused["http"], refused["code"], refused["retryable"]) == (400, 1005, False)
    assert strict.deliveries() == []
    assert send_link(strict, "+14155550100", "Hi Ada")["status"] == "sent"  # the first message, no link
    assert send_link(strict, "+14155550100", "and northwind.com")["status"] == "sent"  # a follow-up may link
    assert send_link(strict, "+14155550101", "Mr.Smith paid 3.5")["status"] == "sent"
    lenient = SandboxModel()  # the switch is off by default
    assert send_link(lenient, "+14155550100", "Hi, see northwind.com")["status"] == "sent"


def test_the_sandbox_command_has_the_switch() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chertcast", "sandbox", "--port", str(port), "--reject-links"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/api/v1/send",
                    json={"phone": "+14155552671", "body": "see https://northwind.example"},
                    headers={"authorization": f"Bearer {DEFAULT_SECRET}"},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "sandbox never answered"
                time.sleep(0.05)
        assert response.status_code == 400 and response.json()["code"] == 1005
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def journal_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute(
            "SELECT row, state, attempts, error_code, error_message FROM recipients ORDER BY row"
        ).fetchall()


@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_link_in_the_template_stops_the_campaign_at_the_first_1005(tmp_path: Path, concurrency: int) -> None:
    """Against the sandbox with the switch on, over loopback: exit 3, one clear line, every row
    still pending, the refused rows journaled with Chert's 1005; nothing delivered."""
    contacts = write_contacts(tmp_path / "contacts.csv", 40)
    extra = f"[send]\nconcurrency = {concurrency}\nrate = 200\nburst = 1\n"
    path = write_campaign(tmp_path, contacts, body="Hi {{ name }}, book at northwind.com/demo", extra=extra)
    model = SandboxModel(SandboxConfig(reject_links=True))
    with SandboxServer(model) as server:
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        result = run_process("send", path, "--yes", env=env)
        requests = model.stats()["requests"]
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Stopped: 1005: the first message must not contain links" in result.stdout
    assert "40 rows remain. To resume, run:" in result.stdout
    assert model.deliveries() == []
    assert 1 <= requests <= concurrency  # stopped at once, not after failing row after row
    rows = journal_rows(tmp_path / "campaign.journal.sqlite")
    assert len(rows) == 40 and {state for _, state, *_ in rows} == {"pending"}
    refused = [r for r in rows if r[2]]
    assert len(refused) == requests and all(r[2:4] == (1, 1005) and "URLs" in str(r[4]) for r in refused)
    assert all(r[3:] == (None, None) for r in rows if not r[2])  # the others untouched
    if concurrency == 1:
        assert refused[0][0] == 2  # the first row, and only it


def test_a_rehearsal_refuses_links_like_chert(tmp_path: Path) -> None:
    """`send --sandbox` rehearses with the rule on, so it stops where the real run would."""
    contacts = write_contacts(tmp_path / "contacts.csv", 3)
    path = write_campaign(
        tmp_path, contacts, body="Hi {{ name }}, www.northwind.com", extra="[send]\nconcurrency = 1\n"
    )
    result = run_process("send", path, "--sandbox", "--yes")
    assert result.returncode == 3 and "Stopped: 1005: the first message must not contain links" in result.stdout
    test = run_process("send", path, "--sandbox", "--to", "+14155550199")
    assert test.returncode == 1
    assert "not delivered: 1005: the first message must not contain links" in test.stdout
