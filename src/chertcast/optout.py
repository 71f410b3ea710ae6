"""Opt-outs: which replies revoke consent (a pure rule, kept as data) and the shared list file.

The rule (documented in the README, "Opt-outs"): under the US FCC's 2024 TCPA revocation rule
(47 CFR 64.1200(a)(10), in force April 2025) a reply of STOP, QUIT, END, REVOKE, OPT OUT,
CANCEL or UNSUBSCRIBE revokes consent and must be honoured within 10 business days; carriers'
long-standing keyword set adds STOPALL, and "remove me" is the plainest English for the same.

- A reply that *is* one of those words — any case, any surrounding punctuation, emoji or
  whitespace, spelled "opt-out"/"optout"/"opt out", with courtesy words around it ("Stop
  please", "please STOP!!") — is an opt-out.
- A longer reply that merely *contains* one as a word ("Stop texting me", "I can't stop by
  today") is ambiguous. The rule also covers revocation "by any reasonable means", so it is
  suppressed too (a wrong suppression costs a lead; a wrong message costs a TCPA claim) and
  flagged ``review`` so a person can decide and, if it was not an opt-out, delete its line.
- Words are matched whole: "weekend" holds no END, "stopped" is not STOP.

The list is a projection of the journals that feed it (the journal is the truth): ``merge``
adds numbers not yet in it by writing a temp file, fsync, ``os.replace``, under an exclusive
lock, so two campaigns syncing at once never lose each other's lines and a crash leaves the
old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from chertcast.errors import InputError
from chertcast.export import neutralise
from chertcast.phones import normalise

Verdict = Literal["opt_out", "review", "reply"]

# Each keyword as its words; a reply made of exactly one of these (plus courtesy words) opts out.
KEYWORDS: tuple[tuple[str, ...], ...] = (
    ("stop",),
    ("stopall",),
    ("quit",),
    ("end",),
    ("revoke",),
    ("opt", "out"),
    ("optout",),
    ("cancel",),
    ("unsubscribe",),
    ("remove", "me"),
)
# Words that change nothing when they surround a keyword: "Stop please", "STOP NOW", "unsubscribe, thanks".
COURTESY = frozenset({"please", "pls", "plz", "thanks", "thank", "you", "thx", "ty", "now", "asap", "immediately"})
LIST_HEADERS = ["phone", "opted_out_at", "campaign", "reply", "review"]
_NOT_WORD = re.compile(r"[^\w']+|_+")


def words(text: str) -> list[str]:
    """The reply's words: compatibility-normalised (fullwidth, ligatures), case-folded, split on
    anything that is not a letter or digit; an apostrophe stays inside a word ("can't")."""
    folded = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    return [w.strip("'") for w in _NOT_WORD.split(folded) if w.strip("'")]


def classify(text: str) -> Verdict:
    """``opt_out``: the reply is an opt-out word; ``review``: it contains one; ``reply``: neither."""
    found = words(text)
    core = _trim_courtesy(found)
    if tuple(core) in KEYWORDS:
        return "opt_out"
    if any(_contains(found, keyword) for keyword in KEYWORDS):
        return "review"
    return "reply"


def _trim_courtesy(found: list[str]) -> list[str]:
    start, end = 0, len(found)
    while start < end and found[start] in COURTESY:
        start += 1
    while end > start and found[end - 1] in COURTESY:
        end -= 1
    return found[start:end]


def _contains(found: list[str], keyword: tuple[str, ...]) -> bool:
    size = len(keyword)
    return any(tuple(found[i : i + size]) == keyword for i in range(len(found) - size + 1))


# ------------------------------------------------------------------ the list file


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the opt-out list."""

    phone: str  # E.164
    at: float  # epoch seconds of the reply
    campaign: str
    reply: str
    review: bool

    def cells(self) -> list[str]:
        when = datetime.fromtimestamp(self.at, tz=UTC).isoformat(timespec="seconds")
        return [self.phone, when, self.campaign, str(neutralise(self.reply)), "yes" if self.review else ""]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if we die
        yield


def ensure(path: Path) -> None:
    """Create the list with its header when it is missing (several campaigns may share it)."""
    if path.exists():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            if not path.exists():
                _replace(path, _header_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot create the opt-out list: {exc.strerror}") from None


def merge(path: Path, entries: Iterable[Entry], region: str) -> int:
    """Add the entries whose number the list lacks; returns how many were added.

    Numbers already in the file (written by another campaign, or by hand) are not added again.
    """
    wanted = list(entries)
    if not wanted:
        return 0
    try:
        with _locked(path):
            existing = path.read_bytes() if path.exists() else _header_bytes()
            present = numbers_in(existing.decode("utf-8-sig", errors="replace"), region)
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\r\n")
            added = 0
            for entry in wanted:
                if entry.phone not in present:
                    writer.writerow(entry.cells())
                    present.add(entry.phone)
                    added += 1
            if added:
                text = existing if existing.endswith((b"\n", b"\r")) or not existing else existing + b"\r\n"
                _replace(path, text + out.getvalue().encode("utf-8"))
            return added
    except OSError as exc:
        raise InputError(f"{path}: cannot write the opt-out list: {exc.strerror}") from None


def numbers_in(text: str, region: str) -> set[str]:
    """The E.164 numbers of a list's phone column (first column when no header says phone)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return set()
    header = [cell.strip().casefold() for cell in rows[0]]
    column = header.index("phone") if "phone" in header else 0
    found = set()
    for row in rows:
        if len(row) > column:
            e164 = normalise(row[column].strip(), region).e164
            if e164:
                found.add(e164)
    return found


def is_empty(path: Path) -> bool:
    """True when the list holds no line but its header (or does not exist yet)."""
    if not path.exists():
        return True
    try:
        rows = [r for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError):
        return False  # let the suppression reader report what is wrong with it
    return len(rows) <= 1 and (not rows or [c.strip().casefold() for c in rows[0]][:1] == ["phone"])


def _header_bytes() -> bytes:
    return (",".join(LIST_HEADERS) + "\r\n").encode("utf-8")


def _replace(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
