"""CSV/XLSX → a table of text cells that keeps the spreadsheet's own row numbers.

Everything is read as text (see PITFALLS.md): XLSX through polars' calamine engine with no
type inference, CSV through polars with no schema inference after we pick the encoding
and sniff the delimiter. The header is read as data (``has_header=False``) so that
duplicate headers are ours to report and blank lines keep their place: row N of the
result is row N of the sheet (header = row 1).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import polars as pl

from chertcast import numfmt
from chertcast.errors import InputError

MAX_CELL_CHARS = 65_536
MAX_XLSX_UNPACKED = 512 * 1024 * 1024
MAX_XLSX_RATIO = 200
EXTRA_COLUMNS = 8  # CSV columns read beyond the header, to see rows with too many cells
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES = re.compile(r"[\s\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
# Cells keep their line breaks (Alt+Enter in Excel, a quoted newline in CSV): the user sees them.
_CELL_SPACES = r"[^\S\n]+"  # runs of spaces, tabs and odd spaces, not line breaks: one space
_AROUND_BREAKS = r" ?\n ?"
_HEADER_NOISE = re.compile(r"[\s_\-]+")


@dataclass(frozen=True, slots=True)
class Sheet:
    """The contact table: header names and text columns; ``row_numbers[i]`` is data row i's."""

    path: Path
    headers: list[str]
    frame: pl.DataFrame  # one String column per header, named by position: c0, c1, ...
    row_numbers: list[int]
    sheet_name: str | None = None  # the workbook sheet read (None for CSV)
    # sheet row → (issue code, why): rows that could not be read as the user sees them
    row_problems: dict[int, tuple[str, str]] = field(default_factory=dict)
    # column index → {sheet row: why} for XLSX cells whose number format could not be applied
    unshown: dict[int, dict[int, str]] = field(default_factory=dict)
    head: tuple[tuple[str, ...], ...] = ()  # the first rows below the header, every cell: to spot a title row
    header_row: int = 1

    def column(self, index: int) -> list[str]:
        return self.frame.get_column(f"c{index}").to_list()

    def __len__(self) -> int:
        return self.frame.height


def header_key(name: str) -> str:
    """How headers are matched: case, surrounding spaces, `_` and `-` ignored."""
    return _HEADER_NOISE.sub("", clean_cell(name)).casefold()


def clean_cell(value: str) -> str:
    """Strip zero-width characters, BOMs and odd whitespace; fold inner runs of spaces."""
    return unicodedata.normalize("NFC", _SPACES.sub(" ", _INVISIBLE.sub("", value)).strip())


def load_sheet(path: Path, *, sheet: str | None = None, encoding: str | None = None, header_row: int = 1) -> Sheet:
    """The table; ``header_row`` is the sheet row holding the headers (rows above it are ignored)."""
    if not path.exists():
        raise InputError(f"{path}: contact file does not exist")
    suffix = path.suffix.lower()
    sheet_name: str | None = None
    if suffix in (".xlsx", ".xlsm"):
        sheet_name = choose_sheet(path, sheet)
        raw = _read_xlsx(path, sheet_name)
        shown = as_shown(path, sheet_name, raw)
        return _tabulate(
            path, shown.frame, sheet_name, first_row=shown.first_row, unshown=shown.unshown, header_row=header_row
        )
    elif suffix in (".csv", ".tsv", ".txt"):
        raw, bad_lines = _read_csv(path, encoding)
    else:
        raise InputError(f"{path}: unsupported contact file type {suffix!r} (use .csv or .xlsx)")
    return _tabulate(path, raw, sheet_name, capped=True, bad_lines=bad_lines, header_row=header_row)


@dataclass(frozen=True, slots=True)
class WorkbookSheet:
    name: str
    hidden: bool  # state="hidden" or "veryHidden": Excel does not show its tab


