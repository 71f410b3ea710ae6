"""Phone numbers → E.164 with phonenumbers, or a reason a person can act on."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult

_DIGITS_ONLY = re.compile(r"^\d{8,15}$")
_SCIENTIFIC = re.compile(r"^\d(\.\d+)?[eE]\+?\d+$")
_NANP_LAYOUT = re.compile(r"^(?:\+1|1)?[ .-]?\(?([2-9][0-9]{2})\)?[ .-]?([0-9]{3})[ .-]?([0-9]{4})$")
_NANP_REGIONS = frozenset(phonenumbers.region_codes_for_country_code(1))
_FLOAT_OF_INTEGER = re.compile(r"^(\d{7,15})\.0+$")
# "415-555-0104 (mobile)": a label in brackets after the number. phonenumbers would read its
# letters as a vanity number's digits ("mobile" → 662453), making the number "too long".
_TRAILING_LABEL = re.compile(r"\s*[(\[]\s*[^\W\d_][^()\[\]\d]*[)\]]\s*$")
_NOT_IMESSAGE = {
    PhoneNumberType.FIXED_LINE: "a landline",
    PhoneNumberType.TOLL_FREE: "a toll-free number",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.PAGER: "a pager number",
    PhoneNumberType.UAN: "a company (UAN) number",
    PhoneNumberType.VOICEMAIL: "a voicemail number",
}
_LENGTH_REASONS = {
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "the wrong length",
    ValidationResult.INVALID_COUNTRY_CODE: "an unknown country code",
}


@dataclass(frozen=True, slots=True)
class PhoneResult:
    """E.164 (or None), an error code + reason, and a warning for numbers iMessage won't reach."""

    e164: str | None
    error: str | None = None
    reason: str = ""
    warning: str | None = None
    warning_code: str = "not_imessage"


def normalise_many(raws: Iterable[str], default_region: str) -> dict[str, PhoneResult]:
    """Normalise each distinct value once (sheets repeat numbers)."""
    return {raw: normalise(raw, default_region) for raw in dict.fromkeys(raws)}


@lru_cache(maxsize=262_144)
def normalise(raw: str, default_region: str) -> PhoneResult:
    """Cached: sheets repeat numbers, and parsing is the slowest step of a check."""
    text = raw.strip()
    if not text:
        return PhoneResult(None, "phone_empty", "the phone cell is empty")
    if _SCIENTIFIC.match(text):
        return PhoneResult(
            None,
            "phone_scientific",
            f"{text!r} is in scientific notation, so digits were lost; format the column as text",
        )
    if whole := _FLOAT_OF_INTEGER.match(text):
        text = whole.group(1)  # "14155552671.0": a number cell printed as a float, lossless
    text = _TRAILING_LABEL.sub("", text) or text
    number = _parse(text, default_region)
    if number is None and _DIGITS_ONLY.match(text):
        number = _parse("+" + text, None)  # an Excel number cell that lost its "+"
    if number is None:
        return _explain(text, default_region)
    e164 = phonenumbers.format_number(number[0], phonenumbers.PhoneNumberFormat.E164)
    if number[0].extension:
        return PhoneResult(
            e164,
            warning=f"{text!r} has an extension ({number[0].extension}); iMessage goes to {e164} itself, "
            "the extension is dropped",
            warning_code="phone_extension",
        )
    kind = _NOT_IMESSAGE.get(number[1])
    warning = f"{e164} looks like {kind}, which cannot receive iMessage" if kind else None
    return PhoneResult(e164, warning=warning)


def _parse(text: str, region: str | None) -> tuple[phonenumbers.PhoneNumber, int] | None:
    """The number and its type, or None when invalid.

    ``number_type(n) != UNKNOWN`` is exactly ``is_valid_number(n)`` (both find the region,
    then match the type patterns), so one call answers both at half the cost.
    """
    number = _parse_nanp(text, region) or _parse_any(text, region)
    if number is None:
        return None
    kind = phonenumbers.number_type(number)
    return None if kind == PhoneNumberType.UNKNOWN else (number, kind)


def _parse_any(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException:
        return None


def _parse_nanp(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    """The common North American layouts without the general parser (about 40 % of a check).

    Only for text that is unambiguously +1 (or national in a +1 region), matching exactly
    what ``phonenumbers.parse`` builds from it; validity is still decided by ``number_type``.
    A test compares the two on thousands of inputs.
    """
    match = _NANP_LAYOUT.match(text)
    if match is None or not (text.startswith("+") or region in _NANP_REGIONS):
        return None
    return phonenumbers.PhoneNumber(country_code=1, national_number=int("".join(match.groups())))


_INTERNATIONAL_00 = re.compile(r"^\s*00\s*([1-9].*)$")
_LETTER = re.compile(r"[^\W\d_]")
_EXTENSION_WORDS = re.compile(r"(?i)(ext\.?|extension|x)\s*\d+\s*$")


def _explain(text: str, region: str) -> PhoneResult:
    return PhoneResult(None, "phone_invalid", _why(text, region) + _hint(text, region))


def _why(text: str, region: str) -> str:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            return f"{text!r} has an unknown country code"
        if exc.error_type == NumberParseException.TOO_LONG:
            return f"{text!r} is too long to be a phone number"
        return f"{text!r} is not a phone number"
    length = phonenumbers.is_possible_number_with_reason(number)
    if length in _LENGTH_REASONS:
        return f"{text!r} is {_LENGTH_REASONS[length]}"
    # An invalid number has no region of its own: name its country code's, not the default region.
    where = phonenumbers.region_code_for_country_code(number.country_code or 0)
    return f"{text!r} is not a valid number for {where if where != 'ZZ' else region}"


def _hint(text: str, region: str) -> str:
    """What the user most likely typed: a 00 international prefix, or a letter for a digit."""
    international = _INTERNATIONAL_00.match(text)
    if international and _parse("+" + international.group(1), None) is not None:
        number = phonenumbers.parse("+" + international.group(1), None)
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return f" (00 is not the international prefix in {region}: write it as {e164})"
    letters = _LETTER.findall(_EXTENSION_WORDS.sub("", text))
    if 0 < len(letters) <= 2 and sum(c.isdigit() for c in text) >= 7:  # a number with a slip, not "n/a"
        return f" (it holds the letter {letters[0]!r}: a digit typed as a letter?)"
    return ""
