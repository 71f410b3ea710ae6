"""Which sheet columns hold the phone numbers: the campaign's list, or the ones detected.

CRM exports carry several phone columns (HubSpot "Phone Number" and "Mobile Phone Number",
Salesforce "Phone" and "Mobile", Pipedrive "Phone - Work" and "Phone - Mobile", Apollo
"Mobile Phone", "Corporate Phone", "Work Direct Phone" …), and the generic one is often
empty. The result is an ordered list: for each row the first of these cells that holds a
valid number is the one sent to (``preflight`` applies it per row).

Detection considers every phone-like header, keeps those that hold a number in some row
(never a column empty in every row), and orders them mobile first — iMessage needs a phone
that can receive it — then generic, direct, home/other, and work/company numbers last.
Pure: reads the sheet it is given, nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from chertcast.contacts import Sheet, clean_cell, header_key
from chertcast.errors import ConfigError
from chertcast.phones import normalise

# Whole headers (matched like every header: case, spaces, `_` and `-` ignored) that name a phone.
PHONE_HEADERS = (
    "phone",
    "mobile",
    "cell",
    "phonenumber",
    "mobilephone",
    "mobilenumber",
    "cellphone",
    "cellnumber",
    "telephone",
    "tel",
    "phoneno",
    "contactnumber",
    "whatsapp",
    "number",
    "msisdn",
    "e164",
    "phonee164",
    "sms",
    "imessage",
)
_MOBILE_WORDS = frozenset(
    {"mobile", "mobil", "cell", "cellular", "cellphone", "mobilephone", "whatsapp", "imessage", "sms", "msisdn"}
)
_PHONE_WORDS = _MOBILE_WORDS | {"phone", "phones", "telephone", "tel", "phonenumber", "telefon", "telefono"}
# Words that make a phone-ish header something else: its type, a flag, a Chert line, a fax,
# or another person's number (the assistant's, the CRM owner's, an emergency contact's).
_NOT_A_NUMBER = frozenset(
    {
        "type",
        "ext",
        "extension",
        "fax",
        "opt",
        "optout",
        "optin",
        "opted",
        "verified",
        "verification",
        "status",
        "carrier",
        "country",
        "code",
        "consent",
        "dnc",
        "label",
        "valid",
        "validated",
        "validity",
        "count",
        "source",
        "confidence",
        "line",
        "id",
        "date",
        "assistant",  # someone else's number: never the recipient's
        "asst",
        "emergency",
        "spouse",
        "owner",
        "manager",
        "reference",
        "referrer",
    }
)
_GENERIC_WORDS = _PHONE_WORDS | {"number", "no", "num", "nr", "primary", "contact", "e164"}
_RANKS = (  # the preference of a non-mobile column, by the words qualifying it (lowest wins)
    (2, frozenset({"direct", "personal", "private", "dial"})),
    (3, frozenset({"home", "other", "alternate", "alt", "secondary", "additional", "2", "3"})),
    (4, frozenset({"work", "business", "office", "corporate", "company", "main", "hq", "organization", "account"})),
)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_WORD = re.compile(r"[^\W_]+")
SAMPLE = 200  # distinct filled cells looked at to tell whether a column holds phone numbers


def header_words(header: str) -> list[str]:
    """'Phone - Mobile' → ['phone', 'mobile']; 'MobilePhone' → ['mobile', 'phone']."""
    return [word.casefold() for word in _WORD.findall(_CAMEL.sub(" ", clean_cell(header)))]


def phone_like(header: str) -> bool:
    """A header that names a phone number (not its type, a flag about it, or a Chert line)."""
    if header_key(header) in PHONE_HEADERS:
        return True
    words = set(header_words(header))
    return bool(words & _PHONE_WORDS) and not words & _NOT_A_NUMBER


def preference(header: str) -> int:
    """0 mobile, 1 generic, 2 direct, 3 home/other, 4 work/company, 5 anything else."""
    words = set(header_words(header))
    if words & _MOBILE_WORDS or header_key(header) in ("mobile", "cell", "mobilenumber", "cellnumber"):
        return 0
    qualifiers = words - _GENERIC_WORDS
    if not qualifiers:
        return 1
    return min((rank for rank, known in _RANKS if qualifiers & known), default=5)


@dataclass(frozen=True, slots=True)
class PhoneColumns:
    """The columns tried per row, in order, and the phone-like columns left out (with why)."""

    indexes: tuple[int, ...]
    detected: bool
    unused: tuple[tuple[int, str], ...] = ()  # (column index, why it is not used)


def choose_phone_columns(setting: str | list[str] | None, sheet: Sheet, region: str, source: Path) -> PhoneColumns:
    """``[columns] phone`` (one header or a list, each found in the sheet), else detection."""
    if setting is None:
        return detect(sheet, region, source)
    wanted = [setting] if isinstance(setting, str) else setting
    indexes: list[int] = []
    for header in wanted:
        index = find_header(sheet, header)
        if index is None:
            headers = ", ".join(repr(h) for h in sheet.headers)
            raise ConfigError(
                f"{source}: columns.phone: no column {header!r} in {sheet.path.name} (headers: {headers})"
            )
        if index in indexes:
            raise ConfigError(
                f"{source}: columns.phone: {header!r} names column {sheet.headers[index]!r} a second time; "
                "list each phone column once"
            )
        indexes.append(index)
    if sheet.row_numbers and not any(_filled(sheet, i) for i in indexes):  # nothing to send to, from any row
        names = ", ".join(repr(sheet.headers[i]) for i in indexes)
        others = [sheet.headers[i] for i, h in enumerate(sheet.headers) if i not in indexes and phone_like(h)]
        hint = f" (phone-like columns that are not: {', '.join(repr(h) for h in others)})" if others else ""
        raise ConfigError(
            f"{sheet.path}: columns.phone in {source.name} names {names}, empty in every row: no row has a "
            f"number to send to; name the column that holds the numbers{hint}"
        )
    unused = tuple(
        (i, "not in [columns] phone" if _filled(sheet, i) else "empty in every row")
        for i, header in enumerate(sheet.headers)
        if i not in indexes and phone_like(header)
    )
    return PhoneColumns(tuple(indexes), False, unused)


def detect(sheet: Sheet, region: str, source: Path) -> PhoneColumns:
    candidates = [i for i, header in enumerate(sheet.headers) if phone_like(header)]
    if not candidates:
        raise ConfigError(
            f"{sheet.path}: no phone column found (looked for headers like Phone, Mobile, Cell, "
            f"Phone Number); set [columns] phone in {source.name}. "
            f"Headers: {', '.join(repr(h) for h in sheet.headers)}"
        )
    filled = [i for i in candidates if _filled(sheet, i)]
    if not filled:
        names = ", ".join(repr(sheet.headers[i]) for i in candidates)
        raise ConfigError(
            f"{sheet.path}: the phone column{'s' if len(candidates) > 1 else ''} {names} "
            f"{'are' if len(candidates) > 1 else 'is'} empty in every row: no row has a number to send to; fill it in, "
            f"or name the column that holds the numbers with [columns] phone in {source.name}"
        )
    with_numbers = [i for i in filled if _holds_numbers(sheet, i, region)]
    chosen = sorted(
        with_numbers or filled, key=lambda i: preference(sheet.headers[i])
    )  # stable: sheet order within a rank
    unused = []
    for i in candidates:
        if i not in chosen:
            why = "empty in every row" if i not in filled else f"no phone number in its first {SAMPLE} filled cells"
            unused.append((i, why))
    return PhoneColumns(tuple(chosen), True, tuple(unused))


def find_header(sheet: Sheet, wanted: str) -> int | None:
    key = header_key(wanted)
    return next((i for i, h in enumerate(sheet.headers) if header_key(h) == key), None)


def _filled(sheet: Sheet, index: int) -> bool:
    return bool((sheet.frame.get_column(f"c{index}") != "").any())


def _holds_numbers(sheet: Sheet, index: int, region: str) -> bool:
    column = sheet.frame.get_column(f"c{index}")
    sample = column.filter(column != "").unique(maintain_order=True).head(SAMPLE).to_list()
    return any(normalise(value, region).e164 for value in sample)


def describe(sheet: Sheet, choice: PhoneColumns, numbers: dict[str, int]) -> list[str]:
    """check's notes: the columns used (with how many numbers each gave) and those left out."""
    counts = [numbers.get(sheet.headers[i], 0) for i in choice.indexes]
    used = ", ".join(
        f"{sheet.headers[i]!r} ({n:,} number{'' if n == 1 else 's'})"
        for i, n in zip(choice.indexes, counts, strict=True)
    )
    plural = len(choice.indexes) > 1
    if choice.detected:
        order = ", tried in this order per row, mobile first" if plural else ""
        how = f"detected{order}; set [columns] phone to choose"
    else:
        how = "[columns] phone" + (", tried in this order per row" if plural else "")
    notes = []
    if choice.detected or plural or choice.unused:
        notes.append(f"phone column{'s' if plural else ''}: {used} ({how})")
    if choice.unused:
        left = ", ".join(f"{sheet.headers[i]!r} ({why})" for i, why in choice.unused)
        notes.append(f"phone-like column{'s' if len(choice.unused) > 1 else ''} not used: {left}")
    return notes