_MAIN_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def workbook_sheets(path: Path) -> tuple[list[WorkbookSheet], int]:
    """The workbook's sheets in tab order with their visibility, and the active tab's index.

    Read from ``xl/workbook.xml`` (``<sheet state="hidden">``, ``<workbookView activeTab>``),
    which is what Excel shows when the file is opened.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            root = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    except (KeyError, zipfile.BadZipFile, ElementTree.ParseError, OSError) as exc:
        raise InputError(f"{path}: not a valid XLSX workbook (no readable xl/workbook.xml: {exc})") from None
    sheets = [
        WorkbookSheet(node.get("name", ""), node.get("state", "visible") != "visible")
        for node in root.iter(f"{_MAIN_NS}sheet")
    ]
    view = next(root.iter(f"{_MAIN_NS}workbookView"), None)
    try:
        active = int(view.get("activeTab", "0")) if view is not None else 0
    except ValueError:
        active = 0
    return sheets, active


def choose_sheet(path: Path, wanted: str | None) -> str:
    """The sheet to read: ``wanted`` (matched ignoring case), else the active visible sheet."""
    _refuse_zip_bomb(path)
    sheets, active = workbook_sheets(path)
    listing = ", ".join(f"{s.name!r}{' (hidden)' if s.hidden else ''}" for s in sheets) or "(none)"
    if wanted is not None:
        matches = [s for s in sheets if s.name.casefold() == wanted.strip().casefold()]
        if not matches:
            raise InputError(f"{path}: no sheet named {wanted!r}; the workbook's sheets: {listing}")
        return matches[0].name
    visible = [s for s in sheets if not s.hidden]
    if not visible:
        raise InputError(f"{path}: every sheet is hidden ({listing}); set `sheet =` to choose one")
    if 0 <= active < len(sheets) and not sheets[active].hidden:
        return sheets[active].name
    if len(visible) == 1:
        return visible[0].name
    raise InputError(f"{path}: cannot tell which sheet you see; set `sheet =` to one of: {listing}")


def _read_xlsx(path: Path, sheet: str) -> pl.DataFrame:
    try:
        frame = pl.read_excel(
            path,
            engine="calamine",
            sheet_name=sheet,
            has_header=False,
            infer_schema_length=0,
            drop_empty_rows=False,
        )
    except Exception as exc:  # calamine raises its own types for every broken workbook
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read sheet {sheet!r} of this XLSX workbook ({text[:160]})") from None
    return frame.select(pl.all().cast(pl.String))


def _refuse_zip_bomb(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not a valid XLSX file (damaged or truncated: {exc})") from None
    unpacked = sum(info.file_size for info in infos)
    packed = max(1, sum(info.compress_size for info in infos))
    if unpacked > MAX_XLSX_UNPACKED or (unpacked > 50_000_000 and unpacked / packed > MAX_XLSX_RATIO):
        raise InputError(
            f"{path}: refusing to open: it would unpack to {unpacked / 1e6:,.0f} MB "
            f"from {packed / 1e6:,.1f} MB (a zip bomb or a broken export)"
        )


def _read_csv(path: Path, encoding: str | None) -> tuple[pl.DataFrame, dict[int, str]]:
    """The table, and the sheet rows holding lines that are not valid in the file's encoding."""
    data = path.read_bytes()
    text, bad_lines = decode_text(path, data, encoding)
    if not text.strip():
        raise InputError(f"{path}: the file is empty")
    delimiter = _sniff_delimiter(text)
    rows = _rows_of_lines(text, delimiter, bad_lines) if bad_lines else {}
    # Read EXTRA_COLUMNS more columns than the header has, so a row with more cells than the
    # header (an unquoted "Acme, Inc.") is seen and reported instead of cut silently.
    width = len(_first_record(text, delimiter)) + EXTRA_COLUMNS
    try:
        frame = pl.read_csv(
            io.BytesIO(text.encode("utf-8")),
            has_header=False,
            infer_schema=False,
            schema={f"column_{i + 1}": pl.String for i in range(width)},
            missing_columns="insert",
            separator=delimiter,
            truncate_ragged_lines=True,
            quote_char='"',
        )
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot parse as CSV ({str(exc).splitlines()[0][:160]})") from None
    return frame, rows


