"""`sync`: statuses, replies (paged, resumed from the stored cursor, deduped) and opt-outs,
against the sandbox over loopback with the real client and a real journal."""

from __future__ import annotations

import csv
import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from chertcast.campaign import load_campaign
from chertcast.client import ChertClient, Secret
from chertcast.journal import Journal
from chertcast.sandbox import DEFAULT_SECRET, Faults, SandboxConfig, SandboxModel, SandboxServer
from chertcast.sandbox.outcomes import OutcomeConfig
from chertcast.sync import Syncer, run_sync
from tests.helpers import run_cli, write_campaign, write_contacts

OUTCOMES = OutcomeConfig(seed=11, reply_share=0.3, opt_out_share=0.2, contains_word_share=0.1, delay_s=0.2)


def sent_campaign(tmp_path: Path, count: int, model: SandboxModel, server: SandboxServer, extra: str = "") -> Path:
    contacts = write_contacts(tmp_path / "contacts.csv", count)
    settings = "[send]\nrate = 2000\nburst = 50\nconcurrency = 16\n" + extra
    campaign = write_campaign(tmp_path, contacts, extra='opt_out_list = "optouts.csv"\n' + settings)
    env = {"CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
    result = run_cli("send", campaign, "--yes", "--journal", tmp_path / "j.sqlite", env=env)
    assert result.exit_code == 0, result.output
    model.config.clock = lambda: time.time() + 10_000  # every outcome has happened by now
    return campaign


def table(journal: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(journal) as db:
        return db.execute(sql).fetchall()


def list_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open(encoding="utf-8")))


def test_sync_records_outcomes_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    model = SandboxModel(SandboxConfig(outcomes=OUTCOMES))
    with SandboxServer(model) as server:
        campaign = sent_campaign(tmp_path, 300, model, server)
        loaded, journal = load_campaign(campaign), tmp_path / "j.sqlite"
        first = run_sync(loaded, journal, server.base_url, Secret(DEFAULT_SECRET))
        again = run_sync(loaded, journal, server.base_url, Secret(DEFAULT_SECRET))
        replies = model.replies()
    phone_of = {key: phone for key, phone in table(journal, "SELECT key, phone FROM recipients")}
    recorded = table(journal, "SELECT event_id, key, text FROM sync_events WHERE key IS NOT NULL")
    assert sorted(e for e, _, _ in recorded) == sorted(r["event_id"] for r in replies)
    assert {(phone_of[k], t) for _, k, t in recorded} == {(r["phone"], r["text"]) for r in replies}
    assert table(journal, "SELECT SUM(replies) FROM outcomes")[0][0] == len(replies)
    assert first.stats.replies_new == len(replies) and again.stats.replies_new == 0
    assert again.stats.opt_outs_new == again.stats.list_added == 0
    listed = {r["phone"]: r for r in list_rows(tmp_path / "optouts.csv")}
    opt_outs = {r["phone"] for r in replies if r["kind"] == "opt_out"}
    ambiguous = {r["phone"] for r in replies if r["kind"] == "contains_word"}
    assert opt_outs and ambiguous
    assert {p for p, r in listed.items() if not r["review"]} == opt_outs
    assert {p for p, r in listed.items() if r["review"] == "yes"} == ambiguous
    assert len(list_rows(tmp_path / "optouts.csv")) == len(opt_outs | ambiguous)
    # statuses: every sent message was looked up once; only the not-yet-final are looked up again
    statuses = dict(table(journal, "SELECT status, COUNT(*) FROM outcomes GROUP BY status"))
    assert sum(statuses.values()) == 300 and set(statuses) <= {"delivered", "read", "failed"}
    assert first.stats.status_requests == 300
    assert again.stats.status_requests == statuses.get("delivered", 0)
    assert first.counts["opted_out"] == len(opt_outs) and first.counts["needs_review"] == len(ambiguous)
    assert first.counts["replied"] == len({r["phone"] for r in replies})


class Interrupted(Exception):
    """The network died mid-sync (stands in for a kill between two pages)."""


