"""The sandbox stands on its own: its own capacity model, SPEC's shapes on every route."""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from chertcast.sandbox import CapacityLimits, SandboxConfig, SandboxModel, SandboxServer, sandbox_transport
from tests.conftest import BEARER, ROOT
from tests.helpers import run_cli

PHONE = "+14155552671"
SRC = ROOT / "src" / "chertcast"
T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC).timestamp()  # a Tuesday, 09:00 UTC


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level) for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, id(node) in top) for alias in node.names)
    return found


def test_the_sandbox_imports_nothing_from_the_product() -> None:
    for path in sorted((SRC / "sandbox").glob("*.py")):
        product = [m for m, _ in _imports(path) if m.startswith("chertcast") and not m.startswith("chertcast.sandbox")]
        assert product == [], f"{path.name} imports {product}"


def test_the_product_imports_the_sandbox_only_lazily_in_the_cli() -> None:
    for path in sorted(SRC.glob("*.py")):
        uses = [(m, top) for m, top in _imports(path) if m.startswith("chertcast.sandbox")]
        if path.name == "cli.py":
            assert uses and not any(top for _, top in uses), "cli.py imports the sandbox at module level"
        else:
            assert uses == [], f"{path.name} imports {uses}"


def test_importing_every_product_module_loads_no_sandbox_module() -> None:
    code = (
        "import importlib, pkgutil, sys, chertcast\n"
        "for m in pkgutil.iter_modules(chertcast.__path__):\n"
        "    if m.name not in ('sandbox', '__main__'): importlib.import_module('chertcast.' + m.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('chertcast.sandbox')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------ capacity, the sandbox's own


def _capacity_model(clock: Clock, lines: tuple[str, ...] = ("pl_a",), **limits: Any) -> SandboxModel:
    return SandboxModel(SandboxConfig(lines=lines, capacity=CapacityLimits(**limits), clock=clock))


async def _send(http: httpx.AsyncClient, phone: str, **extra: Any) -> httpx.Response:
    return await http.post("/send", json={"phone": phone, "body": "Hi", **extra}, headers=BEARER)


def _client(model: SandboxModel) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=sandbox_transport(model), base_url="http://sandbox.test/api/v1")


@pytest.mark.anyio
async def test_first_touches_are_ten_minutes_apart_per_line_and_thirty_a_day() -> None:
    clock = Clock()
    model = _capacity_model(clock)
    async with _client(model) as http:
        answers = []
        for n in range(30):
            answers.append((await _send(http, f"+1415555{n:04d}")).status_code)
            if n == 29:
                break
            clock.now += 599  # one second short of SPEC's ten minutes...
            early = await _send(http, "+14155559999")
            assert early.status_code == 503 and early.json()["code"] == 4002
            assert early.json()["retry_after"] == 1 and early.headers["retry-after"] == "1"
            clock.now += 1  # ...and then exactly ten minutes after the last one
        assert answers == [200] * 30
        clock.now += 600
        full = await _send(http, "+14155559999")  # the 31st of the day, at 14:00 UTC
        midnight = dt.datetime(2026, 12, 2, tzinfo=dt.UTC).timestamp()
        assert full.json()["code"] == 4002 and full.json()["retry_after"] == int(midnight - clock.now)
        follow_up = await _send(http, "+14155550000", body="again")  # not a first touch: never refused
        assert follow_up.status_code == 200
        clock.now = midnight
        assert (await _send(http, "+14155559999")).status_code == 200
    assert model.stats()["capacity_refusals"] == 30


@pytest.mark.anyio
async def test_a_project_cap_and_a_window_in_the_project_zone() -> None:
    clock = Clock(dt.datetime(2026, 12, 1, 13, 0, tzinfo=dt.UTC).timestamp())  # 08:00 in New York
    model = _capacity_model(
        clock,
        ("pl_a", "pl_b"),
        project_daily_cap=2,
        window_start=dt.time(9, 0),
        window_end=dt.time(17, 0),
        timezone="America/New_York",
    )
    async with _client(model) as http:
        closed = await _send(http, "+14155550001")
        assert closed.json()["retry_after"] == 3600  # the window opens at 09:00 New York
        clock.now += 3600
        assert [(await _send(http, f"+1415555000{n}")).status_code for n in (1, 2)] == [200, 200]  # two lines
        capped = await _send(http, "+14155550003")
        next_open = dt.datetime(2026, 12, 2, 14, 0, tzinfo=dt.UTC).timestamp()  # tomorrow 09:00 New York
        assert capped.json()["retry_after"] == int(next_open - clock.now)