def _rows_of_lines(text: str, delimiter: str, bad_lines: dict[int, str]) -> dict[int, str]:
    """Physical line numbers → the sheet rows (CSV records) that hold them."""
    rows: dict[int, str] = {}
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    start = 1
    for record_number, _ in enumerate(reader, start=1):
        for line in range(start, reader.line_num + 1):
            if line in bad_lines:
                rows.setdefault(record_number, bad_lines[line])
        start = reader.line_num + 1
    return rows


def decode_text(path: Path, data: bytes, encoding: str | None) -> tuple[str, dict[int, str]]:
    """The text and, for a mostly-UTF-8 file, its lines that are not UTF-8 (line → why)."""
    if encoding:
        try:
            return data.decode(encoding).removeprefix("\ufeff"), {}
        except LookupError:
            raise InputError(f"{path}: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not valid {encoding} (byte {exc.start})") from None
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise InputError(f"{path}: UTF-32 text is not supported; save the file as UTF-8 CSV")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16").removeprefix("\ufeff"), {}
        except UnicodeDecodeError:
            raise InputError(f"{path}: damaged UTF-16 text") from None
    if b"\x00" in data[:65536]:
        raise InputError(f"{path}: this is a binary file, not CSV text (save it as CSV UTF-8)")
    try:
        return data.decode("utf-8-sig"), {}
    except UnicodeDecodeError:
        pass
    mixed = _mostly_utf8(data)
    if mixed is not None:
        return mixed
    try:
        return data.decode("cp1252"), {}
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 or Windows-1252 text; pass --encoding (e.g. --encoding latin-1)") from None


def _first_record(text: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader(io.StringIO(text[:1_048_576]), delimiter=delimiter), [])
    except csv.Error:
        return text.split("\n", 1)[0].split(delimiter)


def _mostly_utf8(data: bytes) -> tuple[str, dict[int, str]] | None:
    """A UTF-8 file with a few lines in another encoding (two exports pasted together) stays
    UTF-8: one stray Windows-1252 byte must not turn every other accent into mojibake.

    The file counts as UTF-8 when some line holds non-ASCII text that is valid UTF-8. The
    other lines are decoded as Windows-1252 and reported, so their rows are not sent unchecked.
    """
    lines = data.removeprefix(codecs.BOM_UTF8).split(b"\n")
    decoded: list[str] = []
    bad: dict[int, str] = {}
    utf8_text = False
    for number, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8")
            utf8_text = utf8_text or not line.isascii()
        except UnicodeDecodeError as exc:
            text = line.decode("cp1252", errors="replace")
            byte = line[exc.start]
            bad[number] = (
                f"line {number} is not valid UTF-8 (byte 0x{byte:02X}) unlike the rest of the file; read as "
                f"Windows-1252 it says {clean_cell(text)[:60]!r}: check it and save the file as CSV UTF-8"
            )
        decoded.append(text)
    return ("\n".join(decoded), bad) if utf8_text else None


