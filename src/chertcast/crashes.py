"""Crash files: what an internal error leaves behind for a bug report, without the secret.

A crash file goes to ``$XDG_CACHE_HOME/chertcast/crashes/`` (``~/.cache/chertcast/crashes/``
when unset), or to the system temp folder when that cannot be written. It holds the
chertcast and Python versions, the command line and the traceback, with the value of
``CHERT_SIGNING_SECRET`` replaced wherever it appears; the folder is private to the user.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from chertcast._version import __version__
from chertcast.campaign import SECRET_ENV

MASK = f"<{SECRET_ENV}>"


def scrub(text: str) -> str:
    """``text`` with the signing secret (if one is set) masked."""
    secret = os.environ.get(SECRET_ENV, "").strip()
    return text.replace(secret, MASK) if secret else text


def crash_dirs() -> list[Path]:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [Path(cache) / "chertcast" / "crashes", Path(tempfile.gettempdir()) / f"chertcast-crashes-{os.getuid()}"]


def write(details: str) -> Path | None:
    """Write one crash file; its path, or None when no folder could take it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    header = [
        f"chertcast {__version__}, Python {platform.python_version()} on {sys.platform}",
        f"time: {stamp}",
        "command: " + " ".join(sys.argv),
        "",
    ]
    text = scrub("\n".join(header) + details)
    for folder in crash_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = folder / f"crash-{stamp}-{os.getpid()}.txt"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
            return path
        except OSError:
            continue
    return None
