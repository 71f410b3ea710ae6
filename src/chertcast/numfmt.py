"""Excel number formats → the text a cell shows, for the formats people use in contact sheets.

``show(value, code)`` returns what Excel displays for a number (or date serial) under a
number-format code, or ``None`` when the code is outside what is understood here
(fractions, scientific notation, scaling commas, conditions, locale-dependent built-ins):
the caller then refuses to guess. Understood: dates and times in any order of ``d m y h s``
and ``AM/PM``; digit placeholders with zero padding (``00000``), decimals, thousands
separators, percent; literal text, quoted strings, ``\\x`` escapes, currency symbols
(``$``, ``€``, ``[$€-407]``), colours and ``_x`` spacers; up to 4 sections
(positive;negative;zero;text).
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

# ECMA-376 §18.8.30 built-ins that do not depend on the computer's locale.
BUILTIN = {
    0: "General",
    1: "0",
    2: "0.00",
    3: "#,##0",
    4: "#,##0.00",
    9: "0%",
    10: "0.00%",
    11: "0.00E+00",
    12: "# ?/?",
    13: "# ??/??",
    18: "h:mm AM/PM",
    19: "h:mm:ss AM/PM",
    20: "h:mm",
    21: "h:mm:ss",
    37: "#,##0 ;(#,##0)",
    38: "#,##0 ;[Red](#,##0)",
    39: "#,##0.00;(#,##0.00)",
    40: "#,##0.00;[Red](#,##0.00)",
    45: "mm:ss",
    46: "[h]:mm:ss",
    47: "mmss.0",
    48: "##0.0E+0",
    49: "@",
}
# 14-17 and 22 are the computer's short date / date-time format: what the user sees
# depends on their locale, so they are not guessed (5-8 and 27-36 are locale currency/dates).
LOCALE_DEPENDENT = frozenset({5, 6, 7, 8, 14, 15, 16, 17, 22, *range(27, 37), *range(50, 59)})

_QUOTED = re.compile(r'"[^"]*"|\\.|_.|\*.')
_BRACKET = re.compile(r"\[[^\]]*\]")
_DATE_TOKENS = re.compile(r"yyyy|yy|mmmmm|mmmm|mmm|mm|m|dddd|ddd|dd|d|hh|h|ss|s|am/pm|a/p|e", re.IGNORECASE)
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
EPOCH_1900 = datetime(1899, 12, 30)
EPOCH_1904 = datetime(1904, 1, 1)


def is_plain(code: str) -> bool:
    """General and text formats show the value as stored: nothing to do."""
    return code.strip().lower() in ("general", "@", "")


def show(value: float, code: str, *, date1904: bool = False) -> str | None:
    conditional = _conditional(code)
    if conditional is not None:
        return _show_conditional(value, conditional)
    parsed = _parse(code)
    if parsed is None:
        return None
    if value < 0 and len(parsed) >= 2:
        section, value, sign = parsed[1], -value, ""
    elif value == 0 and len(parsed) >= 3:
        section, sign = parsed[2], ""
    else:
        section, sign = parsed[0], "-" if value < 0 else ""
        value = abs(value)
    if section is None:
        return None
    if isinstance(section, _DateSection):
        return _show_date(value if not sign else -value, section, date1904)
    if isinstance(section, _SplitSection):
        return sign + _fill_groups(value, section)
    return sign + section.prefix + _format_digits(value * section.scale, section.pattern) + section.suffix


@dataclass(frozen=True, slots=True)
class _DateSection:
    tokens: tuple[tuple[str, str], ...]  # ("literal", text) or ("field", d/mm/yyyy/minute …)
    twelve_hour: bool


@dataclass(frozen=True, slots=True)
class _SplitSection:
    """Whole-number digit groups with literal text between them: ``00000-0000`` (ZIP+4),
    ``000-00-0000`` (SSN), ``(###) ###-####`` (phone): digits fill the placeholders from the right."""

    parts: tuple[tuple[str, str], ...]  # ("digits", "000") or ("literal", "-")


@dataclass(frozen=True, slots=True)
class _NumberSection:
    prefix: str
    pattern: str
    suffix: str
    scale: float


@lru_cache(maxsize=1024)
def _parse(code: str) -> tuple[_DateSection | _NumberSection | _SplitSection | None, ...] | None:
    """A format code, parsed once: each section, or None for a section not understood."""
    sections = _split_sections(code)
    if not code.strip() or len(sections) > 4 or any(_BRACKET_CONDITION.search(s) for s in sections):
        return None
    return tuple(_parse_section(section) for section in sections)


def _parse_section(section: str) -> _DateSection | _NumberSection | _SplitSection | None:
    if _is_date(section):
        if re.search(r"\[[hms]+\]", section.lower()):
            return None  # elapsed-time formats ([h]:mm) are not guessed
        tokens = _tokens(section)
        marked = tuple(
            ("minute", text)
            if kind == "field" and text.lower() in ("m", "mm") and _is_minute(tokens, i)
            else (kind, text)
            for i, (kind, text) in enumerate(tokens)
        )
        return _DateSection(marked, bool(re.search(r"am/pm|a/p", section, re.IGNORECASE)))
    literal_free = _without_literals(section)
    if re.search(r"[eE][+-]|/|@", literal_free):
        return None  # scientific, fractions, text placeholders: not guessed
    runs = [r for r in _PLACEHOLDERS.finditer(_mask_literals(section)) if re.search(r"[0#?]", r.group(0))]
    if len(runs) > 1 and not re.search(r"[.,%]", literal_free):
        return _split_section(section, runs)
    if len(runs) > 1 or (runs and runs[0].group(0).endswith(",")):
        return None  # two digit groups, or a trailing comma that scales by 1000
    if not runs:
        return _NumberSection(_literal_text(section), "", "", 1.0)
    start, end = runs[0].span()
    scale = 100.0 ** literal_free.count("%")
    return _NumberSection(_literal_text(section[:start]), runs[0].group(0), _literal_text(section[end:]), scale)


_COMPARE = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "<>": operator.ne,
}
_BRACKET_CONDITION = re.compile(r"\[[<>=]")
_CONDITION = re.compile(r"^\[(<=|>=|<>|<|>|=)(-?\d+(?:\.\d+)?)\]")