def _sniff_delimiter(text: str) -> str:
    head = text[:65536]
    try:
        return csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter
    except csv.Error:
        first = head.splitlines()[0] if head else ""
        counts = {d: first.count(d) for d in ",;\t|"}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def _tabulate(
    path: Path,
    raw: pl.DataFrame,
    sheet_name: str | None = None,
    *,
    capped: bool = False,
    first_row: int = 1,
    unshown: dict[int, dict[int, str]] | None = None,
    bad_lines: dict[int, str] | None = None,
    header_row: int = 1,
) -> Sheet:
    if header_row > first_row:
        raw, first_row = raw.slice(header_row - first_row), header_row
    if raw.height == 0 or raw.width == 0:
        raise InputError(f"{path}: the sheet is empty (no header row)")
    header_cells = [clean_cell(v) if v is not None else "" for v in raw.row(0)]
    while header_cells and header_cells[-1] == "":
        header_cells.pop()
    if not header_cells:
        raise InputError(f"{path}: row {first_row} should hold the column headers but it is blank")
    _check_headers(path, header_cells)
    width = len(header_cells)
    if raw.width < width:
        raw = raw.with_columns([pl.lit(None, pl.String).alias(f"pad{i}") for i in range(width - raw.width)])
    overflow = {
        row + first_row - 1: ("row_extra_cells", why) for row, why in _overflowing_rows(raw, width, capped).items()
    }
    for row, why in (bad_lines or {}).items():
        overflow.setdefault(row, ("row_not_utf8", why))
    body = raw.slice(1).select(raw.columns[:width])
    body = body.rename({old: f"c{i}" for i, old in enumerate(body.columns)})
    body = body.with_columns(
        pl.all()
        .fill_null("")
        .str.replace_all(_INVISIBLE.pattern, "")
        .str.replace_all(r"\r\n?", "\n")
        .str.replace_all(_CELL_SPACES, " ")
        .str.replace_all(_AROUND_BREAKS, "\n")
        .str.strip_chars()
        .str.normalize("NFC")  # macOS writes "é" as e + U+0301; matched and sent composed
    )
    _check_cell_sizes(path, body, header_cells, first_row)
    row_numbers = list(range(first_row + 1, body.height + first_row + 1))
    blank = body.select(pl.all_horizontal(pl.all() == "")).to_series()
    if overflow:
        blank = blank & ~pl.Series([n in overflow for n in row_numbers])
    if blank.any():
        keep = ~blank
        row_numbers = [n for n, k in zip(row_numbers, keep.to_list(), strict=True) if k]
        body = body.filter(keep)
    if body.height == 0:
        raise InputError(f"{path}: has a header row but no data rows")
    kept = {col: cells for col, cells in (unshown or {}).items() if col < width}
    head = tuple(tuple(clean_cell(v or "") for v in raw.row(i)) for i in range(1, min(raw.height, 11)))
    return Sheet(path, header_cells, body, row_numbers, sheet_name, overflow, kept, head, first_row)


def _overflowing_rows(raw: pl.DataFrame, width: int, capped: bool) -> dict[int, str]:
    """Rows holding text beyond the last header: their cells do not line up with the header."""
    extra = raw.columns[width:]
    if not extra:
        return {}
    filled = [(pl.col(c).is_not_null() & (pl.col(c).str.strip_chars() != "")) for c in extra]
    marks = raw.select(pl.int_range(1, raw.height + 1).alias("row"), *[f.alias(f"x{i}") for i, f in enumerate(filled)])
    marks = marks.slice(1).filter(pl.any_horizontal(pl.exclude("row")))
    problems: dict[int, str] = {}
    for row, *flags in marks.iter_rows():
        last = max(i for i, flag in enumerate(flags) if flag)
        cells = width + last + 1
        at_least = "at least " if capped and last == len(extra) - 1 else ""
        problems[row] = (
            f"this row has {at_least}{cells} cells but the header has {width}; its cells do not line up "
            "with the columns (an unquoted comma, e.g. Acme, Inc.?) — quote the cell or fix the row"
        )
    return problems


def _check_headers(path: Path, headers: list[str]) -> None:
    seen: dict[str, int] = {}
    for index, name in enumerate(headers):
        if not name:
            continue
        key = header_key(name)
        if key in seen:
            raise InputError(
                f"{path}: duplicate column header {name!r} "
                f"(columns {column_letter(seen[key])} and {column_letter(index)})"
            )
        seen[key] = index


def _check_cell_sizes(path: Path, body: pl.DataFrame, headers: list[str], first_row: int) -> None:
    lengths = body.select(pl.all().str.len_chars().max()).row(0)
    for index, longest in enumerate(lengths):
        if longest is not None and longest > MAX_CELL_CHARS:
            position = body.get_column(f"c{index}").str.len_chars().arg_max() or 0
            raise InputError(
                f"{path}: row {position + first_row + 1}, column {headers[index]!r}: a cell of "
                f"{longest:,} characters (limit {MAX_CELL_CHARS:,}); is this a broken export?"
            )


