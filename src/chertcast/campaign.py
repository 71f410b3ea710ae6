"""The campaign file: a TOML document validated with pydantic, paths resolved beside it."""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chertcast.capacity import CapacityRules, QuietHours, parse_clock
from chertcast.errors import ConfigError

PRODUCTION_BASE_URL = "https://console.trychert.com/api/v1"
SECRET_ENV = "CHERT_SIGNING_SECRET"
SECRET_FILE_ENV = "CHERT_SIGNING_SECRET_FILE"
DEFAULT_SECRET_FILE = Path("~/.config/chertcast/secret")
BASE_URL_ENV = "CHERT_BASE_URL"
DEFAULT_MAX_BODY_CHARS = 2000
# Plan each line's gap a little wider than Chert's: Chert times a send when it arrives, so a
# plan at exactly 10:00 could meet an avoidable 4002. 5 s on Chert's 10 minutes; 10 % of a
# rehearsal's second-scale gap (a flat 5 s would swamp it).
GAP_MARGIN_S = 5.0  # at most
GAP_MARGIN_SHARE = 0.1


def gap_margin(gap_s: float) -> float:
    """How much wider than Chert's gap a line's first touches are planned."""
    return min(GAP_MARGIN_S, GAP_MARGIN_SHARE * gap_s)


Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]


def _id_text(value: str) -> str:
    if not value.strip() or value != value.strip() or any(ch.isspace() for ch in value):
        raise ValueError(f"{value!r} is not an id: it must not be empty or contain spaces")
    return value


Id = Annotated[str, AfterValidator(_id_text)]  # a tenant or sender line id


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Columns(_Strict):
    """Which sheet header feeds each field (matched ignoring case, spaces, `_` and `-`)."""

    phone: str | list[str] | None = None  # a list: tried in order per row, the first valid number wins
    name: str | None = None
    external_id: str | None = None
    phone_line_id: str | None = None
    effect: str | None = None
    attachments: str | None = None
    timezone: str | None = None

    @field_validator("phone", mode="before")
    @classmethod
    def _phone_headers(cls, value: object) -> object:
        example = 'e.g. phone = "Mobile" or phone = ["Mobile Phone Number", "Phone Number"]'
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError(f"give a header name or a list of header names ({example}), not {value!r}")
        if not value:
            raise ValueError(f"the list is empty: name at least one header ({example})")
        for position, item in enumerate(value, start=1):
            if not isinstance(item, str) or not item.strip():
                raise ValueError(f"item {position} ({item!r}) is not a header name ({example})")
        return value


class AttachmentSpec(_Strict):
    """One campaign-wide attachment: a Chert id in any /send shape, or a local file."""

    id: str | None = None
    attachment_id: str | None = None
    file: str | None = None
    live_photo: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> AttachmentSpec:
        if sum(v is not None for v in (self.id, self.attachment_id, self.file)) != 1:
            raise ValueError("give exactly one of id, attachment_id or file")
        return self


class SendSettings(_Strict):
    rate: float = Field(default=5.0, gt=0, le=10_000, description="messages per second")
    burst: int = Field(default=5, ge=1, le=10_000)
    concurrency: int = Field(default=8, ge=1, le=256)
    effect: str | None = None
    attachments: list[str | AttachmentSpec] = Field(default_factory=list)
    phone_line_id: Id | None = None
    max_attempts: int = Field(default=6, ge=1, le=50)
    max_backoff_s: float = Field(default=60.0, gt=0)
    failure_threshold: float = Field(default=0.5, gt=0, le=1)
    failure_window: int = Field(default=50, ge=5)
    timeout_s: float = Field(default=30.0, gt=0)


