"""Loading real-world sheets: encodings, delimiters, XLSX number cells, row numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from chertcast.contacts import clean_cell, column_letter, header_key, load_sheet
from chertcast.errors import InputError
from tests.conftest import DATA


def test_bom_semicolon_crlf_quoted_newline() -> None:
    sheet = load_sheet(DATA / "bom_semicolon.csv")
    assert sheet.headers == ["First Name", "Phone", "Note"]
    assert sheet.column(0) == ["Zoë", "Ana"]
    assert sheet.column(2)[0] == "line one\nline two; still note"  # the cell's line break, as the user sees it
    assert sheet.row_numbers == [2, 3]


def test_a_cells_line_breaks_are_kept_and_its_spaces_folded(tmp_path: Path) -> None:
    """A line break inside a cell (Alt+Enter in Excel, a quoted newline in CSV) was sent as a
    space (new-user walkthrough). It is kept; runs of spaces still fold and ends are trimmed."""
    from openpyxl import Workbook

    csv = tmp_path / "c.csv"
    csv.write_bytes(b'phone,note\r\n+12125550100,"  one  \r\n  two\n\nthree\t "\r\n')
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["phone", "note"])
    sheet.append(["+12125550100", "  one  \n  two\n\nthree\t "])
    book.save(tmp_path / "c.xlsx")
    for path in (csv, tmp_path / "c.xlsx"):
        assert load_sheet(path).column(1) == ["one\ntwo\n\nthree"], path.name


@pytest.mark.parametrize(("name", "first"), [("cp1252.csv", "José Müller"), ("utf16.csv", "Søren")])
def test_encodings_detected(name: str, first: str) -> None:
    assert load_sheet(DATA / name).column(0)[0] == first


def test_explicit_encoding_and_wrong_encoding() -> None:
    assert load_sheet(DATA / "cp1252.csv", encoding="cp1252").column(0)[1] == "Françoise"
    with pytest.raises(InputError, match="not valid utf-8"):
        load_sheet(DATA / "cp1252.csv", encoding="utf-8")


def test_zero_width_and_odd_whitespace_are_stripped() -> None:
    sheet = load_sheet(DATA / "zero_width.csv")
    assert sheet.headers == ["Phone Number", "First_Name"]
    assert sheet.column(0) == ["+1 415 555 0105", "4155550106"]
    assert sheet.column(1) == ["Maya", "Omar"]


def test_blank_rows_skipped_but_row_numbers_kept() -> None:
    sheet = load_sheet(DATA / "dup_formats.csv")
    assert sheet.row_numbers == [2, 3, 6, 7, 8]


def test_xlsx_number_cells_and_late_text_cells() -> None:
    sheet = load_sheet(DATA / "numbers.xlsx")
    phones = dict(zip(sheet.row_numbers, sheet.column(0), strict=True))
    assert phones[2] == "14155550000"  # not "14155550000.0"
    assert phones[161] == "14155550159"
    assert 162 not in phones  # the blank row
    assert phones[163] == "+44 7400 123456" and phones[164] == "n/a"  # late text survives
    assert phones[165] == "447400123457"


def test_xlsx_named_sheet_missing() -> None:
    with pytest.raises(InputError, match="no sheet named 'Nope'"):
        load_sheet(DATA / "numbers.xlsx", sheet="Nope")


def test_header_matching_rules() -> None:
    assert header_key(" Phone_Number ") == header_key("phone-number") == header_key("PHONE NUMBER")
    assert clean_cell("\u200b a\u00a0 b \ufeff") == "a b"
    assert [column_letter(i) for i in (0, 25, 26, 27, 701)] == ["A", "Z", "AA", "AB", "ZZ"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("binary.csv", "binary file"),
        ("truncated.xlsx", "not a valid XLSX"),
        ("bomb.xlsx", "zip bomb"),
        ("no_rows.xlsx", "empty"),
        ("header_only.csv", "no data rows"),
        ("utf32.csv", "UTF-32"),
        ("dup_headers.csv", "duplicate column header 'phone' (columns A and C)"),
        ("huge_cell.csv", "row 2, column 'note': a cell of 10,000,000 characters"),
    ],
)
def test_bad_files_fail_with_one_clear_line(name: str, message: str) -> None:
    path = DATA / "bad" / name
    with pytest.raises(InputError) as caught:
        load_sheet(path)
    text = str(caught.value)
    assert message in text and str(path) in text and "\n" not in text


def test_formula_date_and_merged_cells_read_as_text() -> None:
    sheet = load_sheet(DATA / "bad" / "formula_date_merged.xlsx")
    assert sheet.row_numbers == [2, 3]
    assert sheet.column(1)[1] == "Merged" and sheet.column(2)[1] == ""


def test_missing_and_unsupported(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_sheet(tmp_path / "nope.csv")
    (tmp_path / "x.ods").write_text("x")
    with pytest.raises(InputError, match="unsupported"):
        load_sheet(tmp_path / "x.ods")
