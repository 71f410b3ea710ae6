"""Rows + template + lists → the Plan: who gets what, with which key, and every problem.

Pure: reads its input files, touches no network and no clock. ``send`` executes exactly
this plan; ``check`` and ``preview`` print it.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import zoneinfo
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import polars as pl

from chertcast import optout
from chertcast.campaign import Campaign
from chertcast.contacts import Sheet, decode_text, header_key, load_sheet
from chertcast.errors import ConfigError, InputError
from chertcast.links import find_link, link_warning
from chertcast.phone_columns import choose_phone_columns, describe, find_header, phone_like
from chertcast.phones import PhoneResult, normalise, normalise_many
from chertcast.render import MessageTemplate, Rendered, TemplateProblem, variable_name

Severity = Literal["error", "warning"]
Status = Literal["sendable", "error", "duplicate", "suppressed"]
KEY_PREFIX = "cc1_"
PARALLEL_THRESHOLD = 50_000  # rows; below this, forking costs more than it saves


def idempotency_key(campaign_id: str, e164: str) -> str:
    """Deterministic per recipient: ``cc1_`` + 40 hex of sha256("chertcast/v1" ␟ id ␟ e164).

    It depends only on the campaign id and the number, so it survives re-sorting the sheet,
    adding rows and reruns; 44 characters. Pinned by test vectors in tests/test_preflight.py.
    """
    digest = hashlib.sha256(f"chertcast/v1\x1f{campaign_id}\x1f{e164}".encode()).hexdigest()
    return KEY_PREFIX + digest[:40]


@dataclass(frozen=True, slots=True)
class Issue:
    row: int | None
    column: str | None
    severity: Severity
    code: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "column": self.column,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """An attachment as the campaign names it: a Chert id, or a local file to upload once."""

    value: str
    is_file: bool = False
    shape: Literal["bare", "id", "attachment_id"] = "bare"
    live_photo: bool = False


@dataclass(frozen=True, slots=True)
class Recipient:
    row: int
    raw_phone: str
    phone: str | None
    body: str | None
    key: str | None
    status: Status
    reason: str = ""
    name: str | None = None
    external_id: str | None = None
    phone_line_id: str | None = None
    effect: str | None = None
    attachments: tuple[AttachmentRef, ...] = ()
    timezone: str | None = None  # the row's own time zone column, for quiet hours
    phone_column: str | None = None  # the header of the cell the number was read from

    def payload(self, attachment_ids: dict[str, str] | None = None) -> dict[str, Any]:
        """The JSON body of ``/send`` for this recipient (local files replaced by their ids)."""
        assert self.phone is not None and self.body is not None
        data: dict[str, Any] = {"phone": self.phone, "body": self.body, "idempotency_key": self.key}
        for name in ("name", "external_id", "phone_line_id", "effect"):
            value = getattr(self, name)
            if value:
                data[name] = value
        if self.attachments:
            data["attachments"] = [_attachment_json(a, attachment_ids or {}) for a in self.attachments]
        return data


def _attachment_json(ref: AttachmentRef, uploaded: dict[str, str]) -> str | dict[str, Any]:
    value = uploaded[ref.value] if ref.is_file else ref.value
    if ref.live_photo:
        return {"attachment_id": value, "live_photo": True}
    if ref.shape == "id":
        return {"id": value}
    if ref.shape == "attachment_id" or ref.is_file:
        return {"attachment_id": value}
    return value


@dataclass
class Plan:
    campaign: Campaign
    sheet: Sheet
    phone_columns: list[str]  # tried in this order per row: the first valid number wins
    phone_column_detected: bool
    recipients: list[Recipient]
    issues: list[Issue]
    notes: list[str] = field(default_factory=list)
    lists: list[SuppressionList] = field(default_factory=list)
    work: RowWork | None = None  # kept when asked (build_plan(keep_work=True)), for a later rerun
    phone_columns_unused: list[tuple[str, str]] = field(default_factory=list)  # (header, why not used)

    @property
    def phone_column(self) -> str:
        """The first (preferred) phone column."""
        return self.phone_columns[0]

    def numbers_per_phone_column(self) -> dict[str, int]:
        """How many rows got their number from each phone column, in the order they are tried."""
        found = Counter(r.phone_column for r in self.recipients if r.phone_column)
        return {header: found.get(header, 0) for header in self.phone_columns}

    @property
    def sendable(self) -> list[Recipient]:
        return [r for r in self.recipients if r.status == "sendable"]

    def counts(self) -> Counter[str]:
        return Counter(r.status for r in self.recipients)

    def exit_code(self) -> int:
        """0: no row has a problem (suppressed rows are none); 1: some rows have errors or repeat a
        number, or a suppression list has lines that could not be read."""
        counts = self.counts()
        unread = any(issue.row is None and issue.severity == "error" for issue in self.issues)
        return 1 if counts["error"] or counts["duplicate"] or unread else 0


@dataclass(frozen=True, slots=True)
class RowWork:
    """The slow, pure part of a check (see ``_RowBuilder._pure_work``), as a later check can reuse it.

    ``phones``: each distinct phone cell (``raw``) and its PhoneResult fields. ``renders``: each
    row's render inputs (``v``, ``v0…``: the template's variables in name order, then the phone
    cell when ``| random`` is seeded by it) and its Rendered fields — two rows with the same
    inputs render the same message. ``reused`` counts the rows taken from an earlier check.
    Kept as Arrow frames: a million Python objects would cost hundreds of MB more.
    """

    phones: pl.DataFrame
    renders: pl.DataFrame
    reused: int = 0

    @classmethod
    def of(cls, phones: dict[str, PhoneResult], renders: list[Rendered], inputs: pl.DataFrame, reused: int) -> RowWork:
        results = list(phones.values())
        phone_frame = pl.DataFrame(
            {"raw": list(phones), **{name: [getattr(r, name) for r in results] for name in PHONE_FIELDS}},
            schema={"raw": pl.String, **dict.fromkeys(PHONE_FIELDS, pl.String)},
        )
        rendered = pl.DataFrame(
            {name: [getattr(r, name) for r in renders] for name in RENDERED_FIELDS},
            schema=dict.fromkeys(RENDERED_FIELDS, pl.String),
        )
        return cls(phone_frame, pl.concat([inputs, rendered], how="horizontal"), reused)


@dataclass(frozen=True, slots=True)
class EarlierWork:
    """What an earlier check of the same campaign found (same template, lists and settings):
    ``phones`` by raw cell, ``renders`` by render inputs (columns ``v0…``, then the Rendered fields)."""

    phones: dict[str, PhoneResult]
    renders: pl.DataFrame
    changed: tuple[str, ...] = ()  # the inputs that differ from that check's (chertcast.rerun's parts)


RENDERED_FIELDS = ("body", "error", "reason", "variable")
PHONE_FIELDS = ("e164", "error", "reason", "warning", "warning_code")


def build_plan(
    campaign: Campaign, *, encoding: str | None = None, earlier: EarlierWork | None = None, keep_work: bool = False
) -> Plan:
    """The plan. ``earlier``: reuse an earlier check's phones and messages for rows whose cells
    did not change (only the sheet may differ from that check); ``keep_work``: keep this check's
    per-row work on the plan, for the next run to reuse."""
    template, template_encoding = _compile(campaign)
    sheet = load_sheet(
        campaign.contacts, sheet=campaign.sheet, encoding=encoding or campaign.encoding, header_row=campaign.header_row
    )
    _refuse_title_row(campaign, sheet)
    variables = _variables(sheet)
    try:
        unknown = template.unknown_variables(set(variables))
    except TemplateProblem as exc:
        raise ConfigError(str(exc)) from None
    if unknown:
        available = ", ".join(sorted(variables)) or "(none)"
        raise ConfigError(
            f"{template.origin}: template variable {', '.join(unknown)} is not a column of "
            f"{sheet.path.name} (available: {available})"
        )
    choice = choose_phone_columns(campaign.columns.phone, sheet, campaign.default_region, campaign.source)
    mapped = {
        name: _mapped_column(campaign, sheet, name)
        for name in ("name", "external_id", "phone_line_id", "effect", "attachments", "timezone")
    }
    lists = load_suppression(campaign)
    suppressed = set().union(*(entry.numbers for entry in lists))
    builder = _RowBuilder(campaign, sheet, template, variables, choice.indexes, mapped, suppressed, earlier)
    plan = Plan(
        campaign,
        sheet,
        [sheet.headers[i] for i in choice.indexes],
        choice.detected,
        [],
        [],
        lists=lists,
        phone_columns_unused=[(sheet.headers[i], why) for i, why in choice.unused],
    )
    for entry in lists:
        for line, _cell, why in entry.unreadable:
            plan.issues.append(
                Issue(
                    None,
                    entry.path.name,
                    "error",
                    "suppress_unreadable",
                    f"{_line_word(entry.path)} {line}: {why} for region {campaign.default_region}; "
                    "this opt-out is not applied "
                    "(write numbers from other countries with + and the country code)",
                )
            )
    try:
        plan.work = builder.build(plan, keep_work)
    except TemplateProblem as exc:  # the sandbox refused the template itself: no row can render
        raise ConfigError(str(exc)) from None
    if template_encoding != "utf-8":
        plan.notes.append(f"template read as {template_encoding} (not UTF-8): check its accents in preview")
    plan.notes += describe(sheet, choice, plan.numbers_per_phone_column())
    return plan


def _compile(campaign: Campaign) -> tuple[MessageTemplate, str]:
    """The compiled template and the encoding its file was read in."""
    origin = str(campaign.template) if campaign.template else f"{campaign.source}: body"
    text, encoding = campaign.template_source()
    folder = campaign.template.parent if campaign.template else None
    try:
        return MessageTemplate(text, origin, folder), encoding
    except TemplateProblem as exc:
        raise ConfigError(str(exc)) from None


def _refuse_title_row(campaign: Campaign, sheet: Sheet) -> None:
    """A title above the header ("Leads — export of 3 May") would make every header wrong:
    when no header is the phone column but a row below holds one, say where the header is."""
    setting = campaign.columns.phone
    named = {header_key(h) for h in ([setting] if isinstance(setting, str) else setting or [])}

    def is_phone(header: str) -> bool:
        return header_key(header) in named if named else phone_like(header)

    if any(is_phone(h) for h in sheet.headers):
        return
    for offset, cells in enumerate(sheet.head, start=1):
        if any(is_phone(cell) for cell in cells if cell):
            row = sheet.header_row + offset
            shown = ", ".join(repr(c) for c in cells if c)
            raise ConfigError(
                f"{sheet.path}: the header is not on row {sheet.header_row}: row {row} looks like the header "
                f"({shown}); delete the rows above it or set header_row = {row} in {campaign.source.name}"
            )


def _variables(sheet: Sheet) -> dict[str, int]:
    names: dict[str, int] = {}
    for index, header in enumerate(sheet.headers):
        name = variable_name(header)
        if name and name not in names:
            names[name] = index
    return names


def _mapped_column(campaign: Campaign, sheet: Sheet, name: str) -> int | None:
    header = getattr(campaign.columns, name)
    if header is None:
        return None
    index = find_header(sheet, header)
    if index is None:
        raise ConfigError(_missing_column(campaign, sheet, name, header))
    return index


def _missing_column(campaign: Campaign, sheet: Sheet, name: str, header: str) -> str:
    headers = ", ".join(repr(h) for h in sheet.headers)
    return f"{campaign.source}: columns.{name}: no column {header!r} in {sheet.path.name} (headers: {headers})"


@dataclass(frozen=True, slots=True)
class SuppressionList:
    """What one suppression list contributed: its numbers and the lines that could not be read."""

    path: Path
    column: str | None  # the (first) header the numbers were read from (None: a .txt or headerless list)
    numbers: frozenset[str]
    unreadable: tuple[tuple[int, str, str], ...]  # (line, cell, why)
    sheet: str | None = None
    columns: tuple[str, ...] = ()  # every header the numbers were read from
    opt_out_list: bool = False  # the campaign's `opt_out_list`, which `sync` writes
    exists: bool = True  # False: an opt-out list no `sync` has created yet

    def summary(self) -> str:
        if not self.exists:
            return (
                f"{self.path.name}: not created yet (the opt-out list: `chertcast sync` creates it "
                "and adds each opt-out it records)"
            )
        if self.opt_out_list and not self.numbers and not self.unreadable:
            return f"{self.path.name}: no opt-outs yet (the opt-out list `chertcast sync` adds each opt-out to)"
        where = f" (sheet {self.sheet!r})" if self.sheet else ""
        column = f", column {self.column!r}" if self.column else ""
        if len(self.columns) > 1:
            column = ", columns " + ", ".join(repr(c) for c in self.columns)
        text = f"{self.path.name}{where}: {len(self.numbers):,} number{'' if len(self.numbers) == 1 else 's'}{column}"
        if self.unreadable:
            lines = ", ".join(str(line) for line, _, _ in self.unreadable[:10])
            more = ", …" if len(self.unreadable) > 10 else ""
            count, word = len(self.unreadable), _line_word(self.path)
            words = word if count == 1 else word + "s"
            text += f", {count} {words} unreadable ({words} {lines}{more})"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "sheet": self.sheet,
            "column": self.column,
            "columns": list(self.columns),
            "numbers": len(self.numbers),
            "unreadable": [{"line": line, "value": cell, "reason": why} for line, cell, why in self.unreadable],
            "opt_out_list": self.opt_out_list,
            "exists": self.exists,
        }


def load_suppression(campaign: Campaign) -> list[SuppressionList]:
    """Every list, read as the user sees it: the number column found like the contacts' phone
    column, every number matched as E.164, and every line that is not a number reported.

    A list whose number column cannot be found, or that yields no number at all, is a
    campaign error: silently suppressing nobody would message the people who opted out. The
    opt-out list ``sync`` writes is the exception: it may not exist yet, or hold no opt-out.
    """
    lists = [_load_list(path, campaign.default_region) for path in campaign.suppress]
    path = campaign.opt_out_list
    if path is not None:  # written by `sync`: may not exist yet, or hold no opt-out so far
        if not path.exists():
            lists.append(SuppressionList(path, "phone", frozenset(), (), opt_out_list=True, exists=False))
        elif optout.is_empty(path):
            lists.append(SuppressionList(path, "phone", frozenset(), (), opt_out_list=True))
        else:
            lists.append(replace(_load_list(path, campaign.default_region), opt_out_list=True))
    return lists


def _load_list(path: Path, region: str) -> SuppressionList:
    if not path.exists():
        raise InputError(f"{path}: suppression list does not exist")
    columns: tuple[str, ...] = ()
    sheet_name: str | None = None
    problems: dict[int, tuple[str, str]] = {}
    lines: list[tuple[int, tuple[str, ...]]]  # (line, its number cells)
    if path.suffix.lower() == ".txt":
        texts, problems = _text_lines(path)
        lines = [(number, (text,)) for number, text in enumerate(texts, start=1)]
    else:
        sheet = load_sheet(path)
        sheet_name, problems = sheet.sheet_name, sheet.row_problems
        indexes = _list_number_columns(path, sheet, region)
        if not indexes:  # a one-column list without a header: its first line is a number
            lines = [
                (1, (sheet.headers[0],)),
                *((n, (c,)) for n, c in zip(sheet.row_numbers, sheet.column(0), strict=True)),
            ]
        else:  # every phone column of a CRM export: an opt-out in any of them is applied
            columns = tuple(sheet.headers[i] for i in indexes)
            cells = zip(*(sheet.column(i) for i in indexes), strict=True)
            lines = list(zip(sheet.row_numbers, cells, strict=True))
    numbers: set[str] = set()
    unreadable: list[tuple[int, str, str]] = []
    for line, values in lines:
        if line in problems:  # not read as shown (extra cells, not UTF-8): reported, not guessed
            unreadable.append((line, " ".join(v.strip() for v in values if v.strip()), problems[line][1]))
            continue
        for cell in values:
            text = cell.strip()
            if not text or text.startswith("#"):
                continue
            result = normalise(text, region)
            if result.e164:
                numbers.add(result.e164)
            else:
                unreadable.append((line, text, result.reason))
    if not numbers:
        detail = f"; {_line_word(path)} {unreadable[0][0]}: {unreadable[0][2]}" if unreadable else ""
        raise InputError(
            f"{path}: suppression list yielded no phone number{detail}. "
            "Nobody would be suppressed; fix the list or remove it from `suppress`"
        )
    column = columns[0] if columns else None
    return SuppressionList(path, column, frozenset(numbers), tuple(unreadable), sheet_name, columns)


def _list_number_columns(path: Path, sheet: Sheet, region: str) -> list[int]:
    """Every phone column of the list that holds something (all of them if none does); none
    for a one-column list whose header is itself a number."""
    found = [i for i, header in enumerate(sheet.headers) if phone_like(header)]
    if found:
        filled = [i for i in found if any(cell.strip() for cell in sheet.column(i))]
        return filled or found
    if len(sheet.headers) == 1 and normalise(sheet.headers[0], region).e164:
        return []
    raise InputError(
        f"{path}: suppression list has no phone column (looked for headers like Phone, Mobile, "
        f"MSISDN, Number); headers: {', '.join(repr(h) for h in sheet.headers)}. "
        "Rename the number column's header to Phone"
    )


def _text_lines(path: Path) -> tuple[list[str], dict[int, tuple[str, str]]]:
    """A .txt list's lines, decoded like a CSV sheet (UTF-8/16, Windows-1252, mixed lines reported)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read suppression list: {exc.strerror}") from None
    text, bad_lines = decode_text(path, data, None)
    return text.splitlines(), {line: ("row_not_utf8", why) for line, why in bad_lines.items()}