def _split_section(section: str, runs: list[re.Match[str]]) -> _SplitSection:
    parts: list[tuple[str, str]] = []
    at = 0
    for run in runs:
        parts += [("literal", _literal_text(section[at : run.start()])), ("digits", run.group(0))]
        at = run.end()
    parts.append(("literal", _literal_text(section[at:])))
    return _SplitSection(tuple(part for part in parts if part[1]))


def _fill_groups(value: float, section: _SplitSection) -> str:
    """Excel fills the placeholders from the right; the leftmost group takes any extra digits;
    a ``0`` with no digit left shows 0, a ``#`` nothing, a ``?`` a space."""
    digits = list(str(int(Decimal(repr(value)).quantize(Decimal(1), rounding=ROUND_HALF_UP))).lstrip("0"))
    groups = [i for i, (kind, _) in enumerate(section.parts) if kind == "digits"]
    shown = [text for _, text in section.parts]
    for index in reversed(groups):
        placeholders = section.parts[index][1]
        out = []
        for char in reversed(placeholders):
            out.append(digits.pop() if digits else {"0": "0", "#": "", "?": " "}[char])
        if index == groups[0] and digits:
            out.extend(reversed(digits))
        shown[index] = "".join(reversed(out))
    return "".join(shown)


def _conditional(code: str) -> tuple[tuple[tuple[str, float] | None, str], ...] | None:
    """``[<=9999999]###-####;(###) ###-####`` (Excel's Special: Phone Number): each section and
    its condition, when the first section has one; None for a code without conditions."""
    sections = _split_sections(code)
    if not _CONDITION.match(sections[0].strip()) or len(sections) > 3:
        return None
    out: list[tuple[tuple[str, float] | None, str]] = []
    for section in sections:
        match = _CONDITION.match(section.strip())
        condition = (match.group(1), float(match.group(2))) if match else None
        out.append((condition, section.strip()[match.end() :] if match else section))
    return tuple(out)


def _show_conditional(value: float, sections: tuple[tuple[tuple[str, float] | None, str], ...]) -> str | None:
    if value < 0:
        return None  # a negative number under a conditional format: not guessed
    for condition, section in sections:
        chosen = section
        if condition is not None and not _COMPARE[condition[0]](value, condition[1]):
            continue
        parsed = _parse(chosen)
        if parsed is None or len(parsed) != 1 or parsed[0] is None or isinstance(parsed[0], _DateSection):
            return None
        return show(value, chosen)
    return None


def _split_sections(code: str) -> list[str]:
    sections, current, quoted, escaped = [], "", False, False
    for char in code:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            current, escaped = current + char, True
        elif char == '"':
            current, quoted = current + char, not quoted
        elif char == ";" and not quoted:
            sections.append(current)
            current = ""
        else:
            current += char
    sections.append(current)
    return sections


def _without_literals(section: str) -> str:
    return _BRACKET.sub("", _QUOTED.sub("", section))


def _is_date(section: str) -> bool:
    bare = _without_literals(section).lower()
    return bool(re.search(r"[dmyhs]", bare)) and not re.search(r"[0#?]", bare.replace(".0", ""))


