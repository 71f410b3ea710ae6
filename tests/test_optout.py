"""The opt-out word rule (a table of real replies) and the shared opt-out list file."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import pytest

from chertcast import optout
from chertcast.campaign import load_campaign
from chertcast.phones import normalise
from chertcast.preflight import build_plan
from chertcast.sandbox.outcomes import CONTAINS_WORD_FORMS, OPT_OUT_FORMS, ORDINARY_FORMS
from tests.helpers import numbers, run_cli, write_campaign, write_contacts

RULE_TABLE = [
    # exact opt-out words, in the forms people type them
    ("STOP", "opt_out"),
    ("stop", "opt_out"),
    ("stop.", "opt_out"),
    ("  Stop!!! ", "opt_out"),
    ("'STOP'", "opt_out"),
    ("Stop please", "opt_out"),
    ("please stop", "opt_out"),
    ("STOP NOW", "opt_out"),
    ("Stop 🛑", "opt_out"),
    ("ＳＴＯＰ", "opt_out"),  # fullwidth letters from a phone keyboard
    ("STOPALL", "opt_out"),
    ("QUIT", "opt_out"),
    ("end", "opt_out"),
    ("Revoke", "opt_out"),
    ("opt out", "opt_out"),
    ("Opt-out", "opt_out"),
    ("OPT_OUT", "opt_out"),
    ("optout", "opt_out"),
    ("Cancel.", "opt_out"),
    ("UNSUBSCRIBE", "opt_out"),
    ("unsubscribe, thanks", "opt_out"),
    ("remove me", "opt_out"),
    ("Remove me please", "opt_out"),
    ("stop\n", "opt_out"),
    # longer replies containing a word: suppressed, for a person to review
    ("I can't stop by today", "review"),
    ("Stop texting me", "review"),
    ("Can we cancel Tuesday?", "review"),
    ("When does the offer end?", "review"),
    ("How do I opt out of paper statements", "review"),
    ("please remove me from this list", "review"),
    ("STOP STOP", "review"),
    ("don't stop", "review"),
    # ordinary replies: words only match whole
    ("Yes please!", "reply"),
    ("Stopped by yesterday", "reply"),
    ("See you at the weekend", "reply"),
    ("Unstoppable!", "reply"),
    ("Who is this?", "reply"),
    ("👍", "reply"),
    ("", "reply"),
    ("please", "reply"),
    ("Thank you", "reply"),
    ("Remove the second item", "reply"),
    ("Opting out is not what I want", "reply"),
]


@pytest.mark.parametrize(("text", "verdict"), RULE_TABLE)
def test_word_rule(text: str, verdict: str) -> None:
    assert optout.classify(text) == verdict


def test_every_form_the_sandbox_replies_with_is_classified_as_meant() -> None:
    assert {optout.classify(t) for t in OPT_OUT_FORMS} == {"opt_out"}
    assert {optout.classify(t) for t in CONTAINS_WORD_FORMS} == {"review"}
    assert {optout.classify(t) for t in ORDINARY_FORMS} == {"reply"}


def entry(phone: str, reply: str = "STOP", review: bool = False, campaign: str = "a") -> optout.Entry:
    return optout.Entry(phone, 1_790_000_000.0, campaign, reply, review)


def test_list_is_created_with_its_header_and_merges_each_number_once(tmp_path: Path) -> None:
    path = tmp_path / "lists" / "optouts.csv"
    optout.ensure(path)
    assert path.read_bytes() == b"phone,opted_out_at,campaign,reply,review\r\n"
    assert optout.is_empty(path)
    assert optout.merge(path, [entry("+14155550100"), entry("+14155550101", "=HYPERLINK()", True)], "US") == 2
    assert optout.merge(path, [entry("+14155550100", campaign="b"), entry("+14155550102")], "US") == 1
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert [r["phone"] for r in rows] == ["+14155550100", "+14155550101", "+14155550102"]
    assert rows[0]["campaign"] == "a" and rows[0]["opted_out_at"] == "2026-09-21T14:13:20+00:00"
    assert rows[1]["reply"] == "'=HYPERLINK()" and rows[1]["review"] == "yes"  # never a formula in Excel
    assert not optout.is_empty(path)
    assert not list(tmp_path.glob("lists/.*.tmp"))


def test_a_number_written_by_hand_in_another_format_is_not_added_again(tmp_path: Path) -> None:
    path = tmp_path / "optouts.csv"
    path.write_text("Phone,note\n(415) 555-0100,called to opt out\n", encoding="utf-8")
    assert optout.merge(path, [entry("+14155550100")], "US") == 0


def test_concurrent_merges_keep_every_line(tmp_path: Path) -> None:
    path = tmp_path / "optouts.csv"
    optout.ensure(path)
    phones = [f"+1415555{i:04d}" for i in range(40)]

    def add(chunk: list[str]) -> None:
        for phone in chunk:
            optout.merge(path, [entry(phone)], "US")

    threads = [threading.Thread(target=add, args=(phones[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert sorted(r["phone"] for r in rows) == sorted(phones)


def test_check_reads_the_opt_out_list_like_a_suppression_list(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 10)
    campaign = write_campaign(tmp_path, contacts, extra='opt_out_list = "shared/optouts.csv"\n')
    missing = build_plan(load_campaign(campaign))  # not created yet: nobody suppressed, no error
    assert missing.counts()["sendable"] == 10
    path = tmp_path / "shared" / "optouts.csv"
    optout.ensure(path)
    assert build_plan(load_campaign(campaign)).counts()["sendable"] == 10  # header only
    first, third = numbers(10)[0], numbers(10)[2]
    digits = "".join(c for c in third if c.isdigit())
    optout.merge(path, [entry(normalise(first, "US").e164 or ""), entry("+1" + digits)], "US")
    plan = build_plan(load_campaign(campaign))
    assert plan.counts()["suppressed"] == 2 and plan.counts()["sendable"] == 8
    assert any(entry.path == path for entry in plan.lists)


def test_check_says_when_the_opt_out_list_does_not_exist_yet(tmp_path: Path) -> None:
    contacts = write_contacts(tmp_path / "contacts.csv", 3)
    campaign = write_campaign(tmp_path, contacts, extra='opt_out_list = "optouts.csv"\n')
    path = tmp_path / "optouts.csv"
    text = run_cli("check", campaign)
    data = json.loads(run_cli("check", campaign, "--json").output)
    assert text.exit_code == 0 and not path.exists()  # check never creates it
    assert (
        "  suppression list optouts.csv: not created yet (the opt-out list: `chertcast sync` creates it "
        "and adds each opt-out it records)\n" in text.output
    )
    assert "0 numbers" not in text.output
    (listed,) = data["suppression_lists"]
    assert listed["file"] == str(path) and listed["numbers"] == 0
    assert listed["exists"] is False and listed["opt_out_list"] is True

    optout.ensure(path)  # what the first `sync` does: the header, no opt-out yet
    text = run_cli("check", campaign)
    assert "  suppression list optouts.csv: no opt-outs yet (the opt-out list `chertcast sync` adds" in text.output
    (listed,) = json.loads(run_cli("check", campaign, "--json").output)["suppression_lists"]
    assert listed["exists"] is True and listed["opt_out_list"] is True and listed["numbers"] == 0

    optout.merge(path, [entry(normalise(numbers(3)[0], "US").e164 or "")], "US")
    (tmp_path / "dnc.txt").write_text(numbers(3)[1] + "\n", encoding="utf-8")
    both = write_campaign(tmp_path, contacts, extra='opt_out_list = "optouts.csv"\nsuppress = ["dnc.txt"]\n')
    text = run_cli("check", both)
    assert "  suppression list dnc.txt: 1 number\n" in text.output
    assert "  suppression list optouts.csv: 1 number, column 'phone'\n" in text.output
    lists = json.loads(run_cli("check", both, "--json").output)["suppression_lists"]
    assert [(item["opt_out_list"], item["exists"], item["numbers"]) for item in lists] == [
        (False, True, 1),
        (True, True, 1),
    ]
