"""The page environment (package templates, autoescape on) and the atomic write."""

from __future__ import annotations

import os
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
    return jinja2.Environment(
        loader=jinja2.PackageLoader("chertcast.pages", "html"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


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
