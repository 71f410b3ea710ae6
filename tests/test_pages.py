"""The HTML pages as text: self-contained, escaped, built from the plan and the journal (no browser here;
tests/test_pages_browser.py opens them in Chromium)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs

from chertcast import present
from chertcast.campaign import load_campaign
from chertcast.journal import JournalRow
from chertcast.outlook import CapacityFacts, outlook
from chertcast.pages import preview_page, report_page
from chertcast.pages.report import failures, funnel, sends_per_day
from chertcast.preflight import build_plan
from chertcast.render import bubbles
from chertcast.sync import AfterSend
from tests.helpers import numbers, run_cli, write_campaign

HOSTILE = "<img src=x onerror=alert(1)>"
CLOSER = "</script><script>alert(2)</script>"
DAY = 1_795_000_000.0  # 2026-11-18 09:46 UTC


def hostile_campaign(tmp_path: Path) -> Path:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        "phone,name,note\n"
        f'(212) 555-0100,"{HOSTILE}",plain\n'
        f"(415) 555-0101,Grace,{CLOSER}\n"
        "(415) 555-0101,Grace again,dup\n"
        "n/a,Nobody,x\n",
        encoding="utf-8",
    )
    template = tmp_path / "message.j2"
    template.write_text("Hi {{ name }}\n\n  {{ note }}\nsecond line\n \n\n Bye\n", encoding="utf-8")
    return write_campaign(tmp_path, contacts, template=template, extra='[columns]\nname = "name"\n')


def script_json(page: str, block: str) -> object:
    match = re.search(rf'<script type="application/json" id="{block}">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_preview_page_bubbles_are_chertcasts_own_split_and_cells_cannot_escape(tmp_path: Path) -> None:
    plan = build_plan(load_campaign(hostile_campaign(tmp_path)))
    page = preview_page(plan)
    rows = script_json(page, "rows")
    assert isinstance(rows, list) and len(rows) == len(plan.recipients) == 4
    for recipient, row in zip(plan.recipients, rows, strict=True):
        assert row[0] == recipient.row and row[3] == recipient.status
        assert row[5] == (bubbles(recipient.body) if recipient.body is not None else [])
    assert rows[0][1] == HOSTILE and rows[1][5][1].startswith(CLOSER)  # the data survives, as data
    assert rows[0][5] == [f"Hi {HOSTILE}", "plain\nsecond line", "Bye"]
    assert page.count("</script>") == 2  # the JSON block's and the script's own: no cell closes one
    assert HOSTILE not in page.replace(json.dumps(HOSTILE), "")  # nowhere raw outside escaped JSON
    assert "<img" not in page
    assert [(i.row, i.severity) for i in plan.issues] == [(4, "warning"), (5, "error")]
    assert page.count('class="problem"') == 2 and 'href="#row-5"' in page


def test_pages_fetch_nothing(tmp_path: Path) -> None:
    """No src/href to anything outside the page (plotly.js, inlined whole, holds URLs as strings it
    only uses when asked to), and a policy that forbids the browser to fetch anything."""
    plan = build_plan(load_campaign(hostile_campaign(tmp_path)))
    library = get_plotlyjs()
    for page in (preview_page(plan), report_page(plan, [], DAY)):
        assert "default-src 'none'" in page
        page = page.replace(library, "")
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
        assert "<link" not in page and "@import" not in page


def journal_row(key: str, state: str, **fields: object) -> JournalRow:
    values: dict[str, object] = {
        "key": key,
        "row": 2,
        "phone": "+12125550100",
        "state": state,
        "reason": None,
        "attempts": 1,
        "error_code": None,
        "error_message": None,
        "message_id": None,
        "lead_id": None,
        "lead_created": None,
        "convo_id": None,
        "phone_line_id": None,
        "updated_at": DAY,
    }
    values.update(fields)
    return JournalRow(**values)  # type: ignore[arg-type]


def test_funnel_counts_what_the_journal_knows_and_says_the_rest_is_not_synced() -> None:
    rows = [
        journal_row("a", "sent"),
        journal_row("b", "duplicate"),
        journal_row("c", "failed"),
        journal_row("d", "pending"),
        journal_row("e", "skipped"),
    ]
    stages = funnel(rows)
    assert [(s.name, s.count) for s in stages] == [
        ("planned", 4),
        ("sent", 2),
        ("delivered", None),
        ("read", None),
        ("replied", None),
        ("opted_out", None),
    ]


def test_funnel_fills_the_later_stages_once_the_journal_is_synced() -> None:
    rows = [journal_row("a", "sent"), journal_row("b", "sent"), journal_row("c", "failed"), journal_row("d", "sent")]
    outcomes = {  # as sync.outcomes_by_key gives them
        "a": AfterSend(
            "2026-11-18T10:00:00+00:00", "2026-11-18T10:05:00+00:00", "2026-11-18T11:00:00+00:00", "STOP", "yes"
        ),
        "b": AfterSend("2026-11-18T10:00:00+00:00", "", "", "", ""),
        "d": AfterSend("", "", "2026-11-18T12:00:00+00:00", "I can't stop by", "review"),
    }
    counts = {s.name: s.count for s in funnel(rows, outcomes)}
    # "review" (a reply merely holding a stop word) is not counted as opted out, as in `status`
    assert counts == {"planned": 4, "sent": 3, "delivered": 2, "read": 1, "replied": 2, "opted_out": 1}


def test_sends_per_day_per_line_in_the_campaign_zone_and_first_touches() -> None:
    rows = [
        journal_row("a", "sent", phone_line_id="L1", lead_created=True, updated_at=DAY),
        journal_row("b", "sent", phone_line_id="L1", lead_created=False, updated_at=DAY + 60),
        journal_row("c", "duplicate", phone_line_id="L2", lead_created=True, updated_at=DAY + 86_400),
        journal_row("d", "failed", phone_line_id="L2", updated_at=DAY),
        journal_row("e", "sent", updated_at=DAY - 10 * 3600),  # 23:46 the day before in UTC, 18:46 in New York
    ]
    table = sends_per_day(rows, "America/New_York")
    assert {line: {d.isoformat(): n for d, n in days.items()} for line, days in table.items()} == {
        "(line not known)": {"2026-11-17": (1, 0)},
        "L1": {"2026-11-18": (2, 1)},
        "L2": {"2026-11-19": (1, 1)},
    }


def test_failures_group_by_code_with_their_messages() -> None:
    rows = [
        journal_row("a", "failed", error_code=4098, error_message="Unknown effect: sparkle"),
        journal_row("b", "failed", error_code=4098, error_message="Unknown effect: sparkle"),
        journal_row("c", "failed", error_code=4098, error_message="Unknown effect: boom"),
        journal_row("d", "unknown", error_message="ReadTimeout connecting to https://x"),
        journal_row("e", "sent", error_code=3001, error_message="old retry"),  # delivered after all
    ]
    found = failures(rows)
    assert [(f.label, f.count, f.messages) for f in found] == [
        ("4098", 3, [("Unknown effect: sparkle", 2), ("Unknown effect: boom", 1)]),
        ("no connection", 1, [("ReadTimeout connecting to https://x", 1)]),
    ]


def test_failures_count_messages_that_failed_delivery_after_chert_accepted_them() -> None:
    rows = [journal_row("a", "sent"), journal_row("b", "sent"), journal_row("c", "duplicate"), journal_row("d", "sent")]
    outcomes = {
        "a": AfterSend(delivery="failed", delivery_error="Recipient is not reachable on iMessage"),
        "b": AfterSend(delivery="failed", delivery_error="Recipient is not reachable on iMessage"),
        "c": AfterSend(delivery="failed"),
        "d": AfterSend("2026-11-18T10:00:00+00:00", delivery="delivered"),
    }
    assert failures(rows) == []  # never synced: nothing known to have failed
    found = failures(rows, outcomes)
    assert [(f.label, f.count, f.messages) for f in found] == [
        (
            "sent, then failed delivery",
            3,
            [("Recipient is not reachable on iMessage", 2), ("(Chert gave no reason)", 1)],
        )
    ]


def test_preview_html_cli_writes_the_page_and_guards_the_file(tmp_path: Path) -> None:
    campaign = hostile_campaign(tmp_path)
    page = tmp_path / "preview.html"
    result = run_cli("preview", campaign, "--html", page)
    size = page.stat().st_size if page.exists() else 0
    assert (
        result.exit_code == 0 and result.output == f"wrote the preview of 4 rows to {page} ({round(size / 1e3)} kB)\n"
    )
    assert "Preview of test-campaign" in page.read_text(encoding="utf-8")
    again = run_cli("preview", campaign, "--html", page)
    assert again.exit_code == 2 and "already exists; choose another --html file or add --force" in again.output
    assert run_cli("preview", campaign, "--html", page, "--force").exit_code == 0
    contacts = run_cli("preview", campaign, "--html", tmp_path / "contacts.csv")
    assert contacts.exit_code == 2 and "refusing to write over the campaign's contacts" in contacts.output
    assert "choose another --html file" in contacts.output and "--out" not in contacts.output
    wrong = run_cli("preview", campaign, "--html", tmp_path / "page.txt")
    assert wrong.exit_code == 2 and "must end in .html" in wrong.output
    assert not list(tmp_path.glob(".*partial*"))


def test_report_needs_out_or_html(tmp_path: Path) -> None:
    result = run_cli("report", hostile_campaign(tmp_path))
    assert result.exit_code == 2
    assert result.output.strip() == (
        "chertcast: error: report: give --out FILE.csv (or .xlsx) for the rows, or --html FILE.html for the page"
    )


@pytest.mark.parametrize("capacity", [False, True])
def test_report_page_sections(tmp_path: Path, capacity: bool) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name\n(212) 555-0100,Ada\n(415) 555-0101,Grace\n", encoding="utf-8")
    extra = '[capacity]\nlines = ["L1", "L2"]\nline_daily_cap = 1\n[quiet_hours]\nenabled = false\n'
    campaign = write_campaign(tmp_path, contacts, extra=extra if capacity else "", planned=capacity)
    plan = build_plan(load_campaign(campaign))
    rows = [journal_row(r.key or "", "pending", row=r.row, phone=r.phone) for r in plan.recipients]
    ahead = outlook(plan.campaign, plan.sendable, DAY, CapacityFacts.read(plan.campaign, None, DAY))
    page = report_page(plan, rows, DAY, ahead)
    assert page.count("not synced yet") == 4
    assert "No message has been sent yet." in page and "No row has failed." in page
    table = script_json(page, "rows")
    assert isinstance(table, list) and [cells[2] for cells in table] == ["Ada", "Grace"]
    if capacity:
        assert "2 first-touch sends left on 2 lines: 1 sending day," in page and 'id="chart-calendar"' in page
    else:
        assert "Capacity planning is off" in page and 'id="chart-calendar"' not in page


def test_report_html_needs_a_journal_and_never_writes_over_it(tmp_path: Path) -> None:
    campaign = hostile_campaign(tmp_path)
    page = tmp_path / "report.html"
    missing = run_cli("report", campaign, "--html", page)
    assert missing.exit_code == 2 and not page.exists()
    journal = tmp_path / "campaign.journal.sqlite"
    assert missing.output == f"chertcast: error: {journal}: no journal yet; nothing has been sent for this campaign\n"
    journal.write_bytes(b"")
    refused = run_cli("report", campaign, "--html", journal, "--force")
    assert refused.exit_code == 2 and "refusing to write over the campaign's journal" in refused.output
    assert journal.read_bytes() == b""


def test_report_html_of_the_sandbox_rehearsal_plans_what_that_journal_left(tmp_path: Path) -> None:
    """The calendar counts the journal the page reports on (here the sandbox's), not the campaign's own."""
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name\n" + "\n".join(f"{n},Lead" for n in numbers(5)) + "\n", encoding="utf-8")
    lines = ", ".join(f'"pl_sandbox_line_{i}"' for i in (1, 2, 3))
    extra = f"[capacity]\nlines = [{lines}]\nline_daily_cap = 1\n[quiet_hours]\nenabled = false\n"
    campaign = write_campaign(tmp_path, contacts, extra=extra, planned=True)
    sent = run_cli("send", campaign, "--sandbox", "--yes")
    assert sent.exit_code == 0 and "2 rows remain" in sent.output, sent.output
    page = tmp_path / "report.html"
    assert run_cli("report", campaign, "--sandbox", "--html", page).exit_code == 0
    text = page.read_text(encoding="utf-8")
    assert "2 first-touch sends left on 3 lines: 1 sending day, expected finish" in text
    headers, _ = present.report_rows(build_plan(load_campaign(campaign)), [], None)
    state = headers.index("state")
    assert [cells[state] for cells in script_json(text, "rows")] == ["sent"] * 3 + ["pending"] * 2  # type: ignore[union-attr,index]
