"""Fast reruns (chertcast.rerun): a rerun with unchanged inputs reuses the journal's stored
check, gives exactly what a full check would, and any changed input means a full check."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

import chertcast
from chertcast import Endpoint, Secret, SendOptions, optout, present, rerun, runner
from chertcast.campaign import load_campaign
from chertcast.errors import JournalError
from chertcast.journal import Journal
from chertcast.phones import normalise
from chertcast.preflight import build_plan
from chertcast.sandbox import DEFAULT_SECRET, SandboxModel, SandboxServer, sandbox_transport
from tests.helpers import numbers, run_process, write_campaign

ROWS = [
    *(f"{n},Lead {i},gold" for i, n in enumerate(numbers(14))),
    "n/a,Bad Number,gold",  # error: not a phone number
    f"{numbers(1)[0]},Repeat,gold",  # duplicate of the first row
    "+18005550199,Toll Free,gold",  # warning: toll-free
    f"{numbers(15)[14]},,gold",  # error: empty name cell
    f"{numbers(16)[15]},Opted Out,gold",  # suppressed
]


@dataclass
class Setup:
    campaign: Path
    contacts: Path
    template: Path
    footer: Path
    optouts: Path
    attachment: Path
    journal: Path
    rows: int = len(ROWS)
    phones: int = 1  # phone columns


def multi_phone_rows() -> list[str]:
    """A sheet with two phone columns, tried in order per row: Mobile, then Work Phone."""
    n = numbers(40)
    return [
        *(f"{n[i]},{n[20 + i]},Lead {i},gold" for i in range(8)),  # the mobile wins
        f",{n[10]},Desk Only,gold",  # no mobile: the work number
        f",{n[11]},Desk Two,silver",
        f"n/a,{n[12]},Skipped Mobile,gold",  # warning: a filled mobile passed over
        ",,Nobody,gold",  # error: every phone cell empty
        f",{n[0]},Dup Via Work,gold",  # duplicate of the first row, through the other column
        f"{n[13]},,,gold",  # error: empty name cell
        f",{n[15]},Opted Out,gold",  # suppressed, through the work column
    ]


def make(tmp_path: Path, *, phones: int = 1, opt_out_list: bool = False) -> Setup:
    contacts = tmp_path / "contacts.csv"
    rows = ROWS if phones == 1 else multi_phone_rows()
    header = "Phone,Name,Tier" if phones == 1 else "Mobile,Work Phone,Name,Tier"
    contacts.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    template = tmp_path / "message.j2"
    template.write_text("Hi {{ name }}, {{ tier }} news.{% include 'footer.j2' %}", encoding="utf-8")
    footer = tmp_path / "footer.j2"
    footer.write_text(" Reply STOP to opt out.", encoding="utf-8")
    optouts = tmp_path / "optouts.txt"
    optouts.write_text(f"{numbers(16)[15]}\n", encoding="utf-8")
    attachment = tmp_path / "card.png"
    attachment.write_bytes(b"\x89PNG card v1")
    extra = f'suppress = ["{optouts.as_posix()}"]\n'
    if opt_out_list:  # written by `sync`, absent until its first opt-out
        extra += 'opt_out_list = "shared/optouts.csv"\n'
    if phones > 1:
        extra += '[columns]\nphone = ["Mobile", "Work Phone"]\n'
    extra += '[send]\nattachments = ["card.png"]\n'
    campaign = write_campaign(tmp_path, contacts, template=template, body=None, extra=extra)
    journal = tmp_path / "j.sqlite"
    return Setup(campaign, contacts, template, footer, optouts, attachment, journal, len(rows), phones)


def prepare(setup: Setup, journal: Path | None = None, **options: object) -> runner.Prepared:
    prepared = runner.prepare(setup.campaign, runner.SendOptions(journal=journal or setup.journal, **options))  # type: ignore[arg-type]
    prepared.release()
    return prepared


def full_check_copy(setup: Setup, name: str) -> Path:
    """A copy of the journal without its stored check: prepare() on it runs the full check."""
    copy = setup.journal.with_name(name)
    with sqlite3.connect(setup.journal) as source, sqlite3.connect(copy) as target:
        source.backup(target)  # with what is still in the WAL
    with sqlite3.connect(copy) as db:
        db.execute("DELETE FROM input_fingerprint")
    return copy


def journal_rows(path: Path) -> list[tuple[object, ...]]:
    """Everything a sync decides, per row (timestamps aside)."""
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT key, row, phone, body_hash, state, reason, attempts, maybe_delivered, timezone "
            "FROM recipients ORDER BY key"
        ).fetchall()


def history(path: Path) -> None:
    """Rows in every state a rerun meets: sent, failed, in flight (maybe delivered), pending."""
    with sqlite3.connect(path) as db:
        keys = [k for (k,) in db.execute("SELECT key FROM recipients WHERE state = 'pending' ORDER BY row")]
        db.executemany("UPDATE recipients SET state = 'sent', attempts = 1 WHERE key = ?", [(k,) for k in keys[:4]])
        db.execute("UPDATE recipients SET state = 'failed', attempts = 2 WHERE key = ?", (keys[4],))
        db.execute("UPDATE recipients SET state = 'sending', attempts = 1 WHERE key = ?", (keys[5],))
        db.execute(
            "UPDATE recipients SET state = 'unknown', attempts = 3, maybe_delivered = 1 WHERE key = ?", (keys[6],)
        )


def assert_same(reused: runner.Prepared, full: runner.Prepared, rows: int = len(ROWS)) -> None:
    assert reused.reused_check and not full.reused_check
    assert full.plan is not None
    assert reused.to_send == full.to_send
    assert (reused.already_done, reused.new_rows, reused.kept_original) == (
        full.already_done,
        full.new_rows,
        full.kept_original,
    )
    assert reused.status_counts == full.status_counts == full.plan.counts()
    assert reused.rows_read == full.rows_read == rows


SHEETS = {"one phone column": 1, "two phone columns": 2}


@pytest.mark.parametrize("sheet", SHEETS)
@pytest.mark.parametrize("options", [{}, {"retry_failed": True}, {"limit": 3}, {"dry_run": True}])
def test_an_unchanged_rerun_gives_exactly_what_a_full_check_gives(
    tmp_path: Path, options: dict[str, object], sheet: str
) -> None:
    setup = make(tmp_path, phones=SHEETS[sheet])
    first = prepare(setup)
    assert not first.reused_check and first.plan is not None  # no stored check yet
    history(setup.journal)
    copy = full_check_copy(setup, "full.sqlite")
    reused = prepare(setup, **options)
    full = prepare(setup, copy, **options)
    assert_same(reused, full, setup.rows)
    assert journal_rows(setup.journal) == journal_rows(copy)  # the same writes (none on a dry run)
    if setup.phones > 1 and "limit" not in options:  # each row's phone column comes back from the journal
        assert {r.phone_column for r in reused.to_send} == {"Mobile", "Work Phone"}


def test_a_changed_message_is_refused_alike_on_both_paths(tmp_path: Path) -> None:
    setup = make(tmp_path)
    prepare(setup)
    with sqlite3.connect(setup.journal) as db:  # row 2 failed with another text; row 3 may have been delivered
        db.execute("UPDATE recipients SET state = 'failed', attempts = 1, body_hash = 'old' WHERE row = 2")
        db.execute(
            "UPDATE recipients SET state = 'unknown', attempts = 1, maybe_delivered = 1, body_hash = 'old' "
            "WHERE row = 3"
        )
    copy = full_check_copy(setup, "full.sqlite")
    with pytest.raises(JournalError) as refused:
        prepare(setup, retry_failed=True)
    with pytest.raises(JournalError) as refused_full:
        prepare(setup, copy, retry_failed=True)
    assert str(refused.value) == str(refused_full.value)
    assert "sheet rows 2, 3" in str(refused.value) and "1 of them may already have been delivered" in str(refused.value)
    reused = prepare(setup, retry_failed=True, allow_changes=True)
    full = prepare(setup, copy, retry_failed=True, allow_changes=True)
    assert_same(reused, full)
    assert reused.kept_original == 1
    assert journal_rows(setup.journal) == journal_rows(copy)


def edit_cell(setup: Setup) -> str:
    setup.contacts.write_text(setup.contacts.read_text().replace("Lead 3,", "Leader 3,"), encoding="utf-8")
    return "Hi Leader 3, gold news."


def edit_template(setup: Setup) -> str:
    setup.template.write_text(setup.template.read_text().replace("news", "offers"), encoding="utf-8")
    return "Hi Lead 3, gold offers."


def edit_included_file(setup: Setup) -> str:
    setup.footer.write_text(" Text STOP to opt out.", encoding="utf-8")
    return "gold news. Text STOP"


def edit_campaign(setup: Setup) -> str:
    text = setup.campaign.read_text().replace("[send]\n", "[send]\neffect = 'confetti'\n")
    setup.campaign.write_text(text, encoding="utf-8")
    return "confetti"


EDITS = {"sheet cell": edit_cell, "template": edit_template, "included file": edit_included_file}
EDITS["campaign file"] = edit_campaign


@pytest.mark.parametrize("edit", EDITS)
def test_each_changed_input_is_noticed(tmp_path: Path, edit: str) -> None:
    setup = make(tmp_path)
    prepare(setup)
    assert prepare(setup).reused_check
    expected = EDITS[edit](setup)
    changed = prepare(setup)
    assert not changed.reused_check
    assert any(expected in f"{r.body} {r.effect}" for r in changed.to_send)
    again = prepare(setup)  # the new check is stored in turn
    assert again.reused_check and again.to_send == changed.to_send


def test_a_changed_suppression_list_or_attachment_is_noticed(tmp_path: Path) -> None:
    setup = make(tmp_path)
    prepare(setup)
    lead = numbers(3)[2]
    setup.optouts.write_text(setup.optouts.read_text() + f"{lead}\n", encoding="utf-8")
    suppressed = prepare(setup)
    assert not suppressed.reused_check
    assert suppressed.status_counts["suppressed"] == 2 and all(r.raw_phone != lead for r in suppressed.to_send)
    assert prepare(setup).reused_check
    setup.attachment.write_bytes(b"\x89PNG card v2")  # same path, new content: a new message
    with sqlite3.connect(setup.journal) as db:  # row 2 was attempted with the old card
        db.execute("UPDATE recipients SET state = 'failed', attempts = 1 WHERE row = 2")
    with pytest.raises(JournalError, match="changed since it was attempted"):
        prepare(setup, retry_failed=True)


def edit_rows(setup: Setup) -> None:
    """Several edits at once: a changed cell, a row inserted above (every later row moves), a row
    deleted, a new number, a new duplicate, a name emptied."""
    lines = setup.contacts.read_text().splitlines()
    lines[4] = lines[4].replace("Lead 3,", "Leader 3,")
    lines[6] = lines[6].replace("Lead 5,", ",")
    del lines[8]
    if setup.phones > 1:  # Lead 2's mobile emptied: its work number is used (same name and tier)
        lines[3] = "," + lines[3].split(",", 1)[1]
        skipped = next(i for i, line in enumerate(lines) if line.startswith("n/a,"))
        lines[skipped] = f"n/a,{numbers(40)[38]},Skipped Mobile,gold"  # a new work number behind the same mobile
    gap = "," * (setup.phones - 1)  # the other phone columns left empty
    lines.insert(1, f"{numbers(40)[39]},{gap}Newcomer,silver")
    lines.append(f"{numbers(2)[1]},{gap}Lead 1 again,gold")
    setup.contacts.write_text("\n".join(lines) + "\n", encoding="utf-8")


RANDOM = "{{ ['Hi', 'Hello', 'Hey'] | random }} {{ name }}, {{ tier }} news."


# Rows re-rendered: Leader 3, Newcomer, "Lead 1 again"; the emptied name renders like the row
# with an empty name (same name and tier), unless `| random` makes the phone cells inputs too
# (with two phone columns, Lead 2's emptied mobile and a new work number behind an unusable
# mobile then change their inputs as well).
@pytest.mark.parametrize(
    ("body", "phones", "rechecked"),
    [(None, 1, 3), (RANDOM, 1, 4), ("Hello from us.", 1, 0), (None, 2, 3), (RANDOM, 2, 6), ("Hello from us.", 2, 0)],
)
def test_a_changed_sheet_rechecks_only_changed_rows_and_matches_a_full_check(
    tmp_path: Path, body: str | None, phones: int, rechecked: int
) -> None:
    setup = make(tmp_path, phones=phones)
    if body is not None:  # variation seeded by each recipient's key: the phone cell is a render input
        text = setup.campaign.read_text().replace(f'template = "{setup.template.as_posix()}"', f'body = "{body}"')
        setup.campaign.write_text(text, encoding="utf-8")
    prepare(setup)
    history(setup.journal)
    edit_rows(setup)
    campaign = load_campaign(setup.campaign)
    print_ = rerun.fingerprint(campaign, None)
    assert print_ is not None
    with Journal(setup.journal, campaign.id) as journal:
        assert rerun.reuse(journal, print_) is None  # the sheet changed: the stored check cannot serve
        earlier = rerun.earlier_work(journal, print_)
    assert earlier is not None
    partial = build_plan(campaign, earlier=earlier, keep_work=True)
    full = build_plan(campaign)
    assert partial.recipients == full.recipients
    assert partial.issues == full.issues and partial.notes == full.notes
    assert partial.exit_code() == full.exit_code() == 1
    assert partial.work is not None and partial.work.reused == len(partial.recipients) - rechecked
    copy = full_check_copy(setup, "full.sqlite")
    incremental, whole = prepare(setup), prepare(setup, copy)
    assert incremental.plan is not None and incremental.rows_reused == len(incremental.plan.recipients) - rechecked
    assert incremental.to_send == whole.to_send
    assert (incremental.already_done, incremental.new_rows) == (whole.already_done, whole.new_rows)
    assert journal_rows(setup.journal) == journal_rows(copy)
    assert prepare(setup).reused_check  # and the next run reuses the new check


def test_a_stored_check_that_disagrees_with_the_journal_is_not_used(tmp_path: Path) -> None:
    setup = make(tmp_path)
    prepare(setup)
    with sqlite3.connect(setup.journal) as db:  # a row removed behind chertcast's back
        db.execute("DELETE FROM recipients WHERE row = 2")
    rerun = prepare(setup)
    assert not rerun.reused_check and rerun.new_rows == 1  # the full check put it back


def test_a_journal_without_stored_check_tables_is_checked_in_full(tmp_path: Path) -> None:
    """A journal from before stored checks (migration 3), opened read-only by a dry run, then
    upgraded by a real run, whose check the next run reuses."""
    setup = make(tmp_path)
    prepare(setup)
    with sqlite3.connect(setup.journal) as db:
        for table in ("input_fingerprint", "check_result", "check_sendable", "check_work"):
            db.execute(f"DROP TABLE {table}")
        db.execute("DELETE FROM chertcast_migrations WHERE name = 'stored_check_for_fast_reruns'")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    dry = prepare(setup, dry_run=True)
    real = prepare(setup)
    assert not dry.reused_check and not real.reused_check and len(dry.to_send) == len(real.to_send)
    assert prepare(setup).reused_check


def test_rows_naming_their_own_attachments_are_always_checked_in_full(tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("Phone,Name,Files\n" + f"{numbers(1)[0]},Ann,att_1\n", encoding="utf-8")
    path = write_campaign(tmp_path, contacts, extra="[columns]\nattachments = 'Files'\n")
    setup = Setup(path, contacts, path, path, path, path, tmp_path / "j.sqlite")
    prepare(setup)
    assert not prepare(setup).reused_check


def test_cron_rerun_over_loopback_says_it_reused_the_check(tmp_path: Path) -> None:
    setup = make(tmp_path)
    with SandboxServer() as server:
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        args = ("send", setup.campaign, "--yes", "--limit", "4")
        first = run_process(*args, env=env)
        second = run_process(*args, env=env)
        edit_cell(setup)
        third = run_process(*args, env=env)
        dry = run_process("send", setup.campaign, "--dry-run", "--json", env=env)  # reuses the third's check
        page = run_process("report", setup.campaign, "--html", tmp_path / "report.html", env=env)
        requests = server.model.stats()["requests"]
    assert dry.returncode == 0 and json.loads(dry.stdout)["to_send"] == 3, dry.stderr
    assert "check is reused" in dry.stderr
    assert page.returncode == 0 and "test-campaign" in (tmp_path / "report.html").read_text(), page.stderr
    assert [first.returncode, second.returncode, third.returncode] == [0, 0, 0], third.stderr
    assert "check is reused" not in first.stdout and "check is reused" in second.stdout
    assert "campaign test-campaign: 4 to send now, 4 already done, 4 rows not sendable" in second.stdout
    assert "check is reused" not in third.stdout and "8 already done" in third.stdout
    assert "only the sheet changed since the last run: 1 row re-checked" in third.stdout
    assert requests == 12  # 4 messages a run
    with Journal(tmp_path / "campaign.journal.sqlite", "test-campaign", readonly=True) as journal:
        assert journal.counts()["sent"] == 12


def test_an_opt_out_added_after_a_run_is_not_sent_on_the_fast_path(tmp_path: Path) -> None:
    """`sync` appends to the opt-out list between cron runs: the next send honours it, exactly as
    a full check would (its numbers and messages still reused), and so do the runs after it."""
    setup = make(tmp_path, opt_out_list=True)
    prepare(setup)
    assert prepare(setup).reused_check  # no opt-out list yet: the fast path
    lead = normalise(numbers(3)[2], "US").e164
    assert lead is not None and lead in {r.phone for r in prepare(setup).to_send}
    listed = tmp_path / "shared" / "optouts.csv"
    optout.ensure(listed)
    optout.merge(listed, [optout.Entry(lead, 0.0, "other-campaign", "STOP", False)], "US")
    copy = full_check_copy(setup, "full.sqlite")
    after, full = prepare(setup), prepare(setup, copy)
    assert not after.reused_check and after.rows_reused == after.rows_read == len(ROWS)  # nothing re-parsed
    assert lead not in {r.phone for r in after.to_send} and after.status_counts["suppressed"] == 2
    assert after.to_send == full.to_send and after.status_counts == full.status_counts
    assert journal_rows(setup.journal) == journal_rows(copy)  # its pending row dropped alike
    header = " ".join(present.send_header(after, SendOptions()))
    assert "the opt-out list (optouts.csv) changed since the last run: every row re-checked, 0 rows parsed" in header
    again = prepare(setup)
    assert again.reused_check and again.to_send == after.to_send and lead not in {r.phone for r in again.to_send}


def test_the_library_api_with_a_reused_check(tmp_path: Path) -> None:
    """api.send (real and dry) and the send header when the plan is the journal's stored check."""
    setup = make(tmp_path, phones=2)
    model = SandboxModel()
    endpoint = Endpoint("http://sandbox.invalid/api/v1", Secret(DEFAULT_SECRET), transport=sandbox_transport(model))
    options = SendOptions(journal=setup.journal, handle_signals=False, limit=3)
    first = chertcast.send(setup.campaign, endpoint=endpoint, options=options)
    assert first.exit_code == 0 and not first.prepared.reused_check and len(model.deliveries()) == 3
    headers: list[list[str]] = []

    def on_plan(prepared: runner.Prepared) -> bool:
        headers.append(present.send_header(prepared, options))
        return True

    dry_options = SendOptions(journal=setup.journal, dry_run=True)
    dry = chertcast.send(setup.campaign, options=dry_options, on_plan=on_plan)
    assert dry.prepared.reused_check and dry.prepared.plan is None and dry.result is None
    data = dry.as_json()
    assert data["dry_run"] and data["to_send"] == len(dry.prepared.to_send) and json.dumps(data)
    second = chertcast.send(setup.campaign, endpoint=endpoint, options=options, on_plan=on_plan)
    assert second.prepared.reused_check and second.exit_code == 0 and second.as_json()["sent"] == 3
    assert len({d.phone for d in model.deliveries()}) == 6  # exactly once across the runs
    assert all("check is reused" in " ".join(lines) for lines in headers) and len(headers) == 2
    assert "6 already done" not in " ".join(headers[1]) and "3 already done" in " ".join(headers[1])
