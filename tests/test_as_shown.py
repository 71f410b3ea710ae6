"""Issue 10: read exactly what the user sees in their files — or stop and say why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chertcast.campaign import load_campaign
from chertcast.contacts import load_sheet
from chertcast.errors import InputError
from chertcast.preflight import build_plan
from tests.conftest import DATA
from tests.helpers import run_cli, write_campaign

SHOWN = DATA / "shown"


def _contacts(tmp_path: Path) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text("phone,name\n4155550109,Ann\n4155550110,Bob\n4155550111,Cy\n")
    return path


# 1. Suppression lists


def test_list_number_column_found_by_its_header_not_its_position(tmp_path: Path) -> None:
    extra = f'suppress = ["{(SHOWN / "optouts_msisdn.csv").as_posix()}"]\n'
    plan = build_plan(load_campaign(write_campaign(tmp_path, _contacts(tmp_path), body="Hi", extra=extra)))
    assert [r.status for r in plan.recipients] == ["suppressed", "sendable", "suppressed"]
    assert plan.lists[0].column == "MSISDN"
    assert plan.exit_code() == 0


def test_list_without_a_number_column_is_a_campaign_error(tmp_path: Path) -> None:
    optouts = tmp_path / "optouts.csv"
    optouts.write_text("Opted out on,Reference\n2026-01-05,+14155550109\n")
    campaign = write_campaign(tmp_path, _contacts(tmp_path), body="Hi", extra='suppress = ["optouts.csv"]\n')
    result = run_cli("check", campaign)
    assert result.exit_code == 2
    assert "optouts.csv: suppression list has no phone column" in result.output
    assert "'Opted out on', 'Reference'" in result.output


def test_list_yielding_no_number_is_a_campaign_error(tmp_path: Path) -> None:
    extra = f'suppress = ["{(SHOWN / "optouts_nothing.csv").as_posix()}"]\n'
    result = run_cli("check", write_campaign(tmp_path, _contacts(tmp_path), body="Hi", extra=extra))
    assert result.exit_code == 2
    assert "optouts_nothing.csv: suppression list yielded no phone number" in result.output


def test_unreadable_list_lines_are_reported_in_text_and_json(tmp_path: Path) -> None:
    extra = f'suppress = ["{(SHOWN / "optouts_mixed.csv").as_posix()}"]\n'
    campaign = write_campaign(tmp_path, _contacts(tmp_path), body="Hi", extra=extra)
    result = run_cli("check", campaign)
    assert result.exit_code == 1  # not clean: two opt-outs could not be applied
    assert "optouts_mixed.csv: 3 numbers, column 'Phone', 2 lines unreadable (lines 3, 5)" in result.output
    assert "line 3: '07400 123456' is too long for region US; this opt-out is not applied" in result.output
    # the list's lines are not sheet rows: counted apart from the rows' problems
    assert "  errors             0 rows (0 problems), and 2 unreadable suppression-list lines\n" in result.output
    data = json.loads(run_cli("check", campaign, "--json").output)
    (entry,) = data["suppression_lists"]
    assert entry["numbers"] == 3
    assert [u["line"] for u in entry["unreadable"]] == [3, 5]


def test_list_entries_match_however_either_side_was_written(tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,name\n+44 7400 123456,Ann\n(415) 555-0111,Bob\n")
    (tmp_path / "optouts.txt").write_text("447400123456\n+1-415-555-0111\n")
    campaign = write_campaign(tmp_path, contacts, body="Hi", extra='suppress = ["optouts.txt"]\n')
    plan = build_plan(load_campaign(campaign))
    assert [r.status for r in plan.recipients] == ["suppressed", "suppressed"]


# 2. Which sheet


def test_hidden_first_sheet_is_not_read_the_active_visible_one_is(tmp_path: Path) -> None:
    sheet = load_sheet(SHOWN / "hidden_first_sheet.xlsx")
    assert sheet.sheet_name == "Leads"
    assert sheet.column(1) == ["New lead"]
    result = run_cli("check", write_campaign(tmp_path, SHOWN / "hidden_first_sheet.xlsx", body="Hi"))
    assert "hidden_first_sheet.xlsx (sheet 'Leads'), 1 row read" in result.output


def test_sheet_names_match_ignoring_case_and_unknown_lists_the_sheets() -> None:
    assert load_sheet(SHOWN / "hidden_first_sheet.xlsx", sheet="old LIST 2024").column(1) == ["Old lead"]
    with pytest.raises(
        InputError, match=r"no sheet named 'Contacts'; the workbook's sheets: 'Old list 2024' \(hidden\), 'Leads'"
    ):
        load_sheet(SHOWN / "hidden_first_sheet.xlsx", sheet="Contacts")


# 3. Rows with more cells than the header


def test_rows_with_more_cells_than_the_header_are_row_errors(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, SHOWN / "ragged.csv", body="Hi {{ name }} from {{ company }}")
    plan = build_plan(load_campaign(campaign))
    assert [r.status for r in plan.recipients] == ["error", "sendable"]
    (issue,) = [i for i in plan.issues if i.code == "row_extra_cells"]
    assert issue.row == 2
    assert "this row has 5 cells but the header has 4" in issue.message


def test_trailing_empty_cells_are_not_extra_cells(tmp_path: Path) -> None:
    path = tmp_path / "trailing.csv"
    path.write_text("phone,name\n4155550160,Ann,,\n" + "4155550161,Bob,x,y,z,1,2,3,4,5,6,7\n")
    sheet = load_sheet(path)
    assert list(sheet.row_problems) == [3]
    assert "at least 10 cells" in sheet.row_problems[3][1]


# 6. Column names that are also Jinja globals


@pytest.mark.parametrize("header", ["Range", "dict", "lipsum", "cycler", "joiner", "namespace"])
def test_columns_named_like_jinja_globals_are_columns(tmp_path: Path, header: str) -> None:
    contacts = tmp_path / "globals.csv"
    contacts.write_text(f"phone,{header}\n4155550170,Gold\n4155550171,\n")
    name = header.lower()
    plan = build_plan(load_campaign(write_campaign(tmp_path, contacts, body=f"Plan: {{{{ {name} }}}}")))
    assert plan.recipients[0].body == "Plan: Gold"
    assert plan.recipients[1].status == "error"
    assert "0x" not in plan.recipients[1].reason and "<" not in plan.recipients[1].reason
    assert f"{{{{ {name} }}}} but this row's cell is empty" in plan.recipients[1].reason


def test_a_python_repr_is_never_a_message(tmp_path: Path) -> None:
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone,name\n4155550172,ann\n")
    plan = build_plan(load_campaign(write_campaign(tmp_path, contacts, body="Hi {{ name.upper }}")))
    (recipient,) = plan.recipients
    assert recipient.status == "error" and recipient.body is None
    assert "printed a Python object" in recipient.reason


# 7. `| random` is deterministic per recipient


def test_random_is_seeded_by_the_recipient_key(tmp_path: Path) -> None:
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone\n" + "\n".join(f"41555501{i:02d}" for i in range(40)) + "\n")
    body = "{{ ['Hi', 'Hello', 'Hey', 'Howdy'] | random }} there"
    campaign = write_campaign(tmp_path, contacts, body=body)
    first = {r.key: r.body for r in build_plan(load_campaign(campaign)).recipients}
    contacts.write_text("phone\n" + "\n".join(f"(415) 555-01{i:02d}" for i in reversed(range(40))) + "\n")
    again = {r.key: r.body for r in build_plan(load_campaign(campaign)).recipients}
    assert first == again  # re-sorted and reformatted: every recipient keeps their variant
    assert len(set(first.values())) > 1  # and it still varies across recipients
    preview = run_cli("preview", campaign, "--rows", "1").output
    one = build_plan(load_campaign(campaign)).sendable[0]
    assert f"│ {one.body}" in preview


def test_lipsum_which_cannot_be_made_deterministic_is_refused(tmp_path: Path) -> None:
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone\n4155550172\n")
    result = run_cli("check", write_campaign(tmp_path, contacts, body="Hi {{ lipsum(1) }}"))
    assert result.exit_code == 2
    assert "lipsum() writes different random text on every run" in result.output


def test_globals_that_are_not_columns_still_work(tmp_path: Path) -> None:
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone\n4155550172\n")
    plan = build_plan(
        load_campaign(write_campaign(tmp_path, contacts, body="{% for i in range(3) %}{{ i }}{% endfor %}"))
    )
    assert plan.recipients[0].body == "012"


@pytest.mark.parametrize("name", ["range", "dict", "cycler", "joiner", "namespace"])
def test_a_global_printed_bare_without_its_column_stops_the_campaign(tmp_path: Path, name: str) -> None:
    """`{{ range }}` with no Range column is a missing column, not a function to print on every row."""
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone,first\n4155550172,Ann\n")
    result = run_cli("check", write_campaign(tmp_path, contacts, body=f"Hi {{{{ {name} }}}} {{{{ first }}}}"))
    assert result.exit_code == 2
    assert f"template variable {name} is not a column of c.csv" in result.output


# 11. Never write over an input


def test_out_refuses_every_campaign_input_and_existing_files(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Phone", "Name"])
    sheet.append(["4155550180", "Ann"])
    contacts = tmp_path / "contacts.xlsx"
    book.save(contacts)
    (tmp_path / "optouts.csv").write_text("Phone\n4155550181\n")
    campaign = write_campaign(tmp_path, contacts, extra='suppress = ["optouts.csv"]\n')
    original = contacts.read_bytes()
    for target in (contacts, tmp_path / "optouts.csv", campaign, tmp_path / "campaign.journal.sqlite"):
        for command in ("preview", "report"):
            result = run_cli(command, campaign, "--out", target, "--force")
            assert result.exit_code == 2, (command, target)
            assert "refusing to write over the campaign's" in result.output
    assert contacts.read_bytes() == original
    assert not (tmp_path / "campaign.journal.sqlite").exists()
    out = tmp_path / "preview.csv"
    assert run_cli("preview", campaign, "--out", out).exit_code == 0
    again = run_cli("preview", campaign, "--out", out)
    assert again.exit_code == 2 and "already exists; choose another --out file or add --force" in again.output
    assert run_cli("preview", campaign, "--out", out, "--force").exit_code == 0


# 5. XLSX cells as shown


def test_xlsx_cells_render_as_their_number_format_shows_them(tmp_path: Path) -> None:
    body = "{{ renewal }} {{ discount }} {{ balance }} {{ zip }} {{ euro }}"
    plan = build_plan(load_campaign(write_campaign(tmp_path, SHOWN / "formats.xlsx", body=body)))
    assert [r.body for r in plan.recipients] == [
        "15/03/2026 15.0% $1,234.50 02139 99.90 €",
        "01/12/2026 7.5% -$20.00 00501 0.00 €",
        "n/a none TBD n/a -",  # text typed into formatted columns stays text
    ]


def test_shared_strings_in_formatted_columns_are_never_formatted_as_numbers() -> None:
    from chertcast.contacts import _styled_cells

    cells = _styled_cells([1])
    assert cells.findall(b'<c r="B4" s="1" t="s"><v>0</v></c>') == []
    assert cells.findall(b'<c r="B4" t="s" s="1"><v>0</v></c>') == []
    assert cells.findall(b'<c r="B4" s="1" t="b"><v>1</v></c>') == []
    assert cells.findall(b'<x:c r="B4" s="1"><x:v>46096</x:v></x:c>') == [(b"B", b"4", b"1", b"46096")]
    assert cells.findall(b'<c r="B4" s="1" t="n"><f>A1</f><v>2</v></c>') == [(b"B", b"4", b"1", b"2")]


@pytest.mark.parametrize("column", ["signed", "score"])
def test_formats_that_cannot_be_reproduced_stop_the_rows_that_use_them(tmp_path: Path, column: str) -> None:
    plan = build_plan(load_campaign(write_campaign(tmp_path, SHOWN / "formats.xlsx", body=f"{{{{ {column} }}}}")))
    assert [r.status for r in plan.recipients] == ["error", "error", "sendable"]
    assert all(i.code == "cell_format_unknown" for i in plan.issues)
    assert "cannot reproduce exactly" in plan.recipients[0].reason
    # a column the template does not use does not matter
    other = build_plan(load_campaign(write_campaign(tmp_path, SHOWN / "formats.xlsx", body="{{ zip }}")))
    assert [r.status for r in other.recipients] == ["sendable", "sendable", "sendable"]


@pytest.mark.parametrize(
    ("value", "code", "shown"),
    [
        (46096, "DD/MM/YYYY", "15/03/2026"),
        (46096, "mm/dd/yyyy", "03/15/2026"),
        (46096, "d mmmm yyyy", "15 March 2026"),
        (46096, "ddd, mmm d", "Sun, Mar 15"),
        (46096.75, "yyyy-mm-dd h:mm AM/PM", "2026-03-15 6:00 PM"),
        (0.75, "hh:mm", "18:00"),
        (0.15, "0%", "15%"),
        (1234567, "#,##0", "1,234,567"),
        (-1234.5, "#,##0.00;(#,##0.00)", "(1,234.50)"),
        (0, '0;-0;"none"', "none"),
        (2139, "00000", "02139"),
        (1234.5, "[$€-407]#,##0.00", "€1,234.50"),
        (12, '0" items"', "12 items"),
        (3, "0.00E+00", None),
        (12345, "#,##0,", None),
        (0.5, "# ?/?", None),
        # Excel's Special formats (new-user walkthrough: ZIP+4 was refused): digit groups with
        # literal text between, filled from the right, and the Phone Number format's condition
        (21390123, "00000-0000", "02139-0123"),
        (123456789, "000-00-0000", "123-45-6789"),
        (2125550100, "(000) 000-0000", "(212) 555-0100"),
        (5550100, "[<=9999999]###-####;(###) ###-####", "555-0100"),
        (2125550100, "[<=9999999]###-####;(###) ###-####", "(212) 555-0100"),
        (-5, "[<=9999999]###-####;(###) ###-####", None),
        (12.5, "00.00-00", None),
    ],
)
def test_number_formats(value: float, code: str, shown: str | None) -> None:
    from chertcast.numfmt import show

    assert show(value, code) == shown


def test_a_header_below_row_1_keeps_the_sheet_row_numbers(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet["B3"], sheet["C3"] = "Phone", "Name"
    sheet["B4"], sheet["C4"] = "4155550192", "Ann"
    path = tmp_path / "offset.xlsx"
    book.save(path)
    assert load_sheet(path).row_numbers == [4]


# 4. A mostly-UTF-8 file stays UTF-8


def test_one_windows_1252_line_does_not_turn_the_file_into_mojibake(tmp_path: Path) -> None:
    sheet = load_sheet(SHOWN / "mixed_encoding.csv")
    assert sheet.column(1) == ["Zoë", "José", "Søren"]
    assert sheet.column(2) == ["Zürich", "Málaga", "Århus"]
    campaign = write_campaign(tmp_path, SHOWN / "mixed_encoding.csv", body="Hi {{ name }} in {{ city }}")
    plan = build_plan(load_campaign(campaign))
    assert [r.status for r in plan.recipients] == ["sendable", "error", "sendable"]
    assert plan.recipients[0].body == "Hi Zoë in Zürich"
    (issue,) = [i for i in plan.issues if i.code == "row_not_utf8"]
    assert issue.row == 3
    assert "line 3 is not valid UTF-8 (byte 0xE9)" in issue.message and "'4155550201,José,Málaga'" in issue.message


def test_a_whole_windows_1252_file_is_still_read_as_one() -> None:
    sheet = load_sheet(DATA / "cp1252.csv")
    assert sheet.column(0) == ["José Müller", "Françoise"] and not sheet.row_problems


# 9. Small validation gaps


@pytest.mark.parametrize(("region", "hint"), [("UK", "use 'GB'"), ("XX", "not a region code")])
def test_a_region_that_is_not_a_region_code_stops_the_campaign(tmp_path: Path, region: str, hint: str) -> None:
    campaign = write_campaign(tmp_path, _contacts(tmp_path), extra=f'default_region = "{region}"\n')
    result = run_cli("check", campaign)
    assert result.exit_code == 2
    assert f"default_region: '{region}' is not a region code" in result.output and hint in result.output


def test_decomposed_unicode_headers_match_the_same_name_typed_normally(tmp_path: Path) -> None:
    extra = '[columns]\nphone = "Téléphone"\n'
    campaign = write_campaign(tmp_path, SHOWN / "nfd_headers.csv", body="Bonjour {{ prénom }}", extra=extra)
    plan = build_plan(load_campaign(campaign))
    assert plan.recipients[0].body == "Bonjour Zoé"
    assert plan.recipients[0].body == __import__("unicodedata").normalize("NFC", "Bonjour Zoé")


def test_a_title_row_above_the_header_is_named(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, SHOWN / "title_row.csv", body="Hi {{ first_name }}")
    result = run_cli("check", campaign)
    assert result.exit_code == 2
    assert "the header is not on row 1: row 3 looks like the header ('Phone', 'First Name')" in result.output
    assert "set header_row = 3" in result.output
    fixed = write_campaign(tmp_path, SHOWN / "title_row.csv", body="Hi {{ first_name }}", extra="header_row = 3\n")
    plan = build_plan(load_campaign(fixed))
    assert [(r.row, r.body) for r in plan.recipients] == [(4, "Hi Ann"), (5, "Hi Bob")]


def test_extensions_warn_and_bracketed_labels_are_ignored(tmp_path: Path) -> None:
    plan = build_plan(load_campaign(write_campaign(tmp_path, SHOWN / "labels.csv")))
    assert [r.phone for r in plan.recipients] == ["+14155550213", "+14155550214", "+14155550215"]
    assert [r.status for r in plan.recipients] == ["sendable"] * 3
    warnings = [(i.row, i.code) for i in plan.issues]
    assert warnings == [(2, "phone_extension"), (3, "phone_extension")]
    assert "has an extension (123)" in plan.issues[0].message


# 10. Encodings of the template and the campaign file


def test_a_bom_starts_neither_the_campaign_file_nor_any_message() -> None:
    plan = build_plan(load_campaign(SHOWN / "bom_campaign.toml"))
    assert plan.recipients[0].body == "Hi Ann, ça va?"


def test_a_windows_1252_template_is_read_like_a_windows_1252_sheet(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, SHOWN / "labels.csv", template=SHOWN / "cp1252_template.j2")
    plan = build_plan(load_campaign(campaign))
    assert plan.recipients[0].body == "Hi Ann, ça va? — Zoë"
    assert any("template read as windows-1252" in note for note in plan.notes)


def test_a_campaign_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes('id = "x"\ncontacts = "a.csv"\nbody = "Olá"\n'.encode("cp1252"))
    result = run_cli("check", path)
    assert result.exit_code == 2
    assert "the campaign file is not UTF-8 text (byte 0xE1" in result.output


# 8. Template features fail once, or work


def test_includes_beside_the_template_work(tmp_path: Path) -> None:
    (tmp_path / "footer.j2").write_text("Reply STOP to opt out, {{ name }}.")
    (tmp_path / "macros.j2").write_text("{% macro hello(who) %}Hello {{ who }}{% endmacro %}")
    template = tmp_path / "main.j2"
    template.write_text('{% import "macros.j2" as m %}{{ m.hello(name) }}!\n\n{% include "footer.j2" %}')
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone,name\n4155550220,Ann\n")
    plan = build_plan(load_campaign(write_campaign(tmp_path, contacts, template=template)))
    assert plan.recipients[0].body == "Hello Ann!\n\nReply STOP to opt out, Ann."


def test_a_missing_include_is_one_campaign_error(tmp_path: Path) -> None:
    template = tmp_path / "main.j2"
    template.write_text('Hi {{ name }}\n{% include "footer.j2" %}')
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone,name\n4155550220,Ann\n4155550221,Bob\n")
    result = run_cli("check", write_campaign(tmp_path, contacts, template=template))
    assert result.exit_code == 2
    assert "includes 'footer.j2', which is not a file in" in result.output
    assert result.output.count("footer.j2") == 1


def test_a_variable_only_in_an_include_is_checked_like_any_other(tmp_path: Path) -> None:
    (tmp_path / "footer.j2").write_text("{{ nickname }}")
    template = tmp_path / "main.j2"
    template.write_text('Hi {% include "footer.j2" %}')
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone,name\n4155550220,Ann\n")
    result = run_cli("check", write_campaign(tmp_path, contacts, template=template))
    assert result.exit_code == 2 and "template variable nickname is not a column" in result.output


def test_an_empty_cell_in_a_test_is_false_and_never_gets_greeting_advice(tmp_path: Path) -> None:
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone,vip,tier\n4155550220,yes,gold\n4155550221,,\n")
    body = "Hi{% if vip %} VIP{% endif %}"
    plan = build_plan(load_campaign(write_campaign(tmp_path, contacts, body=body)))
    assert [r.body for r in plan.recipients] == ["Hi VIP", "Hi"]
    compare = "Hi{% if tier == 'gold' %} gold{% endif %}"
    plan = build_plan(load_campaign(write_campaign(tmp_path, contacts, body=compare)))
    assert plan.recipients[1].status == "error"
    assert 'default("there"' not in plan.recipients[1].reason
    assert "{% if tier is defined and tier == ... %}" in plan.recipients[1].reason


def test_a_column_named_self_is_refused_and_jinja_objects_never_print(tmp_path: Path) -> None:
    contacts = tmp_path / "c.csv"
    contacts.write_text("phone,Self,name\n4155550172,me,ann\n")
    result = run_cli("check", write_campaign(tmp_path, contacts, body="Hi {{ self }}"))
    assert result.exit_code == 2 and "a column called Self cannot be used" in result.output
    body = "{% for x in [1] %}{{ loop }}{% endfor %} {{ name }}"
    plan = build_plan(load_campaign(write_campaign(tmp_path, contacts, body=body)))
    assert plan.recipients[0].status == "error" and "printed a Python object" in plan.recipients[0].reason


def test_xlsx_cells_beyond_the_last_header_are_reported_too(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Phone", "Name"])
    sheet.append(["4155550230", "Ann"])
    sheet.append(["4155550231", "Bob", None, "left over"])
    path = tmp_path / "beyond.xlsx"
    book.save(path)
    sheet_read = load_sheet(path)
    assert list(sheet_read.row_problems) == [3]
    assert "this row has 4 cells but the header has 2" in sheet_read.row_problems[3][1]


def test_a_workbook_lists_unreadable_entries_by_row_not_line(tmp_path: Path) -> None:
    """An XLSX suppression list said "line 4" for its row 4 (new-user walkthrough)."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for value in ("Phone", "+12125550100", "+12125550101", "07400 123456"):
        sheet.append([value])
    book.save(tmp_path / "optouts.xlsx")
    extra = f'suppress = ["{(tmp_path / "optouts.xlsx").as_posix()}"]\n'
    campaign = write_campaign(tmp_path, _contacts(tmp_path), body="Hi", extra=extra)
    output = run_cli("check", campaign).output
    assert "optouts.xlsx (sheet 'Sheet'): 2 numbers, column 'Phone', 1 row unreadable (row 4)" in output
    assert "row 4: '07400 123456' is too long for region US; this opt-out is not applied" in output