class _RowBuilder:
    """Walks the sheet once, turning each row into a Recipient and its Issues."""

    def __init__(
        self,
        campaign: Campaign,
        sheet: Sheet,
        template: MessageTemplate,
        variables: dict[str, int],
        phone_indexes: tuple[int, ...],
        mapped: dict[str, int | None],
        suppressed: set[str],
        earlier: EarlierWork | None = None,
    ) -> None:
        self.campaign = campaign
        self.earlier = earlier
        self.template = template
        self.used = {name: variables[name] for name in template.variables}
        self.headers = sheet.headers
        self.phone_indexes = phone_indexes
        self.suppressed = suppressed
        self.sheet = sheet
        self.row_problems = sheet.row_problems
        shown_columns = {*self.used.values(), *(i for i in mapped.values() if i is not None)}
        self.unshown = [(sheet.headers[i], sheet.unshown[i]) for i in sorted(shown_columns) if i in sheet.unshown]
        self.first_row_of: dict[str, int] = {}
        self.shared_attachments = campaign_attachments(campaign)
        self.campaign_id = campaign.id
        self.attachment_index = mapped.get("attachments")
        self.timezone_index = mapped.get("timezone")
        defaults = {"phone_line_id": campaign.send.phone_line_id, "effect": campaign.send.effect}
        self.extra_sources = [
            (mapped.get(name), defaults.get(name)) for name in ("name", "external_id", "phone_line_id", "effect")
        ]

    def build(self, plan: Plan, keep_work: bool = False) -> RowWork | None:
        inputs = self.render_inputs() if keep_work or self.earlier is not None else None
        if self.earlier is not None and inputs is not None:
            phones, renders, reused = self._reuse_work(self.earlier, inputs)
        else:
            (phones, renders), reused = self._pure_work(), 0
        rows = zip(self.sheet.row_numbers, self.sheet.frame.iter_rows(), renders, strict=True)
        plan.recipients.extend(
            self._row(number, cells, phones, rendered, plan.issues) for number, cells, rendered in rows
        )
        return RowWork.of(phones, renders, inputs, reused) if keep_work and inputs is not None else None

    def render_inputs(self) -> pl.DataFrame:
        """Each row's render inputs as columns v0, v1, …: what a message is a pure function of
        (with ``| random``, every phone column's cell too: the seed is the picked number's key)."""
        columns = [self.used[name] for name in sorted(self.used)]
        if self.template.uses_random:  # seeded by the key of the number picked from the phone columns
            columns.extend(self.phone_indexes)
        values = [pl.col(f"c{index}").alias(f"v{i}") for i, index in enumerate(columns)]
        keyed = self.sheet.frame.with_columns(pl.lit("").alias("v"))  # v: a key when no column is used
        return keyed.select("v", *values)

    def _reuse_work(
        self, earlier: EarlierWork, inputs: pl.DataFrame
    ) -> tuple[dict[str, PhoneResult], list[Rendered], int]:
        """Parse only the phones and render only the rows an earlier check did not see."""
        region = self.campaign.default_region
        distinct = dict.fromkeys(cell for i in self.phone_indexes for cell in self.sheet.column(i))
        phones = {raw: earlier.phones.get(raw) or normalise(raw, region) for raw in distinct}
        keys = list(inputs.columns)
        found = inputs.join(earlier.renders.unique(keys), on=keys, how="left", maintain_order="left")
        renders = [Rendered(*values) for values in found.select(RENDERED_FIELDS).iter_rows()]
        missing = found.select(pl.arg_where(pl.col("reason").is_null())).to_series().to_list()
        if missing:
            seeds = self._seeds(phones) if self.template.uses_random else None
            names = sorted(self.used)
            columns = [self.sheet.column(self.used[name]) for name in names]
            for i in missing:
                context = {name: column[i] for name, column in zip(names, columns, strict=True) if column[i]}
                renders[i] = self.template.render(context, seeds[i] if seeds is not None else "")
        return phones, renders, len(renders) - len(missing)

    def _pure_work(self) -> tuple[dict[str, PhoneResult], list[Rendered]]:
        """Parse every distinct phone and render every row: the slow, pure part of a check.

        A large sheet is split across two forked processes (parsing runs ~40k numbers/s on
        one core here); results come back as plain tuples, which pickle several times faster
        than dataclasses.
        """
        distinct = list(dict.fromkeys(cell for i in self.phone_indexes for cell in self.sheet.column(i)))
        total = len(self.sheet)
        if self.template.uses_random:  # `| random` is seeded by each recipient's key: phones first
            phones = normalise_many(distinct, self.campaign.default_region)
            return phones, self.render_range(0, total, self._seeds(phones))
        if total < PARALLEL_THRESHOLD or (os.cpu_count() or 1) < 2 or "fork" not in mp.get_all_start_methods():
            return normalise_many(distinct, self.campaign.default_region), self.render_range(0, total)
        global _FORKED_BUILDER
        _FORKED_BUILDER = self
        half, middle = len(distinct) // 2, total // 2
        try:
            with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as pool:
                phone_parts = [pool.submit(_phones_of, distinct[:half]), pool.submit(_phones_of, distinct[half:])]
                render_parts = [pool.submit(_render_range, 0, middle), pool.submit(_render_range, middle, total)]
                phone_rows = phone_parts[0].result() + phone_parts[1].result()
                render_rows = render_parts[0].result() + render_parts[1].result()
        finally:
            _FORKED_BUILDER = None
        phones = {raw: PhoneResult(*values) for raw, values in zip(distinct, phone_rows, strict=True)}  # type: ignore[arg-type]
        return phones, [Rendered(*values) for values in render_rows]  # type: ignore[arg-type]

    def _seeds(self, phones: dict[str, PhoneResult]) -> list[str]:
        """Each row's idempotency key (or "" for a row without a valid number)."""
        keys = {raw: idempotency_key(self.campaign_id, r.e164) if r.e164 else "" for raw, r in phones.items()}
        if len(self.phone_indexes) == 1:
            return [keys[raw] for raw in self.sheet.column(self.phone_indexes[0])]
        rows = zip(*(self.sheet.column(i) for i in self.phone_indexes), strict=True)
        return [next((keys[raw] for raw in cells if keys[raw]), "") for cells in rows]

    def render_range(self, start: int, stop: int, seeds: list[str] | None = None) -> list[Rendered]:
        columns = {name: self.sheet.column(index)[start:stop] for name, index in self.used.items()}
        names = list(columns)
        render = self.template.render
        if seeds is not None:
            rows = zip(*columns.values(), strict=True) if names else ((),) * (stop - start)
            return [
                render({name: value for name, value in zip(names, values, strict=True) if value}, seed)
                for values, seed in zip(rows, seeds[start:stop], strict=True)
            ]
        if not names:
            return [render({}) for _ in range(stop - start)]
        return [
            render({name: value for name, value in zip(names, values, strict=True) if value})
            for values in zip(*columns.values(), strict=True)
        ]

    def _row(
        self, row: int, cells: tuple[str, ...], phones: dict[str, PhoneResult], rendered: Rendered, issues: list[Issue]
    ) -> Recipient:
        index, raw_phone, phone, skipped = self._pick_phone(cells, phones)
        phone_header = self.headers[index]
        problems: list[Issue] = []
        if self.row_problems and row in self.row_problems:
            code, why = self.row_problems[row]
            problems.append(Issue(row, None, "error", code, why))
        for header, unshown in self.unshown:
            if row in unshown:
                problems.append(Issue(row, header, "error", "cell_format_unknown", unshown[row]))
        if phone.error:
            problems.append(Issue(row, phone_header, "error", phone.error, phone.reason))
        elif phone.warning:
            issues.append(Issue(row, phone_header, "warning", phone.warning_code, phone.warning))
        for other, why in skipped:  # a filled cell passed over for a later column's number
            message = f"{why}; the number {phone.e164} from {phone_header!r} is used instead"
            issues.append(Issue(row, self.headers[other], "warning", "phone_skipped", message))
        body = self._body(row, rendered, problems)
        name, external_id, line, effect = self._extras(cells)
        attachments = (
            self._attachments(row, cells, problems) if self.attachment_index is not None else self.shared_attachments
        )
        zone = self._zone(row, cells, problems) if self.timezone_index is not None else None
        e164 = phone.e164
        key = idempotency_key(self.campaign_id, e164) if e164 else None
        status: Status = "sendable"
        reason = ""
        if problems:
            issues.extend(problems)
            status, reason = "error", problems[0].message
        elif e164 in self.suppressed:
            status, reason = "suppressed", "on a suppression list"
        elif (first := self.first_row_of.setdefault(e164, row)) != row:  # type: ignore[arg-type]
            status, reason = "duplicate", f"{e164} repeats row {first}; only row {first} is sent"
            issues.append(Issue(row, phone_header, "warning", "duplicate", reason))
        elif body is not None and (link := find_link(body)) is not None:
            issues.append(Issue(row, None, "warning", "body_link", link_warning(link)))
        source = phone_header if e164 else None
        return Recipient(
            row, raw_phone, e164, body, key, status, reason, name, external_id, line, effect, attachments, zone, source
        )

    def _pick_phone(
        self, cells: tuple[str, ...], phones: dict[str, PhoneResult]
    ) -> tuple[int, str, PhoneResult, list[tuple[int, str]]]:
        """The phone column whose cell holds this row's number: the first valid one in order.

        Returns its index, the cell, the parsed result and the filled cells passed over (index,
        why). Without a valid number, the first filled cell's problem is the row's (or, when
        every cell is empty, that they are)."""
        skipped: list[tuple[int, str]] = []
        for index in self.phone_indexes:
            raw = cells[index]
            result = phones[raw]
            if result.e164:
                return index, raw, result, skipped
            if result.error != "phone_empty":
                skipped.append((index, result.reason))
        first = self.phone_indexes[0]
        if skipped:
            index = skipped[0][0]
            return index, cells[index], phones[cells[index]], []
        if len(self.phone_indexes) == 1:
            return first, cells[first], phones[cells[first]], []
        names = ", ".join(repr(self.headers[i]) for i in self.phone_indexes)
        return first, "", PhoneResult(None, "phone_empty", f"every phone cell is empty ({names})"), []

    def _zone(self, row: int, cells: tuple[str, ...], problems: list[Issue]) -> str | None:
        assert self.timezone_index is not None
        value = cells[self.timezone_index]
        if not value:
            return None
        if value not in _valid_zones():
            header = self.headers[self.timezone_index]
            problems.append(Issue(row, header, "error", "timezone_invalid", f"unknown time zone {value!r}"))
            return None
        return value

    def _body(self, row: int, rendered: Rendered, problems: list[Issue]) -> str | None:
        if rendered.error:
            column = self.headers[self.used[rendered.variable]] if rendered.variable in self.used else None
            problems.append(Issue(row, column, "error", rendered.error, rendered.reason))
            return None
        body = rendered.body or ""
        limit = self.campaign.max_body_chars
        if not body.strip():
            problems.append(Issue(row, None, "error", "body_empty", "the message is empty after rendering"))
            return None
        if len(body) > limit:
            problems.append(
                Issue(
                    row,
                    None,
                    "error",
                    "body_too_long",
                    f"the message is {len(body):,} characters; the limit is {limit:,}",
                )
            )
        return body

    def _extras(self, cells: tuple[str, ...]) -> tuple[str | None, ...]:
        """name, external_id, phone_line_id, effect: the row's cell, else the campaign default."""
        return tuple(
            (cells[index] or default) if index is not None else default for index, default in self.extra_sources
        )

    def _attachments(self, row: int, cells: tuple[str, ...], problems: list[Issue]) -> tuple[AttachmentRef, ...]:
        refs = list(self.shared_attachments)
        index = self.attachment_index
        if index is not None and cells[index]:
            for item in cells[index].replace(";", ",").split(","):
                ref = attachment_ref(item.strip(), self.campaign.source.resolve().parent)
                if ref.is_file and not Path(ref.value).is_file():
                    problems.append(
                        Issue(
                            row,
                            self.headers[index],
                            "error",
                            "attachment_missing",
                            f"attachment file {item.strip()!r} does not exist",
                        )
                    )
                refs.append(ref)
        return tuple(refs)


