"""The sandbox's other side: message status over time and the event log's paging (SPEC §12)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from chertcast.sandbox import DEFAULT_SECRET, SandboxConfig, SandboxModel, sandbox_transport
from chertcast.sandbox.outcomes import OutcomeConfig, fate_of

BEARER = {"authorization": f"Bearer {DEFAULT_SECRET}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make(outcomes: OutcomeConfig) -> tuple[SandboxModel, Clock, httpx.AsyncClient]:
    clock = Clock()
    model = SandboxModel(SandboxConfig(outcomes=outcomes, clock=clock))
    http = httpx.AsyncClient(transport=sandbox_transport(model), base_url="http://sandbox/api/v1")
    return model, clock, http


async def send_many(http: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    sent = []
    for i in range(count):
        body = {"phone": f"+1415555{i:04d}", "body": f"hi {i}", "idempotency_key": f"k{i}"}
        sent.append((await http.post("/send", json=body, headers=BEARER)).json())
    return sent


@pytest.mark.anyio
async def test_a_message_moves_sent_delivered_read_or_fails() -> None:
    model, clock, http = make(OutcomeConfig(seed=1, failed_share=0.2, read_share=1.0, delay_s=10))
    sent = await send_many(http, 40)
    fates = {
        s["message_id"]: fate_of(model.config.outcomes, f"+1415555{i:04d}", s["message_id"], s["lead_id"], clock.now)
        for i, s in enumerate(sent)
    }
    first = {
        s["message_id"]: (await http.get(f"/messages/{s['message_id']}", headers=BEARER)).json()["message"]
        for s in sent
    }
    assert {m["status"] for m in first.values()} == {"sent"}
    assert all(m["delivered_at"] is None and m["read_at"] is None for m in first.values())
    clock.now += 1_000
    later = {
        s["message_id"]: (await http.get(f"/messages/{s['message_id']}", headers=BEARER)).json()["message"]
        for s in sent
    }
    failed = [m for m in later.values() if m["status"] == "failed"]
    read = [m for m in later.values() if m["status"] == "read"]
    assert failed and read and len(failed) + len(read) == 40
    assert all(m["error_code"] and m["error_message"] and m["delivered_at"] is None for m in failed)
    for message in read:
        assert message["delivered_at"] <= message["read_at"] and message["direction"] == "outbound"
        assert fates[message["id"]].failed_at is None
    await http.aclose()


@pytest.mark.anyio
async def test_event_log_pages_oldest_first_with_a_cursor_and_null_at_the_end() -> None:
    model, clock, http = make(OutcomeConfig(seed=3, reply_share=1.0, failed_share=0.0, delay_s=5))
    await send_many(http, 30)
    assert (await http.get("/events", params={"type": "message.received"}, headers=BEARER)).json() == {
        "events": [],
        "next_cursor": None,
        "count": 0,
    }
    clock.now += 100
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params = {"type": "message.received", "limit": "7", **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/events", params=params, headers=BEARER)).json()
        pages += 1
        assert page["count"] == len(page["events"]) <= 7
        seen += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5 and len(seen) == 30 == len({e["event_id"] for e in seen})
    assert [e["created_at"] for e in seen] == sorted(e["created_at"] for e in seen)
    event = seen[0]
    assert event["type"] == "message.received" and event["payload"]["data"]["chat"]["id"] == event["lead_id"]
    message = event["payload"]["data"]["message"]
    assert message["direction"] == "inbound" and message["parts"][0]["type"] == "text"
    assert {r["event_id"] for r in model.replies()} == {e["event_id"] for e in seen}
    since = seen[20]["created_at"]
    tail = (await http.get("/events", params={"since": since, "limit": "200"}, headers=BEARER)).json()
    assert [e["event_id"] for e in tail["events"]] == [e["event_id"] for e in seen[20:]]  # since is inclusive
    bad = await http.get("/events", params={"cursor": "nonsense!"}, headers=BEARER)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == 1002
    for limit in ("0", "201", "x"):
        refused = await http.get("/events", params={"limit": limit}, headers=BEARER)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == 1002
    other = (await http.get("/events", params={"type": "reaction.added"}, headers=BEARER)).json()
    assert other["events"] == [] and other["next_cursor"] is None
    assert (await http.get("/events")).status_code == 401
    await http.aclose()


@pytest.mark.anyio
async def test_a_reply_made_later_appears_after_the_cursor_of_the_last_page() -> None:
    _model, clock, http = make(OutcomeConfig(seed=4, reply_share=1.0, failed_share=0.0, delay_s=5))
    await send_many(http, 5)
    clock.now += 100
    first = (await http.get("/events", params={"limit": "200"}, headers=BEARER)).json()
    last_cursor = (await http.get("/events", params={"limit": "4"}, headers=BEARER)).json()["next_cursor"]
    await send_many(http, 8)  # 3 new recipients (keys k5..k7), replies scheduled after now
    clock.now += 100
    after = (await http.get("/events", params={"cursor": last_cursor}, headers=BEARER)).json()
    assert [e["event_id"] for e in after["events"]][:1] == [first["events"][4]["event_id"]]
    assert len(after["events"]) == 1 + 3
    await http.aclose()


def test_fates_are_reproducible_and_shares_roughly_as_set() -> None:
    config = OutcomeConfig(seed=9, failed_share=0.1, reply_share=0.3, opt_out_share=0.1)
    fates = [fate_of(config, f"+1212555{i:04d}", f"m{i}", f"l{i}", 0.0) for i in range(4000)]
    again = [fate_of(config, f"+1212555{i:04d}", f"m{i}", f"l{i}", 0.0) for i in range(4000)]
    assert fates == again
    failed = sum(f.failed_at is not None for f in fates) / 4000
    replied = [f for f in fates if f.reply_at is not None]
    assert 0.08 < failed < 0.12 and 0.25 < len(replied) / (4000 * (1 - failed)) < 0.35
    assert 0.07 < sum(f.reply_kind == "opt_out" for f in replied) / len(replied) < 0.13
