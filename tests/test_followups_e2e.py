"""Follow-up sequences end to end: the sandbox over loopback (real client, real journal),
seconds-long delays, replies and opt-outs on."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio

import chertcast
from chertcast import Endpoint, Secret, SendOptions, optout, present
from chertcast.followups import step_key
from chertcast.sandbox import DEFAULT_SECRET, SandboxConfig, SandboxModel, SandboxServer
from chertcast.sandbox.outcomes import OutcomeConfig
from tests.helpers import run_cli, start_process, write_campaign, write_contacts

STEPS = """
[[follow_up]]
after = "1s"
body = "Nudge for {{ name }}"

[[follow_up]]
after = "1s"
body = "Last note, {{ name }}"
"""


def table(journal: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(journal) as db:
        return db.execute(sql).fetchall()


def three_step_campaign(tmp_path: Path, count: int) -> Path:
    contacts = write_contacts(tmp_path / "contacts.csv", count)
    settings = 'opt_out_list = "optouts.csv"\n' + STEPS + "[send]\nrate = 500\nburst = 50\nconcurrency = 8\n"
    return write_campaign(tmp_path, contacts, extra=settings)


def check_sequence(model: SandboxModel, journal: Path, count: int) -> dict[str, int]:
    """Each step at most once per recipient; nothing after a reply the sandbox made before it."""
    sent = model.deliveries()
    per_key = Counter(d.idempotency_key for d in sent)
    assert max(per_key.values()) == 1, "a step went out twice"
    first = {key: phone for key, phone in table(journal, "SELECT key, phone FROM recipients")}
    phone_key = {phone: key for key, phone in first.items()}
    replied_at: dict[str, float] = {}
    for reply in model.replies():
        key = phone_key[reply["phone"]]
        replied_at[key] = min(replied_at.get(key, reply["at"]), reply["at"])
    by_step = Counter()
    for delivery in sent:
        key = phone_key[delivery.phone]
        step = next(n for n in (1, 2, 3) if step_key(key, n) == delivery.idempotency_key)
        by_step[step] += 1
        if step > 1:
            assert delivery.body.startswith("Nudge" if step == 2 else "Last")
            # the recipient had not replied (as the sandbox records it) before this follow-up left
            assert key not in replied_at or replied_at[key] > delivery.time - 0.0, (key, step)
    assert by_step[1] == count
    return dict(by_step)


def env_for(server: SandboxServer) -> dict[str, str]:
    return {"CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}


REPLIES = OutcomeConfig(
    seed=5, reply_share=0.3, opt_out_share=0.3, contains_word_share=0.1, delay_s=0.3, failed_share=0.05
)


def test_three_steps_go_once_each_and_never_after_a_reply(tmp_path: Path) -> None:
    count = 60
    model = SandboxModel(SandboxConfig(outcomes=REPLIES))
    with SandboxServer(model) as server:
        campaign = three_step_campaign(tmp_path, count)
        journal = tmp_path / "j.sqlite"
        result = run_cli("send", campaign, "--yes", "--wait", "--journal", journal, env=env_for(server))
        assert result.exit_code == 0, result.output
        by_step = check_sequence(model, journal, count)
        again = run_cli("send", campaign, "--yes", "--journal", journal, env=env_for(server))
        assert again.exit_code == 0, again.output
        assert check_sequence(model, journal, count) == by_step  # a rerun sends nothing more
        status = json.loads(run_cli("status", campaign, "--journal", journal, "--json").output)
        report = run_cli("report", campaign, "--journal", journal, "--out", tmp_path / "r.csv")
        assert report.exit_code == 0, report.output
        replied_phones = {r["phone"] for r in model.replies()}
        lines_of = {d.phone: d.phone_line_id for d in model.deliveries() if d.idempotency_key in first_keys(journal)}
    # every due step was sent: a recipient who never replied, whose messages were delivered, got all three
    fates = {key: phone for key, phone in table(journal, "SELECT key, phone FROM recipients")}
    undelivered = {k for (k,) in table(journal, "SELECT key FROM outcomes WHERE status = 'failed'")}
    undelivered |= {k for (k,) in table(journal, "SELECT key FROM follow_ups WHERE status = 'failed'")}
    full = {k for k, p in fates.items() if p not in replied_phones and k not in undelivered}
    got = Counter(k for (k,) in table(journal, "SELECT key FROM follow_ups WHERE state = 'sent'"))
    assert full and all(got[k] == 2 for k in full)
    assert replied_phones and by_step[2] < count  # replies and opt-outs did stop sequences
    # follow-ups went to the line each recipient's first touch was pinned to
    for phone, line in table(
        journal, "SELECT r.phone, r.phone_line_id FROM follow_ups f JOIN recipients r ON r.key = f.key"
    ):
        assert line and lines_of[phone] == line
    rows = list(csv.DictReader((tmp_path / "r.csv").open(encoding="utf-8-sig")))
    assert sum(r["step2_state"] == "sent" for r in rows) == by_step[2]
    assert sum(bool(r["step3_delivered_at"]) for r in rows) <= sum(r["step3_state"] == "sent" for r in rows)
    steps = {s["step"]: s for s in status["follow_up"]["steps"]}
    assert steps[2]["sent"] == by_step[2] and steps[3]["sent"] == by_step.get(3, 0)
    assert status["follow_up"]["sequences"].get("replied", 0) + status["follow_up"]["sequences"].get("opted out", 0) > 0


def first_keys(journal: Path) -> set[str]:
    return {k for (k,) in table(journal, "SELECT key FROM recipients")}


def test_follow_ups_wait_when_replies_cannot_be_read(tmp_path: Path) -> None:
    model = SandboxModel(SandboxConfig(outcomes=OutcomeConfig(seed=1, reply_share=0.0, delay_s=0.05, failed_share=0)))
    with SandboxServer(model) as server:
        campaign = three_step_campaign(tmp_path, 10)
        text = campaign.read_text(encoding="utf-8").replace("concurrency = 8", "concurrency = 8\nmax_attempts = 2")
        campaign.write_text(text, encoding="utf-8")
        journal = tmp_path / "j.sqlite"
        model.config.faults.events_down = True
        first = run_cli("send", campaign, "--yes", "--journal", journal, env=env_for(server))
        assert first.exit_code == 0, first.output
        time.sleep(1.3)  # step 2 is due now, but replies cannot be read
        second = run_cli("send", campaign, "--yes", "--journal", journal, env=env_for(server))
        assert "follow-ups wait: replies could not be read" in second.output
        assert len(model.deliveries()) == 10  # the first touches, and nothing else
        model.config.faults.events_down = False
        third = run_cli("send", campaign, "--yes", "--journal", journal, env=env_for(server))
        assert third.exit_code == 0, third.output
        assert len(model.deliveries()) == 20  # now step 2 went, once each


def test_killed_runs_rerun_like_cron_send_no_duplicate(tmp_path: Path) -> None:
    """``send --wait`` in its own process, SIGKILLed at random moments and rerun: 0 duplicates."""
    count = 40
    model = SandboxModel(SandboxConfig(outcomes=REPLIES))
    rng = random.Random(17)
    with SandboxServer(model) as server:
        campaign = three_step_campaign(tmp_path, count)
        journal = tmp_path / "j.sqlite"
        env = {**os.environ, **env_for(server)}
        args = [sys.executable, "-m", "chertcast", "send", str(campaign), "--yes", "--wait", "--journal", str(journal)]
        kills = 0
        for _ in range(4):
            process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.8, 2.0))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait()
        final = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stderr
        assert kills >= 2
        by_step = check_sequence(model, journal, count)
    assert by_step[2] > 0 and by_step.get(3, 0) > 0
    assert table(journal, "SELECT COUNT(*) FROM follow_ups WHERE state = 'sending'") == [(0,)]


def test_a_number_opted_out_through_another_campaign_during_a_wait_run_gets_no_more_steps(tmp_path: Path) -> None:
    """`send --wait` re-reads the shared opt-out list before each pass of follow-ups."""
    model = SandboxModel(SandboxConfig(outcomes=OutcomeConfig(seed=2, reply_share=0.0, delay_s=0.05, failed_share=0)))
    with SandboxServer(model) as server:
        campaign = three_step_campaign(tmp_path, 6)
        campaign.write_text(campaign.read_text(encoding="utf-8").replace('"1s"', '"2s"'), encoding="utf-8")
        journal = tmp_path / "j.sqlite"
        endpoint = Endpoint(server.base_url, Secret(DEFAULT_SECRET))
        options = SendOptions(journal=journal, wait=True, handle_signals=False)

        async def scenario() -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(partial(chertcast.asend, campaign, endpoint=endpoint, options=options))
                while len(model.deliveries()) < 6:  # the first touches are out; step 2 is 2 s away
                    await anyio.sleep(0.05)
                entry = optout.Entry(model.deliveries()[0].phone, time.time(), "another-campaign", "STOP", False)
                optout.merge(tmp_path / "optouts.csv", [entry], "US")

        anyio.run(scenario)
        stopped = model.deliveries()[0].phone
        sent = Counter(d.phone for d in model.deliveries())
    assert sent[stopped] == 1
    assert sorted(n for phone, n in sent.items() if phone != stopped) == [3] * 5


def test_a_refused_secret_stops_follow_ups_without_failing_the_step(tmp_path: Path) -> None:
    model = SandboxModel(SandboxConfig(outcomes=OutcomeConfig(seed=1, reply_share=0.0, delay_s=0.05, failed_share=0)))
    with SandboxServer(model) as server:
        campaign = three_step_campaign(tmp_path, 5)
        journal = tmp_path / "j.sqlite"
        assert run_cli("send", campaign, "--yes", "--journal", journal, env=env_for(server)).exit_code == 0
        time.sleep(1.3)  # step 2 is due
        wrong = {**env_for(server), "CHERT_SIGNING_SECRET": "not-the-secret"}
        refused = run_cli("send", campaign, "--yes", "--journal", journal, env=wrong)
        assert "Follow-ups: follow-ups wait: replies could not be read" in refused.output  # the first request refused
        assert table(journal, "SELECT COUNT(*) FROM follow_ups") == [(0,)]  # no step marked failed
        again = run_cli("send", campaign, "--yes", "--journal", journal, env=env_for(server))
        assert again.exit_code == 0, again.output
        assert table(journal, "SELECT step, state, COUNT(*) FROM follow_ups GROUP BY 1, 2") == [(2, "sent", 5)]


def _wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _send_wait(campaign: Path, journal: Path, server: SandboxServer) -> subprocess.Popen[str]:
    return start_process(
        "send", campaign, "--yes", "--wait", "--journal", journal, env={**os.environ, **env_for(server)}
    )


def _has_table(journal: Path, name: str) -> bool:
    return bool(table(journal, f"SELECT 1 FROM sqlite_master WHERE name = '{name}'"))


DELIVERED_SOON = OutcomeConfig(seed=1, reply_share=0.0, delay_s=0.05, failed_share=0)


@contextmanager
def _sequence_send(
    tmp_path: Path, count: int
) -> Iterator[tuple[SandboxModel, SandboxServer, Path, Path, subprocess.Popen[str]]]:
    """A three-step campaign of ``count`` rows, and `send --wait` of it running against a sandbox."""
    model = SandboxModel(SandboxConfig(outcomes=DELIVERED_SOON))
    with SandboxServer(model) as server:
        campaign = three_step_campaign(tmp_path, count)
        journal = tmp_path / "j.sqlite"
        yield model, server, campaign, journal, _send_wait(campaign, journal, server)


def test_ctrl_c_while_follow_ups_go_stops_cleanly_and_the_rerun_finishes(tmp_path: Path) -> None:
    """Found by a new-user walkthrough: Ctrl-C once the first touches were done (the follow-up
    phase of `send --wait`) left with a bare `chertcast: interrupted`, no summary, sometimes a
    traceback: the signal was watched only while the first touches went."""
    count = 20
    with _sequence_send(tmp_path, count) as (model, server, campaign, journal, process):
        _wait_for(lambda: len(model.deliveries()) > count)  # a step 2 went: the first touches are done
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 130, out + err
        assert "chertcast: stopping: waiting for messages in flight" in err
        assert "This run: sent 20," in out and "Journal: " in out
        assert "Stopped: interrupted (Ctrl-C)" in out
        assert "Follow-ups remain. To resume, run: chertcast send " in out  # no first touch left, yet work is
        assert "Traceback" not in err and "chertcast: interrupted" not in err
        stopped_at = len(model.deliveries())
        assert stopped_at < 3 * count  # it did stop: step 3 had not gone to everyone
        final = run_cli("send", campaign, "--yes", "--wait", "--journal", journal, env=env_for(server))
        assert final.exit_code == 0, final.output
        by_step = check_sequence(model, journal, count)
    assert by_step == {1: count, 2: count, 3: count}  # each step once to each (no replies here)


def test_a_second_ctrl_c_leaves_follow_ups_in_flight_sending_and_the_rerun_resends_them_with_their_key(
    tmp_path: Path,
) -> None:
    count = 20
    with _sequence_send(tmp_path, count) as (model, server, campaign, journal, process):
        delivered = "SELECT COUNT(*) FROM outcomes WHERE delivered_at IS NOT NULL"
        _wait_for(
            lambda: journal.exists() and _has_table(journal, "outcomes") and table(journal, delivered) == [(count,)]
        )
        model.config.faults.latency_ms = 2_000  # the first touches are delivered: step 2's requests hang
        in_flight = (
            "SELECT key, step, json_extract(payload, '$.idempotency_key') FROM follow_ups WHERE state = 'sending'"
        )
        _wait_for(lambda: len(table(journal, in_flight)) >= 4)
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 130, out + err
        assert "chertcast: stopping: waiting for messages in flight" in err
        assert err.endswith("chertcast: stopped at once; the journal is consistent. Rerun to resume.\n"), err
        assert "Traceback" not in err
        caught = table(journal, in_flight)
        assert caught and all(sent == step_key(key, step) for key, step, sent in caught)
        model.config.faults.latency_ms = 0
        final = run_cli("send", campaign, "--yes", "--wait", "--journal", journal, env=env_for(server))
        assert final.exit_code == 0, final.output
        by_step = check_sequence(model, journal, count)  # at most once per key, whatever reached the sandbox
        delivered_keys = {d.idempotency_key for d in model.deliveries()}
    assert by_step == {1: count, 2: count, 3: count}
    assert {sent for _, _, sent in caught} <= delivered_keys  # resent under the very key they had
    assert table(journal, "SELECT COUNT(*) FROM follow_ups WHERE state = 'sending'") == [(0,)]


def _closed_window_in_berlin(now: float) -> tuple[str, str, float]:
    """Quiet hours (start, end) in Berlin that hold a message sent at ``now`` for an hour or
    more, and the moment they next open."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    local = datetime.fromtimestamp(now, ZoneInfo("Europe/Berlin"))
    if local.hour <= 21:
        start, end, day = local.hour + 2, f"{local.hour + 2:02d}:30", local.date()
    else:
        start, end, day = 1, "02:00", local.date() + timedelta(days=1)
    opens = datetime(day.year, day.month, day.day, start, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    return f"{start:02d}:00", end, opens


def test_follow_ups_held_by_quiet_hours_are_said_so_by_send_status_and_a_waiting_send(tmp_path: Path) -> None:
    """Found by a new-user walkthrough: with quiet hours holding 2 due follow-ups (recipients in
    Berlin at night there), `status` said `due now 2`, `send` said none were due, and
    `send --wait` waited for the morning without saying so."""
    from datetime import UTC, datetime

    from chertcast.engine import RunHooks

    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name\n+4915123456780,Ada\n+4915123456781,Max\n", encoding="utf-8")
    base = write_campaign(tmp_path, contacts, extra=STEPS, planned=True)
    settings = base.read_text(encoding="utf-8") + "[capacity]\nenabled = false\n"
    base.write_text(settings + "[quiet_hours]\nenabled = false\n", encoding="utf-8")
    model = SandboxModel(SandboxConfig(outcomes=DELIVERED_SOON))
    with SandboxServer(model) as server:
        journal = tmp_path / "j.sqlite"
        endpoint = Endpoint(server.base_url, Secret(DEFAULT_SECRET))
        options = SendOptions(journal=journal, handle_signals=False)
        assert chertcast.send(base, endpoint=endpoint, options=options).exit_code == 0  # the first touches
        time.sleep(1.2)  # step 2 is due for both now
        start, end, opens = _closed_window_in_berlin(time.time())
        base.write_text(settings + f'[quiet_hours]\nstart = "{start}"\nend = "{end}"\n', encoding="utf-8")

        held = chertcast.send(base, endpoint=endpoint, options=options)
        stats = held.result.follow_ups if held.result is not None else None
        assert stats is not None and stats.by_step == {} and len(model.deliveries()) == 2  # nothing sent
        assert stats.held == {"quiet hours": 2} and stats.held_until == opens
        assert held.result is not None
        until = datetime.fromtimestamp(opens, UTC).strftime("%Y-%m-%dT%H:%MZ")
        said = present.send_summary(held.result, options, present.Invocation())
        assert f"Follow-ups held: 2 due, held by quiet hours until {until}" in said
        assert present.send_header(held.prepared, options)[-1] == (
            "No first touch left to send; looking for follow-ups that are due."  # not "Nothing left to send"
        )
        assert held.as_json()["follow_ups"]["held"] == {"quiet hours": 2}
        status = chertcast.status(base, journal=journal).as_json()["follow_up"]
        assert status["sequences"] == {"held by quiet hours": 2}  # as send held them; not "due now"
        assert status["held_until"] == datetime.fromtimestamp(opens, UTC).strftime("%Y-%m-%dT%H:%MZ")

        notices: list[str] = []
        waiting = SendOptions(journal=journal, handle_signals=False, wait=True)

        async def a_waiting_send() -> None:
            hooks = RunHooks(notice=notices.append)
            with anyio.fail_after(20):
                async with anyio.create_task_group() as group:
                    group.start_soon(partial(chertcast.asend, base, endpoint=endpoint, options=waiting, hooks=hooks))
                    while not notices:
                        await anyio.sleep(0.02)
                    group.cancel_scope.cancel()  # it would wait for the morning

        anyio.run(a_waiting_send)
    when = datetime.fromtimestamp(opens, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert notices[0].startswith(f"waiting: 2 follow-ups due, held by quiet hours; until {when} (in "), notices
    assert len(model.deliveries()) == 2