class CapacitySettings(_Strict):
    """Chert's first-touch capacity. Defaults are Chert's published limits."""

    enabled: bool = True
    lines: list[Id] = Field(default_factory=list)  # empty: discovered with GET /phone-numbers
    line_gap_minutes: float = Field(default=10.0, ge=0, allow_inf_nan=False)
    line_daily_cap: int = Field(default=30, ge=1)
    project_daily_cap: int | None = Field(default=None, ge=1)
    window_start: str | None = Field(default=None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    window_end: str | None = Field(default=None, pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")
    timezone: str = "UTC"
    horizon_days: int = Field(default=14, ge=1)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _check_zone(value)

    @field_validator("lines")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        twice = sorted({line for line in value if value.count(line) > 1})
        if twice:
            raise ValueError(f"line {twice[0]!r} is listed more than once (each line has one capacity)")
        return value

    @model_validator(mode="after")
    def _window_pair(self) -> CapacitySettings:
        if (self.window_start is None) != (self.window_end is None):
            raise ValueError("give both window_start and window_end, or neither")
        if self.window_start is not None and self.window_end is not None:
            _check_order("window_start", self.window_start, "window_end", self.window_end, "the project may send")
        return self

    def rules(self) -> CapacityRules:
        return CapacityRules(
            line_gap_s=self.line_gap_minutes * 60,
            line_daily_cap=self.line_daily_cap,
            project_daily_cap=self.project_daily_cap,
            window_start=parse_clock(self.window_start) if self.window_start else None,
            window_end=parse_clock(self.window_end) if self.window_end else None,
            timezone=self.timezone,
        )

    def planning_rules(self) -> CapacityRules:
        """The rules chertcast plans with — Chert's, with the line-gap margin. The one place
        the margin is applied: `send`, `check`'s calendar and `status`'s next slot all use it."""
        rules = self.rules()
        return dataclasses.replace(rules, line_gap_s=rules.line_gap_s + gap_margin(rules.line_gap_s))


class QuietHoursSettings(_Strict):
    """Never deliver outside [start, end) in the recipient's local time."""

    enabled: bool = True
    start: str = Field(default="08:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(default="21:00", pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")

    @model_validator(mode="after")
    def _order(self) -> QuietHoursSettings:
        _check_order("start", self.start, "end", self.end, "a recipient may receive messages (their local time)")
        return self

    def hours(self, fallback_zone: str) -> QuietHours:
        return QuietHours(parse_clock(self.start), parse_clock(self.end), fallback_zone)


def _check_order(start_key: str, start: str, end_key: str, end: str, meaning: str) -> None:
    """Both windows are the *allowed* period within one local day: start must come before end."""
    if parse_clock(start) >= parse_clock(end):
        raise ValueError(
            f"{start_key} {start!r} is not before {end_key} {end!r}: these keys give the hours when {meaning}, "
            f"from {start_key} to {end_key} on the same day (e.g. 08:00 and 21:00), not the hours to avoid; "
            "a window across midnight is not supported"
        )


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as America/New_York)") from None
    return value


class ApiSettings(_Strict):
    base_url: str = PRODUCTION_BASE_URL
    auth: Literal["bearer", "hmac"] = "bearer"
    tenant: Id | None = None
    secret_file: Path | None = None  # for unattended runs: a file only its owner can read

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return clean_base_url(value)


_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhms])\s*$")
_DELAY_UNITS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
StopReason = Literal["reply", "opt_out"]
STOP_REASONS: tuple[StopReason, ...] = ("reply", "opt_out")


def parse_delay(text: str) -> float:
    """ "3d", "12h", "30m", "45s" → seconds (one number, one unit; 0 is allowed)."""
    match = _DELAY.match(text)
    if match is None:
        raise ValueError(f'{text!r} is not a delay: write a number and one unit, d, h, m or s ("3d", "45s")')
    return float(match.group(1)) * _DELAY_UNITS[match.group(2)]


class FollowUpStep(_Strict):
    """One `[[follow_up]]` table: sent `after` the previous step was delivered, unless stopped."""

    after: str
    template: Path | None = None
    body: str | None = None
    stop_on: list[StopReason] = Field(default_factory=lambda: list(STOP_REASONS))

    @field_validator("after")
    @classmethod
    def _delay(cls, value: str) -> str:
        parse_delay(value)
        return value

    @field_validator("stop_on")
    @classmethod
    def _opt_out_always(cls, value: list[StopReason]) -> list[StopReason]:
        if "opt_out" not in value:
            raise ValueError('stop_on must include "opt_out": a number that opted out is never messaged again (TCPA)')
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FollowUpStep:
        if (self.template is None) == (self.body is None):
            raise ValueError("give exactly one of `template` (a Jinja file) or `body` (inline text)")
        return self

    @property
    def delay_s(self) -> float:
        return parse_delay(self.after)


_NOT_CP1252 = (0x81, 0x8D, 0x8F, 0x90, 0x9D)  # bytes Windows-1252 leaves undefined
_REGION_ALIASES = {"UK": "GB", "EN": "GB", "ENG": "GB", "EL": "GR", "USA": "US", "UAE": "AE"}


