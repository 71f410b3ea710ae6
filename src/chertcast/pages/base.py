"""The page environment (package templates, autoescape on) and the atomic write."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from chertcast.errors import InputError


@cache
def environment() -> jinja2.Environment:
    """Trusted templates from the package, untrusted data: every ``{{ }}`` is escaped.

    ``tojson`` (Jinja's own) writes ``<``, ``>``, ``&`` and ``'`` as ``\\u00XX`` escapes, so a cell
    holding ``</script>`` cannot end the JSON block it travels in.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("chertcast.pages", "html"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    # compact, and UTF-8 as it is (a 100,000-row page is ~10 % smaller); still HTML-safe escaped
    env.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "ensure_ascii": False}
    return env


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Building a page makes a few hundred thousand small lists, none in a cycle: the cycle
    collector would walk them all again and again for nothing (half the time of a 100,000-row page)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def write_page(path: Path, text: str) -> int:
    """Write beside the target and move into place (no half page); returns the size in bytes."""
    if path.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{path}: the page must end in .html")
    partial = path.with_name(f".{path.name}.partial.html")
    data = text.encode("utf-8")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None
    return len(data)


def size_text(size: int) -> str:
    """'12.9 MB', '23 kB'."""
    return f"{size / 1e6:,.1f} MB" if size >= 1_000_000 else f"{max(1, round(size / 1e3))} kB"