class CountingTransport(httpx.AsyncHTTPTransport):
    """A real loopback transport that records each /events query and can fail after N of them."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.fail_after = fail_after
        self.queries: list[dict[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            if self.fail_after is not None and len(self.queries) >= self.fail_after:
                raise Interrupted()
            self.queries.append(dict(request.url.params))
        return await super().handle_async_request(request)


def sync_with(campaign: Path, journal: Path, base_url: str, transport: CountingTransport) -> Any:
    loaded = load_campaign(campaign)

    async def go() -> Any:
        async with httpx.AsyncClient(transport=transport) as http:
            client = ChertClient(http, base_url, Secret(DEFAULT_SECRET))
            with Journal(journal, loaded.id) as opened:
                return await Syncer(loaded, opened, client, page_size=25).run()

    return anyio.run(go)


def test_paging_resumes_from_the_stored_cursor_after_an_interruption(tmp_path: Path) -> None:
    model = SandboxModel(SandboxConfig(outcomes=OUTCOMES))
    with SandboxServer(model) as server:
        campaign = sent_campaign(tmp_path, 400, model, server)
        journal = tmp_path / "j.sqlite"
        broken = CountingTransport(fail_after=3)
        try:
            sync_with(campaign, journal, server.base_url, broken)
        except Interrupted:
            pass
        else:
            raise AssertionError("the sync should have been interrupted")
        assert table(journal, "SELECT COUNT(*) FROM sync_events")[0][0] == 75  # three whole pages, committed
        cursor = table(journal, "SELECT value FROM sync_state WHERE name = 'cursor'")[0][0]
        assert cursor and "cursor" not in broken.queries[0] and broken.queries[2]["limit"] == "25"
        resumed = CountingTransport()
        stats = sync_with(campaign, journal, server.base_url, resumed)
        replies = model.replies()
    assert resumed.queries[0]["cursor"] == cursor  # not from the start
    assert stats.events_repeated == 0 and stats.events_new == len(replies) - 75
    assert len(resumed.queries) == (len(replies) - 75) // 25 + 1  # the last page says next_cursor null
    assert table(journal, "SELECT SUM(replies) FROM outcomes")[0][0] == len(replies)
    assert sorted(e for (e,) in table(journal, "SELECT event_id FROM sync_events")) == sorted(
        r["event_id"] for r in replies
    )


def test_a_cursor_chert_no_longer_knows_falls_back_to_since_and_dedupes(tmp_path: Path) -> None:
    model = SandboxModel(SandboxConfig(outcomes=OUTCOMES))
    with SandboxServer(model) as server:
        campaign = sent_campaign(tmp_path, 120, model, server)
        journal = tmp_path / "j.sqlite"
        sync_with(campaign, journal, server.base_url, CountingTransport())
        with sqlite3.connect(journal) as db:
            db.execute("INSERT OR REPLACE INTO sync_state VALUES ('cursor', 'not-a-cursor')")
        transport = CountingTransport()
        stats = sync_with(campaign, journal, server.base_url, transport)
    assert transport.queries[0]["cursor"] == "not-a-cursor" and "since" in transport.queries[1]
    assert stats.replies_new == 0 and stats.events_new == 0


def test_status_lookups_are_paced_and_honour_429(tmp_path: Path) -> None:
    faults = Faults(rate_limited=0.15, retry_after_s=0, seed=3)
    model = SandboxModel(SandboxConfig(outcomes=OUTCOMES))
    with SandboxServer(model) as server:
        campaign = sent_campaign(tmp_path, 80, model, server, extra="max_attempts = 20\n")
        model.config.faults = faults
        loaded = load_campaign(campaign)
        started = time.monotonic()
        result = run_sync(loaded, tmp_path / "j.sqlite", server.base_url, Secret(DEFAULT_SECRET), rate=100)
        elapsed = time.monotonic() - started
        refused = model.stats()["faults"]["rate_limited"]
    assert refused > 0 and result.stats.errors.get("1007") == refused and result.stats.retries == refused
    assert result.stats.status_checked == 80
    assert elapsed >= (result.stats.requests + refused - 50) / 100  # burst 50, then 100 requests/s


def test_status_and_report_show_outcomes(tmp_path: Path) -> None:
    model = SandboxModel(SandboxConfig(outcomes=OUTCOMES))
    with SandboxServer(model) as server:
        campaign = sent_campaign(tmp_path, 100, model, server)
        journal = tmp_path / "j.sqlite"
        before = json.loads(run_cli("status", campaign, "--journal", journal, "--json").output)
        assert before["delivered"] == 0 and before["last_sync_at"] is None
        env = {"CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        synced = run_cli("sync", campaign, "--journal", journal, "--json", env=env)
        assert synced.exit_code == 0, synced.output
        replies = model.replies()
    data = json.loads(run_cli("status", campaign, "--journal", journal, "--json").output)
    assert data["replied"] == len({r["phone"] for r in replies}) and data["sent"] == 100
    assert data["replied_share"] == round(data["replied"] / 100, 4)
    assert data["delivered"] + data["failed_after_send"] == 100 and data["read"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", data["last_sync_at"])  # as created_at
    text = run_cli("status", campaign, "--journal", journal).output
    assert "After the send" in text and "opted out" in text
    out = tmp_path / "report.csv"
    assert run_cli("report", campaign, "--journal", journal, "--out", out).exit_code == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig")))
    assert list(rows[0])[-6:] == ["delivered_at", "read_at", "replied_at", "reply", "opted_out", "delivery"]
    assert list(rows[0])[:5] == ["row", "phone", "name", "e164_phone", "state"]
    by_phone = {r["e164_phone"]: r for r in rows}
    for reply in replies:
        row = by_phone[reply["phone"]]
        assert row["replied_at"] and row["reply"].lstrip("'") == reply["text"]
        expected = {"opt_out": "yes", "contains_word": "review", "ordinary": ""}[reply["kind"]]
        assert row["opted_out"] == expected


def test_sync_without_a_journal_says_send_first(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 3)
    campaign = write_campaign(tmp_path, contacts)
    result = run_cli("sync", campaign, env={**os.environ, "CHERT_SIGNING_SECRET": DEFAULT_SECRET})
    assert result.exit_code == 2
    assert "no journal yet" in result.output


def test_a_second_sync_of_the_same_journal_leaves_at_once(tmp_path: Path) -> None:
    from chertcast.sync import sync_lock

    model = SandboxModel(SandboxConfig(outcomes=OUTCOMES))
    with SandboxServer(model) as server:
        campaign = sent_campaign(tmp_path, 5, model, server)
        journal = tmp_path / "j.sqlite"
        env = {"CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        with sync_lock(journal):
            result = run_cli("sync", campaign, "--journal", journal, env=env)
        assert result.exit_code == 0 and "another sync holds" in result.output
        assert table(journal, "SELECT COUNT(*) FROM sync_events") == [(0,)]  # it wrote nothing
        assert table(journal, "SELECT COUNT(*) FROM sync_state") == [(0,)]
        assert run_cli("sync", campaign, "--journal", journal, env=env).exit_code == 0


def test_send_rereads_the_opt_out_list_before_each_run(tmp_path: Path) -> None:
    from chertcast import optout
    from tests.helpers import numbers

    with SandboxServer() as server:
        contacts = write_contacts(tmp_path / "contacts.csv", 10)
        campaign = write_campaign(tmp_path, contacts, extra='opt_out_list = "optouts.csv"\n')
        env = {"CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        first = run_cli("send", campaign, "--yes", "--limit", "4", env=env)
        assert first.exit_code == 0, first.output
        later = ["+1" + "".join(c for c in n if c.isdigit()) for n in numbers(10)[6:]]
        optout.ensure(tmp_path / "optouts.csv")  # another campaign's sync added these meanwhile
        optout.merge(tmp_path / "optouts.csv", [optout.Entry(p, 0.0, "other", "STOP", False) for p in later], "US")
        second = run_cli("send", campaign, "--yes", env=env)
        assert second.exit_code == 0, second.output
        delivered = {d.phone for d in server.model.deliveries()}
    assert len(delivered) == 6 and not delivered & set(later)


def test_a_reply_read_before_its_lead_was_journaled_is_attributed_later(tmp_path: Path) -> None:
    model = SandboxModel(SandboxConfig(outcomes=OUTCOMES))
    with SandboxServer(model) as server:
        campaign = sent_campaign(tmp_path, 60, model, server)
        journal = tmp_path / "j.sqlite"
        replies = model.replies()
        late = replies[0]["lead_id"]
        with sqlite3.connect(journal) as db:  # as if `send` had not recorded this answer yet
            db.execute("UPDATE recipients SET lead_id = NULL WHERE lead_id = ?", (late,))
        loaded = load_campaign(campaign)
        first = run_sync(loaded, journal, server.base_url, Secret(DEFAULT_SECRET))
        assert first.stats.replies_new == len(replies) - 1
        with sqlite3.connect(journal) as db:  # ... and now it has
            db.execute("UPDATE recipients SET lead_id = ? WHERE phone = ?", (late, replies[0]["phone"]))
        second = run_sync(loaded, journal, server.base_url, Secret(DEFAULT_SECRET))
    assert second.stats.replies_new == 1 and second.stats.events_new == 0
    assert table(journal, "SELECT SUM(replies) FROM outcomes")[0][0] == len(replies)


def test_a_long_retry_after_ends_the_sync_at_once_with_exit_3(tmp_path: Path) -> None:
    model = SandboxModel(SandboxConfig(outcomes=OUTCOMES))
    with SandboxServer(model) as server:
        campaign = sent_campaign(tmp_path, 30, model, server)
        model.config.faults = Faults(rate_limited=1.0, retry_after_s=3600)
        env = {"CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        started = time.monotonic()
        result = run_cli("sync", campaign, "--journal", tmp_path / "j.sqlite", env=env)
        lookups = model.stats()["lookups"]
    assert time.monotonic() - started < 5 and lookups == 1
    assert (
        result.exit_code == 3 and "Chert asked to wait 3,600 s" in result.output and "run sync again" in result.output
    )


def test_a_rehearsals_opt_outs_stay_out_of_the_real_list(tmp_path: Path) -> None:
    """`send --sandbox` + `sync --sandbox`: the sandbox's made-up opt-outs go to a list of their own
    (`<list>.sandbox.csv`), which the rehearsal honours; check and a real send read only the real list."""
    import chertcast
    from chertcast import Endpoint, SendOptions
    from chertcast.preflight import build_plan
    from chertcast.sandbox import sandbox_transport

    contacts = write_contacts(tmp_path / "contacts.csv", 12)
    campaign = write_campaign(tmp_path, contacts, extra='opt_out_list = "optouts.csv"\n')
    everyone_stops = OutcomeConfig(seed=3, reply_share=1.0, opt_out_share=1.0, contains_word_share=0.0, delay_s=0.0)
    model = SandboxModel(SandboxConfig(outcomes=everyone_stops))
    endpoint = Endpoint.sandbox("http://sandbox.invalid/api/v1", Secret(DEFAULT_SECRET), sandbox_transport(model))
    sent = chertcast.send(campaign, endpoint=endpoint, options=SendOptions(sandbox=True, handle_signals=False))
    assert sent.exit_code == 0 and len(model.deliveries()) == 12
    time.sleep(0.05)  # the replies' moment must have passed
    synced = chertcast.sync(campaign, endpoint=endpoint, sandbox=True)
    added = synced.as_json()["opt_out_list_added"]
    assert added >= 8  # nearly everyone was made to answer STOP
    with (tmp_path / "optouts.sandbox.csv").open(encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == added
    real = tmp_path / "optouts.csv"
    assert not real.exists() or len(real.read_text(encoding="utf-8").splitlines()) <= 1
    assert len(chertcast.check(campaign).plan.sendable) == 12  # the real campaign is untouched
    rehearsal = build_plan(load_campaign(campaign).rehearsal())
    assert len(rehearsal.sendable) == 12 - added and rehearsal.counts()["suppressed"] == added


def test_a_message_that_fails_delivery_after_sending_is_visible_everywhere(tmp_path: Path) -> None:
    """Chert accepted it (journal: sent), sync then found it failed: status, the report's row (a
    note and the delivery column), `report --only failed-delivery` and the page's failures say so."""
    failing = OutcomeConfig(seed=5, failed_share=0.3, reply_share=0.0, delay_s=0.2)
    model = SandboxModel(SandboxConfig(outcomes=failing))
    with SandboxServer(model) as server:
        campaign = sent_campaign(tmp_path, 40, model, server)
        journal = tmp_path / "j.sqlite"
        env = {"CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        synced = run_cli("sync", campaign, "--journal", journal, env=env)
    assert synced.exit_code == 0, synced.output
    failed = {
        p
        for (p,) in table(
            journal, "SELECT r.phone FROM outcomes o JOIN recipients r USING (key) WHERE o.status = 'failed'"
        )
    }
    assert 0 < len(failed) < 40
    assert table(journal, "SELECT DISTINCT state FROM recipients") == [("sent",)]  # no new journal state
    count = f"{len(failed):>7,}"
    assert f"  failed delivery {count}" in synced.output
    text = run_cli("status", campaign, "--journal", journal).output
    assert f"  failed delivery {count}" in text
    assert f"{len(failed)} messages were accepted by Chert, then failed delivery" in text
    assert f"chertcast report {campaign} --journal {journal} --only failed-delivery --out undelivered.csv" in text
    out = tmp_path / "report.csv"
    assert run_cli("report", campaign, "--journal", journal, "--out", out).exit_code == 0
    rows = {r["e164_phone"]: r for r in csv.DictReader(out.open(encoding="utf-8-sig"))}
    for phone, row in rows.items():
        assert row["state"] == "sent"
        if phone in failed:
            assert row["delivery"] == "failed" and not row["delivered_at"]
            assert row["note"] == "sent, then failed delivery: Recipient is not reachable on iMessage"
        else:
            assert row["delivery"] in ("delivered", "read") and row["note"] == ""
    only = tmp_path / "undelivered.csv"
    result = run_cli("report", campaign, "--journal", journal, "--out", only, "--only", "failed-delivery")
    assert result.exit_code == 0 and result.output == f"wrote {len(failed)} rows to {only}\n"
    assert {r["e164_phone"] for r in csv.DictReader(only.open(encoding="utf-8-sig"))} == failed
    refused = tmp_path / "failed.csv"  # `--only failed` stays the rows Chert refused (for --retry-failed)
    assert run_cli("report", campaign, "--journal", journal, "--out", refused, "--only", "failed").output == (
        f"wrote 0 rows to {refused}\n"
    )
    page = tmp_path / "report.html"
    assert run_cli("report", campaign, "--journal", journal, "--html", page).exit_code == 0
    html = page.read_text(encoding="utf-8")
    assert "No row has failed" not in html
    assert f"<td>sent, then failed delivery</td><td>{len(failed)}</td>" in html
    assert f"<div>{len(failed)} × Recipient is not reachable on iMessage</div>" in html


def test_sync_without_an_opt_out_list_says_the_opt_outs_stay_in_this_campaign(tmp_path: Path) -> None:
    everyone_stops = OutcomeConfig(seed=3, reply_share=1.0, opt_out_share=0.5, contains_word_share=0.5, delay_s=0.1)
    model = SandboxModel(SandboxConfig(outcomes=everyone_stops))
    with SandboxServer(model) as server:
        contacts = write_contacts(tmp_path / "contacts.csv", 12)
        campaign = write_campaign(tmp_path, contacts)  # no opt_out_list
        env = {"CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        assert run_cli("send", campaign, "--yes", env=env).exit_code == 0
        model.config.clock = lambda: time.time() + 10_000
        synced = run_cli("sync", campaign, env=env)
        data = json.loads(run_cli("sync", campaign, "--json", env=env).output)
    assert synced.exit_code == 0, synced.output
    held = data["opted_out"] + data["needs_review"]
    assert held >= 8 and data["opt_out_list"] is None
    assert "added to the opt-out list" not in synced.output and "no opt-out list" in synced.output
    assert "in the opt-out list" not in synced.output  # there is none
    assert (
        f"no opt_out_list is configured: these {held} opt-outs are honoured only in this campaign's journal"
        in synced.output
    )
    assert f'Add opt_out_list = "optouts.csv" to {campaign}' in synced.output
    text = run_cli("status", campaign).output
    assert f"no opt_out_list is configured: these {held} opt-outs" in text
    assert json.loads(run_cli("status", campaign, "--json").output)["opt_out_list"] is None


def test_commands_suggested_after_a_sync_keep_the_journal_the_user_named() -> None:
    """`sync --journal j.db` suggested `chertcast report c.toml --only failed-delivery …` without
    --journal, which then failed with "no journal yet" (second new-user walkthrough)."""
    from chertcast import present

    data = {"last_sync_at": "2026-11-28T12:00:00+00:00", "failed_after_send": 2, "sent": 10}
    shown = "\n".join(present.outcome_lines(data, "c.toml", False, Path("t/j.db")))
    assert "chertcast report c.toml --journal t/j.db --only failed-delivery --out undelivered.csv" in shown
    assert present.journal_args(None, True) == " --sandbox" and present.journal_args(None, False) == ""
