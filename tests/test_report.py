"""`report` joins outcomes to people by key, against a loopback sandbox: re-sorted sheets, newly
suppressed numbers and removed rows never move a message_id onto someone else."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from chertcast.sandbox import DEFAULT_SECRET, SandboxServer
from tests.helpers import assert_journal_matches_ledger, numbers, run_cli, run_process, write_campaign

NAMES = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Edsger"]


def env_for(server: SandboxServer) -> dict[str, str]:
    return {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def test_report_of_a_resorted_sheet_with_a_new_suppression_and_a_removed_row(tmp_path: Path) -> None:
    phones = numbers(len(NAMES))
    rows = [f"{phone},{name}" for phone, name in zip(phones, NAMES, strict=True)]
    rows.append(f"{phones[2].replace('(', '').replace(') ', '-')},Linus")  # Linus again, written otherwise
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name\n" + "\n".join(rows) + "\n")
    campaign = write_campaign(tmp_path, contacts, body="Hi {{ name }}", extra='suppress = ["optout.txt"]\n')
    (tmp_path / "optout.txt").write_text("+447400123456\n")  # someone not in the sheet: an empty list is refused
    with SandboxServer() as server:
        first = run_process("send", campaign, "--yes", env=env_for(server))
        assert first.returncode == 0, first.stdout + first.stderr
        ledger = {d.message_id: d for d in server.model.deliveries()}
        # re-sort (reverse), suppress Grace after she was messaged, and drop Alan from the sheet
        kept = [r for r in rows if not r.endswith(",Alan")]
        contacts.write_text("phone,name\n" + "\n".join(reversed(kept)) + "\n")
        (tmp_path / "optout.txt").write_text(phones[1] + "\n")
        check_report(campaign, tmp_path / "before.csv", ledger)  # straight after the edit
        again = run_process("send", campaign, "--yes", env=env_for(server))
        assert again.returncode == 0 and "Nothing left to send" in again.stdout, again.stdout + again.stderr
        assert len(server.model.deliveries()) == 7
        assert_journal_matches_ledger(
            tmp_path / "campaign.journal.sqlite", "test-campaign", server.model.deliveries(), settled=True
        )
    status = json.loads(run_cli("status", campaign, "--json").output)
    assert (status["total"], status["sent"], status["skipped"]) == (8, 7, 1)  # 7 people + Linus's second row
    check_report(campaign, tmp_path / "after.csv", ledger)  # and after a send synced the journal


def check_report(campaign: Path, out: Path, ledger: dict[str, Any]) -> None:
    assert run_cli("report", campaign, "--out", out).exit_code == 0
    report = read_report(out)
    assert len(report) == 8  # the 7 sheet rows, then Alan from the journal
    for line in report:
        if line["message_id"]:
            delivery = ledger[line["message_id"]]
            assert delivery.phone == line["e164_phone"].lstrip("'")
            assert delivery.body == f"Hi {line['name'] or 'Alan'}", line
    by_name = {line["name"]: line for line in report if line["name"]}
    assert by_name["Grace"]["state"] == "sent" and by_name["Grace"]["note"] == "now suppressed (on a suppression list)"
    assert by_name["Ada"]["row"] == "8"  # last of the 7 rows kept, reversed
    alan = report[-1]
    assert (alan["row"], alan["name"], alan["state"]) == ("", "", "sent")
    assert alan["e164_phone"] == ledger[alan["message_id"]].phone and alan["note"].startswith("not in the sheet")
    linus = [line for line in report if line["name"] == "Linus"]
    assert sorted(line["state"] for line in linus) == ["sent", "skipped"]
    assert sum(bool(line["message_id"]) for line in report) == 7


def test_report_only_filters_on_the_outcome_not_a_sheet_column_called_state(tmp_path: Path) -> None:
    phones = numbers(4)
    contacts = tmp_path / "contacts.csv"
    lines = [
        f"{phone},{'failed' if i != 2 else 'sent'},{'sparkle' if i == 2 else ''}" for i, phone in enumerate(phones)
    ]
    contacts.write_text("phone,state,fx\n" + "\n".join(lines) + "\n")
    campaign = write_campaign(tmp_path, contacts, body="Hi", extra='[columns]\neffect = "fx"\n')
    with SandboxServer() as server:
        result = run_process("send", campaign, "--yes", env=env_for(server))
    assert result.returncode == 1, result.stdout + result.stderr
    out = tmp_path / "failed.csv"
    assert run_cli("report", campaign, "--only", "failed", "--out", out).exit_code == 0
    with out.open(encoding="utf-8-sig", newline="") as handle:
        header, *body = list(csv.reader(handle))
    assert header[:3] == ["row", "phone", "state"] and header.count("state") == 2
    assert [(r[0], r[2], r[5], r[7]) for r in body] == [("4", "sent", "failed", "4098")]
