"""Follow-up steps: the campaign keys, per-step idempotency keys and the due rule (pure, by table)."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from chertcast.campaign import FollowUpStep, load_campaign, parse_delay
from chertcast.errors import ConfigError
from chertcast.followups import Decision, Facts, decide, step_key
from chertcast.preflight import build_plan, idempotency_key
from tests.helpers import run_cli, write_campaign, write_contacts

FIRST = "cc1_fb3e71c4e929bdf2d4817f58ec3e556784903b2b"  # idempotency_key("welcome-2026", "+14155550100")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3d", 259_200.0),
        ("12h", 43_200.0),
        ("30m", 1_800.0),
        ("45s", 45.0),
        (" 2 s ", 2.0),
        ("1.5h", 5_400.0),
        ("0s", 0),
    ],
)
def test_delays(text: str, seconds: float) -> None:
    assert parse_delay(text) == seconds


@pytest.mark.parametrize("text", ["3", "3 days", "3dd", "-1d", "d3", "", "3w", "1h30m", "∞s"])
def test_bad_delays(text: str) -> None:
    with pytest.raises(ValueError, match="is not a delay"):
        parse_delay(text)


def test_step_keys() -> None:
    assert idempotency_key("welcome-2026", "+14155550100") == FIRST
    assert step_key(FIRST, 1) == FIRST  # the first touch's key is unchanged
    assert step_key(FIRST, 2) == "cc1_9a15bc9e507b7bce3157a1ef2c65c59e13d0c59c"  # pinned: journals depend on it
    keys = {step_key(FIRST, n) for n in range(1, 6)} | {step_key(FIRST[:-1] + "0", n) for n in range(1, 6)}
    assert len(keys) == 10 and all(len(k) == 44 and k.startswith("cc1_") for k in keys)
    with pytest.raises(ValueError):
        step_key(FIRST, 0)


STEPS = [FollowUpStep(after="3d", body="nudge"), FollowUpStep(after="12h", body="last", stop_on=["opt_out"])]
DAY = 86_400.0


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (Facts(), Decision(2, None, "first touch not sent")),
        (Facts(frozenset({1}), frozenset({1})), Decision(2, None, "waiting for step 1 to be delivered")),
        (Facts(frozenset({1}), frozenset({1}), {1: 100.0}), Decision(2, 100.0 + 3 * DAY, "due")),
        (Facts(frozenset({1}), frozenset({1}), {1: 100.0}, replied=True), Decision(None, None, "replied")),
        (Facts(frozenset({1}), frozenset({1}), {1: 100.0}, opted_out=True), Decision(None, None, "opted out")),
        (Facts(frozenset(), frozenset({1})), Decision(2, None, "first touch not sent")),  # it failed
        (
            Facts(frozenset({1}), frozenset({1}), {1: 100.0}, undeliverable=frozenset({1})),
            Decision(None, None, "step 1 was not delivered"),
        ),
        (
            Facts(frozenset({1, 2}), frozenset({1, 2}), {1: 100.0}),
            Decision(3, None, "waiting for step 2 to be delivered"),
        ),
        (Facts(frozenset({1, 2}), frozenset({1, 2}), {1: 1.0, 2: 500.0}), Decision(3, 500.0 + 12 * 3600, "due")),
        # step 3 stops only on opt-out: a reply does not stop it, an opt-out does
        (Facts(frozenset({1, 2}), frozenset({1, 2}), {1: 1.0, 2: 500.0}, replied=True), Decision(3, 43_700.0, "due")),
        (
            Facts(frozenset({1, 2}), frozenset({1, 2}), {1: 1.0, 2: 5.0}, opted_out=True),
            Decision(None, None, "opted out"),
        ),
        (Facts(frozenset({1, 2, 3}), frozenset({1, 2, 3}), {1: 1.0, 2: 5.0, 3: 9.0}), Decision(None, None, "finished")),
        # a step that failed for good is finished: the next one waits for a delivery that never comes
        (Facts(frozenset({1}), frozenset({1, 2}), {1: 1.0}), Decision(3, None, "waiting for step 2 to be delivered")),
    ],
)
def test_due_rule(facts: Facts, expected: Decision) -> None:
    assert decide(STEPS, facts) == expected


def campaign_with(tmp_path: Path, steps: str) -> Path:
    return write_campaign(tmp_path, write_contacts(tmp_path / "c.csv", 3), extra=steps)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ('[[follow_up]]\nafter = "3 days"\nbody = "x"\n', "follow_up step 2.after: '3 days' is not a delay"),
        (
            '[[follow_up]]\nafter = "1d"\nbody = "x"\n[[follow_up]]\nbody = "y"\n',
            "follow_up step 3.after: Field required",
        ),
        ('[[follow_up]]\nafter = "1d"\n', "follow_up step 2: give exactly one of `template`"),
        (
            '[[follow_up]]\nafter = "1d"\nbody = "x"\nstop_on = ["reply"]\n',
            'follow_up step 2.stop_on: stop_on must include "opt_out"',
        ),
        (
            '[[follow_up]]\nafter = "1d"\nbody = "x"\nstop_on = ["click"]\n',
            "follow_up step 2.stop_on.0: Input should be 'reply' or 'opt_out'",
        ),
        ('[[follow_up]]\nafter = "1d"\nbody = "x"\nwait = 3\n', "follow_up step 2.wait: unknown key"),
    ],
)
def test_bad_steps_are_one_line_errors(tmp_path: Path, steps: str, message: str) -> None:
    path = campaign_with(tmp_path, steps)
    with pytest.raises(ConfigError) as caught:
        load_campaign(path)
    assert message in str(caught.value) and "\n" not in str(caught.value) and str(path) in str(caught.value)
    result = run_cli("check", path)
    assert result.exit_code == 2 and message in result.output


def test_steps_parse_with_defaults_and_templates_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "nudge.j2").write_text("Still keen, {{ name }}?", encoding="utf-8")
    path = campaign_with(
        tmp_path, '[[follow_up]]\nafter = "3d"\ntemplate = "nudge.j2"\n[[follow_up]]\nafter = "45s"\nbody = "bye"\n'
    )
    campaign = load_campaign(path)
    assert campaign.steps == 3
    assert [s.delay_s for s in campaign.follow_up] == [259_200.0, 45.0]
    assert [s.stop_on for s in campaign.follow_up] == [["reply", "opt_out"], ["reply", "opt_out"]]
    assert campaign.follow_up[0].template == tmp_path / "nudge.j2"
    assert campaign.inputs()[tmp_path / "nudge.j2"] == "template"
    step2 = build_plan(campaign.for_step(2))
    first = build_plan(campaign)
    assert [r.body for r in step2.sendable] == ["Still keen, Lead 0?", "Still keen, Lead 1?", "Still keen, Lead 2?"]
    assert [r.key for r in step2.sendable] == [r.key for r in first.sendable]  # matched to the recipient by key
    with pytest.raises(ConfigError, match="there is no step 4: this campaign has steps 1 to 3"):
        campaign.for_step(4)


def test_a_campaign_without_steps_sends_as_before(tmp_path: Path, server: object) -> None:
    from chertcast.sandbox import DEFAULT_SECRET, SandboxServer

    assert isinstance(server, SandboxServer)
    path = campaign_with(tmp_path, "")
    env = {"CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
    result = run_cli("send", path, "--yes", "--journal", tmp_path / "j.sqlite", env=env)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        keys = sorted(key for (key,) in db.execute("SELECT key FROM recipients"))
    assert "follow_ups" in tables  # every journal has the table (a migration); this one holds no step
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM follow_ups").fetchone() == (0,)
    assert keys == sorted(r.key for r in build_plan(load_campaign(path)).sendable if r.key)
    assert sorted(d.idempotency_key for d in server.model.deliveries()) == keys


def test_check_names_the_step_of_each_finding_and_shows_the_sequence(tmp_path: Path) -> None:
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone,name,company\n(212) 555-0100,Ann,Acme\n(415) 555-0101,Bob,\n", encoding="utf-8")
    steps = '[[follow_up]]\nafter = "3d"\nbody = "Hi {{ name }}, how is {{ company }}?"\n'
    path = write_campaign(tmp_path, contacts, body="Hi {{ name }}", extra=steps)
    result = run_cli("check", path)
    assert result.exit_code == 1, result.output  # step 2 cannot be sent to Bob: his company cell is empty
    assert "step 2: 3d after step 1 is delivered, unless they reply or opt-out: 1 message, 1 row with problems" in (
        result.output
    )
    assert "step 2, row 3:" in result.output and "company" in result.output
    data = json.loads(run_cli("check", path, "--json").output)
    (step,) = data["follow_up"]
    assert step["step"] == 2 and step["sendable"] == 1 and step["errors"] == 1
    assert step["issues"][0]["row"] == 3 and step["issues"][0]["step"] == 2
    assert step["due_from"] <= step["due_until"]


def test_a_step_template_naming_a_missing_column_stops_check_naming_the_step(tmp_path: Path) -> None:
    steps = '[[follow_up]]\nafter = "3d"\nbody = "Hi {{ nickname }}"\n'
    path = campaign_with(tmp_path, steps)
    result = run_cli("check", path)
    assert result.exit_code == 2
    assert "follow_up step 2:" in result.output and "nickname" in result.output


def test_preview_shows_a_steps_bubbles(tmp_path: Path) -> None:
    steps = '[[follow_up]]\nafter = "3d"\nbody = "Still there, {{ name }}?\\n\\nReply STOP to opt out."\n'
    path = campaign_with(tmp_path, steps)
    first = run_cli("preview", path, "--rows", "1")
    second = run_cli("preview", path, "--rows", "1", "--step", "2")
    assert first.exit_code == 0 and "Hi Lead 0" in first.output and "Still there" not in first.output
    assert second.exit_code == 0 and "Still there, Lead 0?" in second.output and "Reply STOP" in second.output
    missing = run_cli("preview", path, "--step", "3")
    assert missing.exit_code == 2 and "there is no step 3: this campaign has steps 1 to 2" in missing.output


def test_preview_of_a_step_shows_and_exports_the_key_that_step_sends(tmp_path: Path) -> None:
    """Found by a new-user walkthrough: `preview --step 2` showed (and `--out` wrote) step 1's key."""
    steps = (
        '[[follow_up]]\nafter = "3d"\nbody = "Still there, {{ name }}?"\n[[follow_up]]\nafter = "1d"\nbody = "Last"\n'
    )
    path = campaign_with(tmp_path, steps)
    plan = build_plan(load_campaign(path))
    first = {r.row: r.key for r in plan.sendable}
    for step in (1, 2, 3):
        shown = run_cli("preview", path, "--rows", "1", "--step", step)
        assert shown.exit_code == 0, shown.output
        key = step_key(first[2], step)
        assert f"   key {key}\n" in shown.output
        assert step == 1 or f"key {first[2]}" not in shown.output
        out = tmp_path / f"step{step}.csv"
        assert run_cli("preview", path, "--step", step, "--out", out).exit_code == 0
        written = {int(r["row"]): r["idempotency_key"] for r in csv.DictReader(out.open(encoding="utf-8-sig"))}
        assert written == {row: step_key(k, step) for row, k in first.items() if k is not None}