@lru_cache(maxsize=1)
def _valid_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


_FORKED_BUILDER: _RowBuilder | None = None


def _render_range(start: int, stop: int) -> list[tuple[object, ...]]:
    assert _FORKED_BUILDER is not None, "only called in a worker forked by _pure_work"
    return [astuple_fast(r) for r in _FORKED_BUILDER.render_range(start, stop)]


def _phones_of(raws: list[str]) -> list[tuple[object, ...]]:
    assert _FORKED_BUILDER is not None, "only called in a worker forked by _pure_work"
    region = _FORKED_BUILDER.campaign.default_region
    return [astuple_fast(normalise(raw, region)) for raw in raws]


def astuple_fast(value: PhoneResult | Rendered) -> tuple[object, ...]:
    return tuple(getattr(value, name) for name in value.__slots__)


def attachment_ref(text: str, base: Path) -> AttachmentRef:
    """A string names a local file when it has a path separator or a file extension."""
    if "/" in text or "\\" in text or Path(text).suffix:
        return AttachmentRef(str((base / text).resolve()), is_file=True)
    return AttachmentRef(text)


def campaign_attachments(campaign: Campaign) -> tuple[AttachmentRef, ...]:
    base = campaign.source.resolve().parent
    refs = []
    for spec in campaign.send.attachments:
        if isinstance(spec, str):
            refs.append(attachment_ref(spec, base))
        elif spec.file is not None:
            refs.append(AttachmentRef(str((base / spec.file).resolve()), True, live_photo=spec.live_photo))
        elif spec.id is not None:
            refs.append(AttachmentRef(spec.id, shape="id", live_photo=spec.live_photo))
        else:
            assert spec.attachment_id is not None
            refs.append(AttachmentRef(spec.attachment_id, shape="attachment_id", live_photo=spec.live_photo))
    for ref in refs:
        if ref.is_file and not Path(ref.value).is_file():
            raise ConfigError(f"{campaign.source}: send.attachments: file {ref.value} does not exist")
    return tuple(refs)


def _line_word(path: Path) -> str:
    """What the user calls a list's entries: a workbook has rows, a text file lines."""
    return "row" if path.suffix.lower() in (".xlsx", ".xlsm") else "line"
