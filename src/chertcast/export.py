"""Write tables people open in spreadsheets: CSV (UTF-8 with BOM, for Excel) or XLSX.

Cells a spreadsheet would execute (starting with = + - @, or a tab/CR) get a leading
apostrophe, the OWASP "CSV injection" defence, so a lead named "=HYPERLINK(...)" stays text.
E.164 numbers start with "+" too, and are neutralised like everything else: they are
still readable, and no spreadsheet turns them into arithmetic.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from openpyxl import Workbook

from chertcast.errors import InputError

_EXECUTABLE = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> str | int | float:
    """Numbers stay numbers (an XLSX sort works); text that would execute gets an apostrophe."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_EXECUTABLE) else text


def write_table(path: Path, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """Write rows; returns how many. The format follows the file's extension."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise InputError(f"{path}: the output must end in .csv or .xlsx")
    try:
        if suffix == ".csv":
            return _write_csv(path, headers, rows)
        return _write_xlsx(path, headers, rows)
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None


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
    sheet.append([neutralise(h) for h in headers])
    count = 0
    for row in rows:
        sheet.append([neutralise(v) for v in row])
        count += 1
    book.save(path)
    return count
