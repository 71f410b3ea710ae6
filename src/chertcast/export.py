"""Write tables people open in spreadsheets: CSV (UTF-8 with BOM, for Excel) or XLSX.

The rule, so that exports are safe *and* faithful (a CRM re-import gets the same values):

- **XLSX**: every value is written as what it is — text as a text cell, numbers as numbers.
  A text cell is never a formula, whatever it starts with, so nothing is added to it: an
  E.164 phone stays ``+14155550100`` and a lead named ``=HYPERLINK(...)`` stays that text.
- **CSV** has no cell types, so a spreadsheet decides what a cell is. A cell that would be
  *executed* (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a CR — the OWASP "CSV
  injection" set) gets a leading apostrophe, **unless it is a plain number** (an optional
  sign, digits, at most one decimal point: ``+14155550100``, ``-12.5``), which a spreadsheet
  reads as a number and never runs. ``-2+3+cmd|' /C calc'!A0`` is not a plain number and is
  neutralised.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import Cell
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from chertcast.errors import InputError

_EXECUTABLE = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


def neutralise(value: object) -> str | int | float:
    """For CSV: numbers stay numbers; text a spreadsheet would execute gets an apostrophe
    (a plain number written as text, such as an E.164 phone, is left as it is)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = "" if value is None else str(value)
    if text.startswith(_EXECUTABLE) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def guard_output(path: Path, inputs: Mapping[Path, str], *, force: bool, option: str = "--out") -> None:
    """Refuse to write over a campaign input (ever) or over any existing file (unless force);
    ``option`` names the option that gave ``path`` (``--out``, ``--html``) in the message."""
    target = path.resolve()
    for source, role in inputs.items():
        if target == source.resolve() or (path.exists() and source.exists() and path.samefile(source)):
            raise InputError(f"{path}: refusing to write over the campaign's {role}; choose another {option} file")
    if path.exists() and not force:
        raise InputError(f"{path}: the file already exists; choose another {option} file or add --force to replace it")


def write_table(path: Path, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """Write rows; returns how many. The format follows the file's extension.

    Written to a temporary file beside the target and moved into place, so a failure
    half-way never leaves a truncated file where a good one was.
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise InputError(f"{path}: the output must end in .csv or .xlsx")
    partial = path.with_name(f".{path.name}.partial{suffix}")
    try:
        count = _write_csv(partial, headers, rows) if suffix == ".csv" else _write_xlsx(partial, headers, rows)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None
    return count


def _write_csv(path: Path, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle)
        writer.writerow([neutralise(h) for h in headers])
        for row in rows:
            writer.writerow([neutralise(v) for v in row])
            count += 1
    return count


def _write_xlsx(path: Path, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    book = Workbook(write_only=True)
    sheet = book.create_sheet("chertcast")
    sheet.append([_xlsx_cell(sheet, h) for h in headers])
    count = 0
    for row in rows:
        sheet.append([_xlsx_cell(sheet, v) for v in row])
        count += 1
    book.save(path)
    return count


def _xlsx_cell(sheet: WriteOnlyWorksheet, value: object) -> Cell | int | float:
    """A number as a number; anything else as a text cell, never a formula (nothing added)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    cell = WriteOnlyCell(sheet, value="" if value is None else str(value))
    cell.data_type = "s"  # openpyxl would otherwise store text starting with "=" as a formula
    return cell