class Campaign(_Strict):
    id: Slug
    contacts: Path
    sheet: str | None = None
    encoding: str | None = None
    template: Path | None = None
    body: str | None = None
    default_region: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    header_row: int = Field(default=1, ge=1, le=1000)
    max_body_chars: int = Field(default=DEFAULT_MAX_BODY_CHARS, ge=1, le=10_000)
    suppress: list[Path] = Field(default_factory=list)
    opt_out_list: Path | None = None  # written by `sync`, read like `suppress`; shared by campaigns
    columns: Columns = Field(default_factory=Columns)
    send: SendSettings = Field(default_factory=SendSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    quiet_hours: QuietHoursSettings = Field(default_factory=QuietHoursSettings)
    follow_up: list[FollowUpStep] = Field(default_factory=list)  # steps 2, 3, …: the first touch is step 1
    source: Path = Field(default=Path("campaign.toml"), exclude=True)

    @field_validator("default_region", mode="before")
    @classmethod
    def _region(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        code = value.strip().upper()
        if code in _REGION_ALIASES:
            raise ValueError(f"{value!r} is not a region code; use {_REGION_ALIASES[code]!r}")
        if code not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region code phone numbers use (ISO 3166 letters such as US, GB, DE)")
        return code

    @model_validator(mode="after")
    def _one_message_source(self) -> Campaign:
        if (self.template is None) == (self.body is None):
            raise ValueError("give exactly one of `template` (a Jinja file) or `body` (inline text)")
        return self

    @property
    def steps(self) -> int:
        """How many steps the sequence has: the first touch and each `[[follow_up]]`."""
        return 1 + len(self.follow_up)

    def for_step(self, step: int) -> Campaign:
        """This campaign with step ``step``'s message (1: the first touch, unchanged)."""
        if not 1 <= step <= self.steps:
            raise ConfigError(f"{self.source}: there is no step {step}: this campaign has steps 1 to {self.steps}")
        if step == 1:
            return self
        follow = self.follow_up[step - 2]
        return self.model_copy(update={"template": follow.template, "body": follow.body, "follow_up": []})

    @property
    def default_journal(self) -> Path:
        return self.source.with_name(f"{self.source.stem}.journal.sqlite")

    def inputs(self) -> dict[Path, str]:
        """Every file this campaign reads or keeps, with what it is: never to be written over."""
        found: dict[Path, str] = {self.source: "campaign file", self.contacts: "contacts"}
        if self.template is not None:
            found[self.template] = "template"
        for path in self.suppress:
            found[path] = "suppression list"
        if self.opt_out_list is not None:
            found[self.opt_out_list] = "opt-out list"
        for step in self.follow_up:
            if step.template is not None:
                found[step.template] = "template"
        base = self.source.resolve().parent
        for spec in self.send.attachments:
            name = spec if isinstance(spec, str) else spec.file
            if name and ("/" in name or "\\" in name or Path(name).suffix):
                found[base / name] = "attachment"
        for journal in (self.default_journal, self.source.with_name(f"{self.source.stem}.sandbox.journal.sqlite")):
            found.update(journal_files(journal))
        return found

    def template_source(self) -> tuple[str, str]:
        """The message template and the encoding it was read in.

        UTF-8 (a BOM is dropped: it would start every message with an invisible U+FEFF),
        else Windows-1252 as for sheets; composed to NFC like the sheet's headers and cells.
        """
        if self.body is not None:
            return unicodedata.normalize("NFC", self.body), "utf-8"
        assert self.template is not None
        try:
            data = self.template.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{self.source}: template {self.template} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"{self.source}: cannot read template {self.template}: {exc.strerror}") from None
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            try:
                text, encoding = data.decode("utf-16"), "utf-16"
            except UnicodeDecodeError:
                raise ConfigError(f"{self.template}: damaged UTF-16 text; save the template as UTF-8") from None
        else:
            try:
                text, encoding = data.decode("utf-8-sig"), "utf-8"
            except UnicodeDecodeError:
                if any(byte in data for byte in _NOT_CP1252):
                    raise ConfigError(
                        f"{self.template}: the template is neither UTF-8 nor Windows-1252 text; save it as UTF-8"
                    ) from None
                text, encoding = data.decode("cp1252"), "windows-1252"
        return unicodedata.normalize("NFC", text.removeprefix("\ufeff")), encoding

    def rehearsal(self) -> Campaign:
        """The campaign as a ``--sandbox`` rehearsal sees it: its opt-outs go to and come from a
        list of their own beside the real one (``<list>.sandbox.csv``), so the sandbox's made-up
        replies never suppress a real recipient."""
        if self.opt_out_list is None:
            return self
        listed = self.opt_out_list
        return self.model_copy(update={"opt_out_list": listed.with_name(f"{listed.stem}.sandbox{listed.suffix}")})

    def resolved_base_url(self) -> str:
        override = os.environ.get(BASE_URL_ENV, "").strip()
        if override:
            try:
                return clean_base_url(override)
            except ValueError as exc:
                raise ConfigError(f"{BASE_URL_ENV}: {exc}") from None
        return self.api.base_url


def journal_files(journal: Path) -> dict[Path, str]:
    """A journal and the files SQLite and the run lock keep beside it: never an output file."""
    return {journal.with_name(journal.name + suffix): "journal" for suffix in ("", "-wal", "-shm", ".lock")}


def clean_base_url(value: str) -> str:
    """The base URL without surrounding spaces or a trailing slash, once it is known to be usable."""
    cleaned = value.strip().rstrip("/")
    if any(ch.isspace() for ch in cleaned):
        raise ValueError(f"base_url {value!r} contains a space")
    check_base_url(cleaned)
    return cleaned


def check_base_url(value: str) -> None:
    """https anywhere; plain http only to a loopback host (the sandbox)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL, got {value!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"base_url {value!r} uses plain http to a non-loopback host; use https "
            "(plain http is allowed only for 127.0.0.1, ::1 and localhost)"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_campaign(path: Path | str) -> Campaign:
    """Read and validate a campaign file; every problem is listed with its key path."""
    source = Path(path)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8-sig"))  # Notepad's BOM is not TOML's business
    except FileNotFoundError:
        raise ConfigError(f"{source}: campaign file does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: the campaign file is not UTF-8 text (byte 0x{exc.object[exc.start]:02X} at offset "
            f"{exc.start}); TOML files must be UTF-8: save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read campaign file: {exc.strerror}") from None
    base = source.resolve().parent
    for key in ("contacts", "template", "opt_out_list"):
        if isinstance(data.get(key), str):
            data[key] = str((base / data[key]).resolve())
    api = data.get("api")
    if isinstance(api, dict) and isinstance(api.get("secret_file"), str):
        api["secret_file"] = str((base / Path(api["secret_file"]).expanduser()).resolve())
    for step in data.get("follow_up") or []:
        if isinstance(step, dict) and isinstance(step.get("template"), str):
            step["template"] = str((base / step["template"]).resolve())
    if isinstance(data.get("suppress"), list):
        data["suppress"] = [str((base / p).resolve()) if isinstance(p, str) else p for p in data["suppress"]]
    try:
        return Campaign.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation(exc)}") from None


_PATTERN_WORDS = {
    r"^[a-z0-9][a-z0-9-]*$": "use lowercase letters, digits and '-', starting with a letter or digit (spring-2026)",
    r"^([01][0-9]|2[0-3]):[0-5][0-9]$": "write a time as HH:MM on the 24-hour clock (e.g. 08:00)",
    r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$": "write a time as HH:MM on the 24-hour clock, or 24:00 (e.g. 21:00)",
    r"^[A-Z]{2}$": "write a two-letter country code in capitals (e.g. US, GB)",
}


def format_validation(exc: ValidationError, model: type[BaseModel] = Campaign) -> str:
    problems = []
    for error in exc.errors():
        loc = list(error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key" + _did_you_mean(model, loc)
        if len(loc) >= 2 and loc[0] == "follow_up" and isinstance(loc[1], int):
            loc[:2] = [f"follow_up step {loc[1] + 2}"]  # step 1 is the first touch
        key = ".".join(str(part) for part in loc) or "(file)"
        if error["type"] == "value_error":  # our own validators' words, without pydantic's "Value error, "
            message = str(error.get("ctx", {}).get("error", message))
        if error["type"] == "string_pattern_mismatch":  # a regex is not an explanation
            message = _PATTERN_WORDS.get(str(error.get("ctx", {}).get("pattern")), message)
        problems.append(f"{key}: {message}")
    return "; ".join(problems)


def _did_you_mean(model: type[BaseModel], loc: Sequence[int | str]) -> str:
    """ " (did you mean `rate`?)" when a known key at the unknown key's level is close to it."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    known = _known_keys(model, loc[:-1])
    key = loc[-1].casefold().replace("-", "_")
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f" (did you mean `{close[0]}`?)"
    tables = [t for t in known if key in _known_keys(model, [*loc[:-1], t])]  # a key one table too high
    return f" (it belongs in [{tables[0]}])" if len(tables) == 1 else ""


def _known_keys(model: type[BaseModel], path: Sequence[int | str]) -> list[str]:
    """The keys accepted in the table at ``path``, a pydantic error location (whose steps are
    keys, list indexes and the name of the union member that was tried)."""
    models = [model]
    for part in path:
        if isinstance(part, int):  # an item of a list of tables (`[[follow_up]]`)
            continue
        fields = [f for m in models for name, f in m.model_fields.items() if part in (name, f.alias)]
        if fields:
            models = [inner for f in fields for inner in _models_in(f.annotation)]
        else:  # which member of a union was tried: "AttachmentSpec", "function-after[…, AttachmentSpec]"
            models = [m for m in models if re.search(rf"\b{m.__name__}\b", part)]
    return [f.alias or name for m in models for name, f in m.model_fields.items() if not f.exclude]


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models a field's type holds: ``SendSettings``, ``list[FollowUpStep]``, ``str | AttachmentSpec``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [inner for arg in get_args(annotation) for inner in _models_in(arg)]
