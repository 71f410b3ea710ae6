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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import polars as pl

from chertcast.errors import InputError

MAX_CELL_CHARS = 65_536
MAX_XLSX_UNPACKED = 512 * 1024 * 1024
MAX_XLSX_RATIO = 200
EXTRA_COLUMNS = 8  # CSV columns read beyond the header, to see rows with too many cells
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES = re.compile(r"[\s\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_HEADER_NOISE = re.compile(r"[\s_\-]+")


@dataclass(frozen=True, slots=True)
class Sheet:
    """The contact table: header names and text columns; ``row_numbers[i]`` is data row i's."""

    path: Path
    headers: list[str]
    frame: pl.DataFrame  # one String column per header, named by position: c0, c1, ...
    row_numbers: list[int]
    sheet_name: str | None = None  # the workbook sheet read (None for CSV)
    row_problems: dict[int, str] = field(default_factory=dict)  # sheet row → why it was not read as shown

    def column(self, index: int) -> list[str]:
        return self.frame.get_column(f"c{index}").to_list()

    def __len__(self) -> int:
        return self.frame.height


def header_key(name: str) -> str:
    """How headers are matched: case, surrounding spaces, `_` and `-` ignored."""
    return _HEADER_NOISE.sub("", clean_cell(name)).casefold()


def clean_cell(value: str) -> str:
    """Strip zero-width characters, BOMs and odd whitespace; fold inner runs of spaces."""
    return _SPACES.sub(" ", _INVISIBLE.sub("", value)).strip()


def load_sheet(path: Path, *, sheet: str | None = None, encoding: str | None = None) -> Sheet:
    if not path.exists():
        raise InputError(f"{path}: contact file does not exist")
    suffix = path.suffix.lower()
    sheet_name: str | None = None
    if suffix in (".xlsx", ".xlsm"):
        sheet_name = choose_sheet(path, sheet)
        raw = _read_xlsx(path, sheet_name)
    elif suffix in (".csv", ".tsv", ".txt"):
        raw = _read_csv(path, encoding)
    else:
        raise InputError(f"{path}: unsupported contact file type {suffix!r} (use .csv or .xlsx)")
    return _tabulate(path, raw, sheet_name, capped=sheet_name is None)


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


def _read_csv(path: Path, encoding: str | None) -> pl.DataFrame:
    data = path.read_bytes()
    text = _decode(path, data, encoding)
    if not text.strip():
        raise InputError(f"{path}: the file is empty")
    delimiter = _sniff_delimiter(text)
    # Read EXTRA_COLUMNS more columns than the header has, so a row with more cells than the
    # header (an unquoted "Acme, Inc.") is seen and reported instead of cut silently.
    width = len(_first_record(text, delimiter)) + EXTRA_COLUMNS
    try:
        return pl.read_csv(
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


def _decode(path: Path, data: bytes, encoding: str | None) -> str:
    if encoding:
        try:
            return data.decode(encoding).removeprefix("\ufeff")
        except LookupError:
            raise InputError(f"{path}: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not valid {encoding} (byte {exc.start})") from None
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise InputError(f"{path}: UTF-32 text is not supported; save the file as UTF-8 CSV")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16").removeprefix("\ufeff")
        except UnicodeDecodeError:
            raise InputError(f"{path}: damaged UTF-16 text") from None
    if b"\x00" in data[:65536]:
        raise InputError(f"{path}: this is a binary file, not CSV text (save it as CSV UTF-8)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 or Windows-1252 text; pass --encoding (e.g. --encoding latin-1)") from None


def _first_record(text: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader(io.StringIO(text[:1_048_576]), delimiter=delimiter), [])
    except csv.Error:
        return text.split("\n", 1)[0].split(delimiter)


def _sniff_delimiter(text: str) -> str:
    head = text[:65536]
    try:
        return csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter
    except csv.Error:
        first = head.splitlines()[0] if head else ""
        counts = {d: first.count(d) for d in ",;\t|"}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def _tabulate(path: Path, raw: pl.DataFrame, sheet_name: str | None = None, *, capped: bool = False) -> Sheet:
    if raw.height == 0 or raw.width == 0:
        raise InputError(f"{path}: the sheet is empty (no header row)")
    header_cells = [clean_cell(v) if v is not None else "" for v in raw.row(0)]
    while header_cells and header_cells[-1] == "":
        header_cells.pop()
    if not header_cells:
        raise InputError(f"{path}: row 1 should hold the column headers but it is blank")
    _check_headers(path, header_cells)
    width = len(header_cells)
    if raw.width < width:
        raw = raw.with_columns([pl.lit(None, pl.String).alias(f"pad{i}") for i in range(width - raw.width)])
    overflow = _overflowing_rows(raw, width, capped)
    body = raw.slice(1).select(raw.columns[:width])
    body = body.rename({old: f"c{i}" for i, old in enumerate(body.columns)})
    body = body.with_columns(
        pl.all()
        .fill_null("")
        .str.replace_all(_INVISIBLE.pattern, "")
        .str.replace_all(_SPACES.pattern, " ")
        .str.strip_chars()
    )
    _check_cell_sizes(path, body, header_cells)
    row_numbers = list(range(2, body.height + 2))
    blank = body.select(pl.all_horizontal(pl.all() == "")).to_series()
    if overflow:
        blank = blank & ~pl.Series([n in overflow for n in row_numbers])
    if blank.any():
        keep = ~blank
        row_numbers = [n for n, k in zip(row_numbers, keep.to_list(), strict=True) if k]
        body = body.filter(keep)
    if body.height == 0:
        raise InputError(f"{path}: has a header row but no data rows")
    return Sheet(path, header_cells, body, row_numbers, sheet_name, overflow)


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


def _check_cell_sizes(path: Path, body: pl.DataFrame, headers: list[str]) -> None:
    lengths = body.select(pl.all().str.len_chars().max()).row(0)
    for index, longest in enumerate(lengths):
        if longest is not None and longest > MAX_CELL_CHARS:
            position = body.get_column(f"c{index}").str.len_chars().arg_max() or 0
            raise InputError(
                f"{path}: row {position + 2}, column {headers[index]!r}: a cell of "
                f"{longest:,} characters (limit {MAX_CELL_CHARS:,}); is this a broken export?"
            )


def column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters
