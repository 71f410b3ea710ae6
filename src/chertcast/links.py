"""Does a message hold a link? Chert refuses a first message with a URL in its text (code 1005).

Pure and shared: ``check`` warns with it, and the sandbox's ``reject_links`` switch refuses with
the very same rule, so a rehearsal fails exactly where ``check`` warned.

What counts as a link (what a phone would make tappable), case-insensitive:

- a URL with a scheme: ``https://…``, ``http://…``, ``ftp://…`` (any ``letters://``);
- ``www.`` followed by a name: ``www.example.com``, ``WWW.Example.org/x``;
- a bare domain whose last label is a common top-level domain (``example.com``,
  ``bit.ly/x``, ``go.northwind.io``), or any letters-only last label followed by a path
  (``example.xyz/path``, ``northwind.travel/spring``).

Not links: ``Mr.Smith``, ``St.Louis``, ``3.5``, ``v2.0``, ``e.g.``, ``U.S.``, ``Node.js``,
``file.pdf`` (the last label is not a common top-level domain and no path follows), and an
e-mail address (``ada@example.com`` — not a URL; its domain is not flagged).
"""

from __future__ import annotations

import re
from functools import lru_cache

# Top-level domains seen in links in everyday messages: the generic ones, the ccTLDs that
# link shorteners and start-ups use, and large countries'. Left out on purpose: those that
# are everyday words after a missing space ("Great.It works", "Hi Ada.So glad": it, so, to,
# me, us, in, at, be, no, my, today, shop …). Any of them still counts with a path after it
# (t.me/x, example.shop/spring).
COMMON_TLDS = [
    "com",
    "net",
    "org",
    "edu",
    "gov",
    "info",
    "biz",
    "xyz",
    "io",
    "co",
    "ai",
    "app",
    "dev",
    "ly",
    "gl",
    "gg",
    "tv",
    "fm",
    "sh",
    "cc",
    "ws",
    "la",
    "uk",
    "ca",
    "au",
    "nz",
    "ie",
    "de",
    "fr",
    "es",
    "nl",
    "ch",
    "se",
    "dk",
    "fi",
    "pl",
    "pt",
    "cz",
    "eu",
    "ru",
    "ua",
    "jp",
    "cn",
    "kr",
    "sg",
    "hk",
    "tw",
    "br",
    "mx",
    "ar",
    "cl",
    "za",
    "ng",
    "ke",
    "il",
    "ae",
    "tr",
    "vn",
    "th",
]
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TLD = "|".join(sorted(COMMON_TLDS, key=len, reverse=True))
_END = r"(?![a-z0-9_-])"  # the name ends here: "example.community" is not "example.com"
_LINK = re.compile(
    r"(?<![\w.@-])(?:"  # not inside a word, a longer name or an e-mail address
    r"[a-z][a-z0-9+.-]*://[^\s<>\"']+"  # scheme://…
    rf"|www\.{_LABEL}(?:\.{_LABEL})*[^\s<>\"']*"  # www.…
    rf"|(?:{_LABEL}\.)+(?:{_TLD}){_END}(?:[/?#:][^\s<>\"']*)?"  # example.com, bit.ly/x
    rf"|(?:{_LABEL}\.)+[a-z]{{2,63}}/[^\s<>\"']*"  # example.xyz/path
    r")",
    re.IGNORECASE,
)
# Every link above holds "://" or a dot followed by a letter: most messages are ruled out by
# this quick scan, and the full pattern only runs on the words that hold a dot. Words repeat
# from row to row (the template's own text), so each is judged once.
_HINT = re.compile(r"\.[a-z]|://", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""  # sentence punctuation after a link is not part of it


def find_link(text: str) -> str | None:
    """The first link in ``text`` (trailing punctuation removed), or None."""
    if _HINT.search(text) is None:
        return None
    for word in text.split():
        if "." in word or "://" in word:
            link = _link_in(word)
            if link is not None:
                return link
    return None


@lru_cache(maxsize=65_536)
def _link_in(word: str) -> str | None:
    found = _LINK.search(word)
    return found.group(0).rstrip(_TRAILING) if found else None


@lru_cache(maxsize=1_024)
def link_warning(link: str) -> str:
    """What ``check`` says about a row whose message holds ``link`` (one string per link: a link in
    the template repeats it on every row of a large sheet)."""
    return (
        f"the message holds a link ({link}): Chert refuses a first message with a link (code 1005), "
        "and send stops at the first refusal; take the link out of the first message"
    )