def _show_date(serial: float, section: _DateSection, date1904: bool) -> str | None:
    if serial < 0:
        return None
    moment = (EPOCH_1904 if date1904 else EPOCH_1900) + timedelta(days=serial)
    moment = (moment + timedelta(milliseconds=500)).replace(microsecond=0)
    out: list[str] = []
    for kind, text in section.tokens:
        if kind == "literal":
            out.append(text)
            continue
        lower = text.lower()
        if kind == "minute":
            out.append(f"{moment.minute:0{len(lower)}d}")
        elif lower in ("am/pm", "a/p"):
            pm = moment.hour >= 12
            word = ("PM" if pm else "AM") if lower == "am/pm" else ("P" if pm else "A")
            out.append(word if text[0].isupper() else word.lower())
        else:
            part = _date_part(moment, lower, section.twelve_hour)
            if part is None:
                return None
            out.append(part)
    return "".join(out)


def _date_part(moment: datetime, token: str, twelve_hour: bool) -> str | None:
    hour = (moment.hour % 12 or 12) if twelve_hour else moment.hour
    parts = {
        "yyyy": f"{moment.year:04d}",
        "yy": f"{moment.year % 100:02d}",
        "e": f"{moment.year}",
        "mmmmm": _MONTHS[moment.month - 1][0],
        "mmmm": _MONTHS[moment.month - 1],
        "mmm": _MONTHS[moment.month - 1][:3],
        "mm": f"{moment.month:02d}",
        "m": f"{moment.month}",
        "dddd": _DAYS[moment.weekday()],
        "ddd": _DAYS[moment.weekday()][:3],
        "dd": f"{moment.day:02d}",
        "d": f"{moment.day}",
        "hh": f"{hour:02d}",
        "h": f"{hour}",
        "ss": f"{moment.second:02d}",
        "s": f"{moment.second}",
    }
    return parts.get(token)


def _is_minute(tokens: list[tuple[str, str]], index: int) -> bool:
    """`m`/`mm` right after an hour or right before a second is minutes, not the month."""
    fields = [(i, t.lower()) for i, (k, t) in enumerate(tokens) if k == "field"]
    position = next(p for p, (i, _) in enumerate(fields) if i == index)
    before = fields[position - 1][1] if position > 0 else ""
    after = fields[position + 1][1] if position + 1 < len(fields) else ""
    return before in ("h", "hh") or after in ("s", "ss")


def _tokens(section: str, *, dates: bool = True) -> list[tuple[str, str]]:
    """A section as fields (d, mm, yyyy …; only with ``dates``) and literal text, in order."""
    out: list[tuple[str, str]] = []
    index = 0
    while index < len(section):
        char = section[index]
        if char == '"':
            end = section.find('"', index + 1)
            end = len(section) if end < 0 else end
            out.append(("literal", section[index + 1 : end]))
            index = end + 1
        elif char == "\\" and index + 1 < len(section):
            out.append(("literal", section[index + 1]))
            index += 2
        elif char in "_*" and index + 1 < len(section):
            out.append(("literal", " " if char == "_" else ""))
            index += 2
        elif char == "[":
            end = section.find("]", index)
            out.append(("literal", _currency(section[index : end + 1])))
            index = end + 1 if end >= 0 else len(section)
        elif dates and (match := _DATE_TOKENS.match(section, index)):
            out.append(("field", match.group(0)))
            index = match.end()
        else:
            out.append(("literal", char))
            index += 1
    return out


def _currency(bracket: str) -> str:
    """``[$€-407]`` → ``€``; colours and locale tags (``[Red]``, ``[$-409]``) show nothing."""
    if bracket.startswith("[$"):
        return bracket[2:-1].split("-", 1)[0]
    return ""


_PLACEHOLDERS = re.compile(r"[0#?,.]+")


def _mask_literals(section: str) -> str:
    """Same length as ``section`` with quoted/escaped/bracketed text replaced by spaces."""
    return _BRACKET.sub(lambda m: " " * len(m.group(0)), _QUOTED.sub(lambda m: " " * len(m.group(0)), section))


def _literal_text(part: str) -> str:
    return "".join(text for _, text in _tokens(part, dates=False))


def _format_digits(number: float, pattern: str) -> str:
    if not pattern:
        return ""
    whole_part, _, fraction_part = pattern.partition(".")
    decimals = sum(1 for c in fraction_part if c in "0#?")
    required_decimals = sum(1 for c in fraction_part if c == "0")
    grouped = "," in whole_part
    min_digits = sum(1 for c in whole_part if c == "0")
    if not math.isfinite(number):
        return str(number)
    rounded = Decimal(repr(number)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    whole, _, fraction = f"{rounded:f}".partition(".")
    whole = whole.lstrip("0")
    whole = whole.rjust(min_digits, "0") if min_digits else whole
    if grouped and whole:
        whole = f"{int(whole):,}".rjust(len(whole), "0") if min_digits <= len(str(int(whole))) else whole
    fraction = fraction.rstrip("0").ljust(required_decimals, "0") if decimals else ""
    return whole + ("." + fraction if fraction or ("." in pattern and required_decimals) else "")
