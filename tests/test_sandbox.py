"""The sandbox behaves as SPEC.md documents /send, through the real httpx client."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from chertcast.sandbox import DEFAULT_SECRET, Faults, SandboxConfig, SandboxModel, sandbox_transport
from chertcast.signing import sign
from tests.conftest import BEARER

pytestmark = pytest.mark.anyio

PHONE = "+14155552671"


async def post(http: httpx.AsyncClient, payload: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return await http.post("/send", json=payload, headers=BEARER if headers is None else headers)


async def test_send_creates_lead_and_pins_line(http: httpx.AsyncClient, model: SandboxModel) -> None:
    first = await post(http, {"phone": PHONE, "body": "Hi"})
    assert first.status_code == 200
    data = first.json()
    assert data["status"] == "sent" and data["lead_created"] is True
    assert len(data["message_id"]) == 32 and data["phone_line_id"] in model.config.lines
    assert first.headers["x-trace-id"]
    second = (await post(http, {"phone": PHONE, "body": "Again"})).json()
    assert second["lead_created"] is False
    assert second["lead_id"] == data["lead_id"] and second["phone_line_id"] == data["phone_line_id"]
    assert [d.body for d in model.deliveries()] == ["Hi", "Again"]


async def test_phone_line_id_repins(http: httpx.AsyncClient, model: SandboxModel) -> None:
    first = (await post(http, {"phone": PHONE, "body": "a"})).json()
    other = next(line for line in model.config.lines if line != first["phone_line_id"])
    moved = (await post(http, {"phone": PHONE, "body": "b", "phone_line_id": other})).json()
    assert moved["phone_line_id"] == other
    after = (await post(http, {"phone": PHONE, "body": "c"})).json()
    assert after["phone_line_id"] == other


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, 2012),
        ({"authorization": "Bearer wrong"}, 2004),
        ({"authorization": f"Basic {DEFAULT_SECRET}"}, 2004),
        ({"x-chert-signature": "v2,1,abc", "x-chert-tenant": "sandbox"}, 2004),
        ({**BEARER, "x-chert-tenant": "nope"}, 2001),
    ],
)
async def test_auth_failures(http: httpx.AsyncClient, headers: dict[str, str], code: int) -> None:
    response = await post(http, {"phone": PHONE, "body": "x"}, headers)
    body = response.json()
    assert body["code"] == code and body["status"] == "failed" and body["retryable"] is False
    assert response.status_code == (404 if code == 2001 else 401)


async def test_hmac_signature_and_skew(http: httpx.AsyncClient, model: SandboxModel) -> None:
    raw = json.dumps({"phone": PHONE, "body": "signed"}).encode()

    async def with_ts(ts: int, secret: str = DEFAULT_SECRET) -> httpx.Response:
        headers = {
            "x-chert-signature": sign(secret, ts, raw),
            "x-chert-tenant": "sandbox",
            "content-type": "application/json",
        }
        return await http.post("/send", content=raw, headers=headers)

    now = int(time.time())
    assert (await with_ts(now)).json()["status"] == "sent"
    assert (await with_ts(now - 299)).json()["status"] == "duplicate"
    assert (await with_ts(now - 400)).json()["code"] == 2013
    assert (await with_ts(now + 400)).json()["code"] == 2013
    assert (await with_ts(now, "f" * 32)).json()["code"] == 2004
    tampered = {
        "x-chert-signature": sign(DEFAULT_SECRET, now, raw),
        "x-chert-tenant": "sandbox",
        "content-type": "application/json",
    }
    bad = await http.post("/send", content=raw.replace(b"signed", b"Signed"), headers=tampered)
    assert bad.json()["code"] == 2004
    assert len(model.deliveries()) == 1


@pytest.mark.parametrize(
    ("payload", "code", "extra"),
    [
        ({"body": "x"}, 1001, {}),
        ({"phone": PHONE}, 1001, {}),
        ({"phone": "4155552671", "body": "x"}, 1003, {}),
        ({"phone": "+1 415 555 2671", "body": "x"}, 1003, {}),
        ({"phone": PHONE, "body": "x", "attachments": "att_1"}, 1002, {}),
        ({"phone": PHONE, "body": "x", "attachments": [42]}, 1002, {"attachment_index": 0}),
        ({"phone": PHONE, "body": "x", "attachments": [{"url": "https://e.x/a.png"}]}, 1011, {"attachment_index": 0}),
        ({"phone": PHONE, "body": "x", "attachments": ["att_missing"]}, 5001, {"attachment_index": 0}),
        ({"phone": PHONE, "body": "x", "effect": "sparkle"}, 4098, {}),
        ({"phone": PHONE, "body": "x" * 10_001}, 1009, {}),
        ({"phone": PHONE, "body": "x", "phone_line_id": "pl_nope"}, 2006, {}),
    ],
)
async def test_validation(
    http: httpx.AsyncClient, model: SandboxModel, payload: dict[str, Any], code: int, extra: dict[str, Any]
) -> None:
    body = (await post(http, payload)).json()
    assert body["code"] == code, body
    assert body["retryable"] is False
    for key, value in extra.items():
        assert body[key] == value
    if code == 4098:
        assert "celebration" in body["allowed_effects"]
    assert model.deliveries() == []


async def test_url_mixed_with_id_reports_index(http: httpx.AsyncClient) -> None:
    attachments = ["att_x", {"attachment_id": "att_y", "url": "https://e.x/y.png"}]
    body = (await post(http, {"phone": PHONE, "body": "x", "attachments": attachments})).json()
    assert body["code"] == 1011 and body["attachment_index"] == 1


async def test_invalid_json(http: httpx.AsyncClient) -> None:
    response = await http.post("/send", content=b"{nope", headers={**BEARER, "content-type": "application/json"})
    assert response.status_code == 400 and response.json()["code"] == 1004


async def test_idempotency_replays_and_conflicts(http: httpx.AsyncClient, model: SandboxModel) -> None:
    payload = {"phone": PHONE, "body": "once", "idempotency_key": "k-1"}
    first = (await post(http, payload)).json()
    again = (await post(http, payload)).json()
    assert again == first
    conflict = await post(http, {**payload, "body": "changed"})
    assert conflict.status_code == 409 and conflict.json()["code"] == 1012
    assert len(model.deliveries()) == 1 and model.stats()["replays"] == 1


async def test_failed_attempt_is_not_cached_under_the_key() -> None:
    model = SandboxModel(SandboxConfig(faults=Faults(error_500=1.0)))
    async with httpx.AsyncClient(transport=sandbox_transport(model), base_url="http://s/api/v1") as http:
        payload = {"phone": PHONE, "body": "retry me", "idempotency_key": "k"}
        assert (await post(http, payload)).json()["code"] == 3001
        model.config.faults.error_500 = 0
        assert (await post(http, payload)).json()["status"] == "sent"


async def test_dedup_window() -> None:
    now = [1_000_000.0]
    model = SandboxModel(SandboxConfig(dedup_window_s=60, clock=lambda: now[0]))
    async with httpx.AsyncClient(transport=sandbox_transport(model), base_url="http://s/api/v1") as http:
        first = (await post(http, {"phone": PHONE, "body": "same"})).json()
        dup = (await post(http, {"phone": PHONE, "body": "same"})).json()
        assert dup["status"] == "duplicate" and dup["message_id"] == first["message_id"]
        now[0] += 61
        assert (await post(http, {"phone": PHONE, "body": "same"})).json()["status"] == "sent"
    assert len(model.deliveries()) == 2 and model.stats()["duplicates"] == 1


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [("error_500", 3001, 500), ("rate_limited", 1007, 429), ("saturated", 4002, 503)],
)
async def test_injected_errors(fault: str, code: int, status: int) -> None:
    faults = Faults(retry_after_s=7, **{fault: 1.0})
    model = SandboxModel(SandboxConfig(faults=faults))
    async with httpx.AsyncClient(transport=sandbox_transport(model), base_url="http://s/api/v1") as http:
        response = await post(http, {"phone": PHONE, "body": "x"})
    body = response.json()
    assert response.status_code == status and body["code"] == code and body["retryable"] is True
    assert body["status"] == "failed" and body["trace_id"]
    if code != 3001:
        assert body["retry_after"] == 7 and response.headers["retry-after"] == "7"
    assert model.stats()["faults"][fault] == 1 and model.deliveries() == []


async def test_drop_before_and_after() -> None:
    model = SandboxModel(SandboxConfig(faults=Faults(drop_before=1.0)))
    async with httpx.AsyncClient(transport=sandbox_transport(model), base_url="http://s/api/v1") as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await post(http, {"phone": PHONE, "body": "x", "idempotency_key": "a"})
        assert model.deliveries() == []
        model.config.faults.drop_before, model.config.faults.drop_after = 0, 1.0
        with pytest.raises(httpx.RemoteProtocolError):
            await post(http, {"phone": PHONE, "body": "x", "idempotency_key": "a"})
        assert len(model.deliveries()) == 1
        model.config.faults.drop_after = 0
        replay = (await post(http, {"phone": PHONE, "body": "x", "idempotency_key": "a"})).json()
        assert replay["message_id"] == model.deliveries()[0].message_id


async def test_server_side_rate_limit() -> None:
    now = [0.0]
    model = SandboxModel(SandboxConfig(faults=Faults(rate_limit_per_s=3), clock=lambda: now[0]))
    async with httpx.AsyncClient(transport=sandbox_transport(model), base_url="http://s/api/v1") as http:
        codes = [(await post(http, {"phone": PHONE, "body": str(i)})).json().get("code") for i in range(5)]
        assert codes == [None, None, None, 1007, 1007]
        now[0] += 1.0
        assert (await post(http, {"phone": PHONE, "body": "later"})).json()["status"] == "sent"


def test_faults_are_reproducible_with_a_seed() -> None:
    def run() -> list[int]:
        model = SandboxModel(SandboxConfig(faults=Faults(error_500=0.3, seed=42)))
        raw = json.dumps({"phone": PHONE, "body": "x"}).encode()
        headers = {**BEARER, "content-type": "application/json"}
        return [model.send(raw + b" " * i, headers).status for i in range(40)]

    first = run()
    assert first == run() and 500 in first and 200 in first


async def test_attachments_end_to_end(http: httpx.AsyncClient, model: SandboxModel) -> None:
    created = (
        await http.post(
            "/attachments", json={"filename": "a.png", "content_type": "image/png", "size_bytes": 4}, headers=BEARER
        )
    ).json()
    att = created["attachment_id"]
    assert created["upload_url"].endswith(f"/attachments/{att}/upload")
    early = (await post(http, {"phone": PHONE, "body": "pic", "attachments": [att]})).json()
    assert early["code"] == 5004
    put = await http.put(created["upload_url"], content=b"\x89PNG", headers={**BEARER, "content-type": "image/png"})
    assert put.status_code == 200
    refs = [att, {"id": att}, {"attachment_id": att}, {"attachment_id": att, "live_photo": True}]
    sent = (await post(http, {"phone": PHONE, "body": "pic", "attachments": refs})).json()
    assert sent["status"] == "sent"
    assert model.deliveries()[0].attachments == (att,) * 4
    message = (await http.get(f"/messages/{sent['message_id']}", headers=BEARER)).json()["message"]
    assert message["chat_id"] == sent["lead_id"] and message["parts"][0]["value"] == "pic"
    missing = await http.get("/messages/nope", headers=BEARER)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 2003
    bad_mime = await http.post(
        "/attachments",
        json={"filename": "a.exe", "content_type": "application/x-msdownload", "size_bytes": 4},
        headers=BEARER,
    )
    assert bad_mime.json()["error"]["code"] == 5003


async def test_phone_numbers_lists_lines(http: httpx.AsyncClient, model: SandboxModel) -> None:
    numbers = (await http.get("/phone-numbers", headers=BEARER)).json()["phone_numbers"]
    assert [n["phone_line_id"] for n in numbers] == list(model.config.lines)
    assert all(n["is_active"] and n["phone_number"].startswith("+") for n in numbers)


def test_ledger_stats_and_reset_over_loopback(server: Any) -> None:
    with httpx.Client() as http:
        response = http.post(
            f"{server.base_url}/send",
            json={"phone": PHONE, "body": "hello", "name": "Ada", "external_id": "crm-1", "effect": "confetti"},
            headers=BEARER,
        )
        assert response.status_code == 200
        ledger = http.get(f"{server.root_url}/_sandbox/deliveries").json()["deliveries"]
        assert ledger[0]["name"] == "Ada" and ledger[0]["external_id"] == "crm-1"
        assert ledger[0]["effect"] == "confetti" and ledger[0]["message_id"] == response.json()["message_id"]
        stats = http.get(f"{server.root_url}/_sandbox/stats").json()
        assert stats["requests"] == 1 and stats["deliveries"] == 1 and stats["peak_concurrency"] == 1
        http.post(f"{server.root_url}/_sandbox/reset")
        assert http.get(f"{server.root_url}/_sandbox/deliveries").json()["deliveries"] == []


def test_drop_after_over_loopback_closes_the_socket() -> None:
    from chertcast.sandbox import SandboxServer

    with SandboxServer(SandboxModel(SandboxConfig(faults=Faults(drop_after=1.0)))) as server, httpx.Client() as http:
        with pytest.raises(httpx.TransportError):
            http.post(f"{server.base_url}/send", json={"phone": PHONE, "body": "x"}, headers=BEARER)
        assert len(server.model.deliveries()) == 1