@pytest.mark.parametrize(
    "limits",
    [{"project_daily_cap": 0}, {"line_daily_cap": 0}, {"line_gap_s": -1}, {"window_start": dt.time(9, 0)}],
)
def test_impossible_capacity_limits_are_refused_when_made(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must be|needs a start"):
        CapacityLimits(**limits)


def test_the_sandbox_command_refuses_a_project_cap_of_zero() -> None:
    result = run_cli("sandbox", "--capacity", "--project-daily-cap", "0", "--port", "0")
    assert result.exit_code == 2 and "--project-daily-cap" in result.output and "listening" not in result.output


# ------------------------------------------------------------------ SPEC's shapes


def _envelope(response: httpx.Response, code: int, status: int) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == status, body
    assert body["success"] is False and body["error"]["code"] == code and body["error"]["status"] == status, body
    assert "code" not in body and body["error"]["retryable"] is False
    assert response.headers["x-trace-id"] == body["trace_id"]
    return body


@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "code", "status"), [({}, 2012, 401), ({"authorization": "Bearer no"}, 2004, 401)])
async def test_auth_errors_off_send_use_the_envelope(
    http: httpx.AsyncClient, headers: dict[str, str], code: int, status: int
) -> None:
    spec = {"filename": "a.png", "content_type": "image/png", "size_bytes": 4}
    _envelope(await http.post("/attachments", json=spec, headers=headers), code, status)
    _envelope(await http.put("/attachments/att_x/upload", content=b"1234", headers=headers), code, status)
    _envelope(await http.get("/messages/0123", headers=headers), code, status)
    _envelope(await http.get("/phone-numbers", headers=headers), code, status)
    flat = (await http.post("/send", json={"phone": PHONE, "body": "x"}, headers=headers)).json()
    assert flat["status"] == "failed" and flat["code"] == code  # /send keeps its flat shape


@pytest.mark.anyio
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_creating_an_attachment_needs_a_json_content_type(
    http: httpx.AsyncClient, content_type: str | None
) -> None:
    raw = b'{"filename": "a.png", "content_type": "image/png", "size_bytes": 4}'
    headers = {**BEARER, **({"content-type": content_type} if content_type else {})}
    _envelope(await http.post("/attachments", content=raw, headers=headers), 1004, 400)
    created = await http.post("/attachments", content=raw, headers={**BEARER, "content-type": "application/json"})
    assert created.status_code == 200 and created.json()["attachment_id"].startswith("att_")


@pytest.mark.anyio
async def test_a_sent_messages_media_parts_are_in_get_message(http: httpx.AsyncClient) -> None:
    ids = []
    for name in ("a.png", "b.pdf"):
        mime = "image/png" if name.endswith("png") else "application/pdf"
        created = (
            await http.post(
                "/attachments", json={"filename": name, "content_type": mime, "size_bytes": 4}, headers=BEARER
            )
        ).json()
        await http.put(created["upload_url"], content=b"1234", headers={**BEARER, "content-type": mime})
        ids.append(created["attachment_id"])
    refs = [ids[0], {"attachment_id": ids[1]}]
    sent = (await http.post("/send", json={"phone": PHONE, "body": "see", "attachments": refs}, headers=BEARER)).json()
    message = (await http.get(f"/messages/{sent['message_id']}", headers=BEARER)).json()["message"]
    assert message["parts"] == [
        {"type": "text", "value": "see"},
        {"type": "media", "attachment_id": ids[0]},
        {"type": "media", "attachment_id": ids[1]},
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("url", ["https://example.com/a.png", "http://example.com/a.png", "HTTPS://EXAMPLE.COM/A"])
async def test_a_bare_url_string_attachment_is_a_url_reference(
    http: httpx.AsyncClient, model: SandboxModel, url: str
) -> None:
    response = await http.post(
        "/send", json={"phone": PHONE, "body": "x", "attachments": ["att_other", url]}, headers=BEARER
    )
    body = response.json()
    assert response.status_code == 409 and body["code"] == 1011 and body["attachment_index"] == 1, body
    assert model.deliveries() == []


def test_unknown_routes_answer_json_with_a_trace_id_over_loopback(server: SandboxServer) -> None:
    with httpx.Client() as http:
        for response, status, code in (
            (http.get(f"{server.base_url}/nope", headers=BEARER), 404, 2011),
            (http.post(f"{server.base_url}/sends", json={}, headers=BEARER), 404, 2011),
            (http.get(f"{server.root_url}/_sandbox/nope"), 404, 2011),
            (http.get(f"{server.base_url}/send", headers=BEARER), 405, 4099),
            (http.get(f"{server.root_url}/", headers=BEARER), 404, None),  # not the API: a web 404
            (http.post(f"{server.root_url}/wrong/v1/send", json={}, headers=BEARER), 404, None),
        ):
            assert response.status_code == status
            assert response.headers["content-type"] == "application/json" and response.headers["x-trace-id"]
            body = response.json()
            if code is None:
                assert body == {"detail": "Not Found"}  # no Chert code: never read as an answer about a row
                continue
            assert body["success"] is False and body["error"]["code"] == code
            assert body["error"]["status"] == status and body["trace_id"] == response.headers["x-trace-id"]
        assert http.get(f"{server.base_url}/send").headers["allow"] == "POST"