def column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


@dataclass(frozen=True, slots=True)
class ShownSheet:
    frame: pl.DataFrame
    first_row: int  # the sheet row of the frame's first row (calamine starts at the first used row)
    unshown: dict[int, dict[int, str]]


_REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PKG_REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_VALUE_CELL = re.compile(
    rb'<(?:\w+:)?c r="([A-Z]{1,3})([0-9]+)"([^>]*)>(?:<(?:\w+:)?f\b[^>]*?(?:/>|>[^<]*</(?:\w+:)?f>))?'
    rb"(?:<(?:\w+:)?v>([^<]*)</(?:\w+:)?v>|<(?:\w+:)?is>)"
)


def as_shown(path: Path, sheet_name: str, frame: pl.DataFrame) -> ShownSheet:
    """Replace number and date cells' raw values with the text Excel shows for them.

    calamine gives values (``0.15``, ``2026-03-15 00:00:00``, ``2139``); the user sees their
    number format applied (``15%``, ``15/03/2026``, ``02139``). The formats come from
    ``xl/styles.xml`` and each cell's style index from the sheet XML. A workbook with no
    number format beyond General/Text (most exports) costs one small XML parse.
    Cells whose format is not understood, or depends on the computer's locale, are listed
    in ``unshown`` so that a template using them is stopped rather than fed a raw value.
    """
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        formats = _style_formats(archive, names)
        if not formats:
            return ShownSheet(frame, _first_row(archive, names, path, sheet_name), {})
        sheet_xml = archive.read(_sheet_part(archive, path, sheet_name))
        date1904 = b'date1904="1"' in archive.read("xl/workbook.xml") or b'date1904="true"' in archive.read(
            "xl/workbook.xml"
        )
    return _apply_formats(frame, sheet_xml, formats, date1904)


def _style_formats(archive: zipfile.ZipFile, names: set[str]) -> dict[int, tuple[int, str]]:
    """Style index → (numFmtId, format code) for every style that is not General or Text."""
    if "xl/styles.xml" not in names:
        return {}
    root = ElementTree.fromstring(archive.read("xl/styles.xml"))
    custom = {int(n.get("numFmtId", "0")): n.get("formatCode", "") for n in root.iter(f"{_MAIN_NS}numFmt")}
    cell_xfs = next(root.iter(f"{_MAIN_NS}cellXfs"), None)
    if cell_xfs is None:
        return {}
    found: dict[int, tuple[int, str]] = {}
    for index, xf in enumerate(cell_xfs.findall(f"{_MAIN_NS}xf")):
        fmt_id = int(xf.get("numFmtId", "0"))
        code = custom.get(fmt_id, numfmt.BUILTIN.get(fmt_id, ""))
        if fmt_id in numfmt.LOCALE_DEPENDENT or not numfmt.is_plain(code) or (fmt_id and not code):
            found[index] = (fmt_id, code)
    return found


def _sheet_part(archive: zipfile.ZipFile, path: Path, sheet_name: str) -> str:
    workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    rel_id = next(
        (n.get(f"{_REL_NS}id") for n in workbook.iter(f"{_MAIN_NS}sheet") if n.get("name") == sheet_name), None
    )
    rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    target = next((r.get("Target", "") for r in rels.iter(f"{_PKG_REL_NS}Relationship") if r.get("Id") == rel_id), "")
    if not target:
        raise InputError(f"{path}: sheet {sheet_name!r} has no worksheet part (a damaged workbook)")
    return target.lstrip("/") if target.startswith("/") else f"xl/{target}"


def _first_row(archive: zipfile.ZipFile, names: set[str], path: Path, sheet_name: str) -> int:
    """The sheet row calamine's first row is: the first row holding a value."""
    part = _sheet_part(archive, path, sheet_name)
    with archive.open(part) as handle:
        head = handle.read(1 << 20)
    match = _VALUE_CELL.search(head)
    return int(match.group(2)) if match else 1


