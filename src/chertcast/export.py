"""Write tables people open in spreadsheets: CSV (UTF-8 with BOM, for Excel) or XLSX.

Cells a spreadsheet would execute (starting with = + - @, or a tab/CR) get a leading
apostrophe, the OWASP "CSV injection" defence, so a lead named "=HYPERLINK(...)" stays text.
E.164 numbers start with "+" too, and are neutralised like everything else: they are
still readable, and no spreadsheet turns them into arithmetic.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
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


def guard_output(path: Path, inputs: Mapping[Path, str], *, force: bool) -> None:
    """Refuse to write over a campaign input (ever) or over any existing file (unless force)."""
    target = path.resolve()
    for source, role in inputs.items():
        if target == source.resolve() or (path.exists() and source.exists() and path.samefile(source)):
            raise InputError(f"{path}: refusing to write over this campaign's {role}; choose another --out file")
    if path.exists() and not force:
        raise InputError(f"{path}: the file already exists; choose another --out file or add --force to replace it")


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
    sheet.append([neutralise(h) for h in headers])
    count = 0
    for row in rows:
        sheet.append([neutralise(v) for v in row])
        count += 1
    book.save(path)
    return count