def _column_number(letters: bytes) -> int:
    number = 0
    for byte in letters:
        number = number * 26 + byte - 64
    return number


_ANY_VALUE_COLUMN = re.compile(
    rb'<(?:\w+:)?c r="([A-Z]{1,3})[0-9]+"[^>]*>(?:<(?:\w+:)?f\b[^>]*?(?:/>|>[^<]*</(?:\w+:)?f>))?<(?:\w+:)?(?:v|is)>'
)


def _styled_cells(styles: Iterable[int]) -> re.Pattern[bytes]:
    """Number cells (no t, or t="n") of the given styles: column, row, style, value."""
    ids = b"|".join(str(s).encode() for s in sorted(styles, reverse=True))
    return re.compile(
        rb'<(?:\w+:)?c r="([A-Z]{1,3})([0-9]+)"(?: (?!t=)[a-z]+="[^"]*")*? s="(' + ids + rb')"'
        rb'(?: t="n")?(?: (?!t=)[a-z]+="[^"]*")*>'
        rb"(?:<(?:\w+:)?f\b[^>]*?(?:/>|>[^<]*</(?:\w+:)?f>))?<(?:\w+:)?v>([^<]*)</(?:\w+:)?v>"
    )


def _apply_formats(
    frame: pl.DataFrame, sheet_xml: bytes, formats: dict[int, tuple[int, str]], date1904: bool
) -> ShownSheet:
    """calamine's frame starts at the first row and column holding a value: find them, then
    put each formatted cell's shown text at its place."""
    letters = set(_ANY_VALUE_COLUMN.findall(sheet_xml))
    first = _VALUE_CELL.search(sheet_xml)
    if not letters or first is None:
        return ShownSheet(frame, 1, {})
    first_row, first_col = int(first.group(2)), min(_column_number(c) for c in letters)
    columns = frame.columns
    updates: dict[int, dict[int, str]] = {}
    unshown: dict[int, dict[int, str]] = {}
    cache: dict[tuple[bytes, bytes], str | None] = {}
    column_of: dict[bytes, int] = {}
    for letter, row_text, style, raw in _styled_cells(formats).findall(sheet_xml):
        index = column_of.get(letter)
        if index is None:
            index = column_of[letter] = _column_number(letter) - first_col
        row = int(row_text)
        position = row - first_row
        if not (0 <= index < len(columns) and 0 <= position < frame.height):
            continue
        shown = cache.get((style, raw), "\0")
        if shown == "\0":
            shown = cache[style, raw] = _shown_value(raw, formats[int(style)], date1904)
        if shown is None:
            fmt_id, code = formats[int(style)]
            unshown.setdefault(index, {})[row] = _unshown_reason(fmt_id, code)
        else:
            updates.setdefault(index, {})[position] = shown
    if updates:
        replaced = []
        for index, cells in updates.items():
            values = frame.get_column(columns[index]).to_list()
            for position, text in cells.items():
                values[position] = text
            replaced.append(pl.Series(columns[index], values, dtype=pl.String))
        frame = frame.with_columns(replaced)
    return ShownSheet(frame, first_row, unshown)


def _shown_value(raw: bytes, style: tuple[int, str], date1904: bool) -> str | None:
    fmt_id, code = style
    if fmt_id in numfmt.LOCALE_DEPENDENT:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return numfmt.show(value, code, date1904=date1904)


def _unshown_reason(fmt_id: int, code: str) -> str:
    if fmt_id in numfmt.LOCALE_DEPENDENT:
        what = f"Excel's built-in format {fmt_id} (it follows your computer's date/number settings)"
    else:
        what = f"the number format {code!r}"
    return (
        f"this cell is shown with {what}, which chertcast cannot reproduce exactly; give the column "
        "an explicit format (e.g. Custom dd/mm/yyyy or 0.00) or make it Text"
    )
