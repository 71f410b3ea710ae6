"""One sending run per campaign journal: an exclusive ``flock`` on ``<journal>.lock``.

Cron starts ``send`` every quarter hour whether or not the last run is still up, so two
runs of one campaign meeting is the normal case. The second must not plan the same rows
and double-book line capacity: it finds the lock held and leaves at once (exit 0).

``flock`` belongs to the open file, so the kernel releases it when the process ends in any
way, SIGKILL included: no stale lock can block tomorrow's cron. The file holds the holder's
pid, host and start time, for the message and for ``status``.

A run deletes the file as it ends, which is only safe with the whole of the usual protocol:
deleting a file another process has open and is about to lock would let two runs lock two
different files (one deleted, one new). So the lock is held only once, *after* ``flock``
succeeds, the path is seen to still name the very file that was locked (``fstat`` of the open
file = ``stat`` of the path); otherwise the holder deleted it meanwhile, and the run opens
the path afresh. And a run deletes the file only while it still holds the lock on it. A path
therefore changes its file only in the hands of the lock's holder: two runs can never both
hold it. A killed run leaves its file; the next run locks and reuses it, and deletes it in turn.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from chertcast.errors import ChertcastError, JournalError


@dataclass(frozen=True)
class Holder:
    pid: int | None
    host: str | None
    since: float | None

    @property
    def since_iso(self) -> str | None:
        return datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds") if self.since else None

    def describe(self) -> str:
        if self.pid is None:
            return "another run (starting up)"
        return f"pid {self.pid} on {self.host or '?'}, since {self.since_iso or '?'}"

    def as_json(self) -> dict[str, object]:
        return {"pid": self.pid, "host": self.host, "since": self.since_iso, "description": self.describe()}


class AlreadyRunning(ChertcastError):
    """Another run holds the campaign's journal. Not a failure: the CLI exits 0."""

    exit_code = 0

    def __init__(self, journal: Path, holder: Holder) -> None:
        self.journal, self.holder = journal, holder
        super().__init__(
            f"already sending: {holder.describe()} holds {journal}; this run leaves it to finish (nothing sent, exit 0)"
        )


def lock_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


class RunLock:
    """Held for a whole send, from before the journal is first written until the run ends."""

    def __init__(self, journal: Path, *, waits: tuple[float, ...] = (0.0, 0.05, 0.2)) -> None:
        self.journal = journal
        self.path = lock_path(journal)
        self.waits = waits  # `status` probes for a microsecond: don't mistake it for a run
        self._file: IO[str] | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise ``AlreadyRunning``; never waits for the holder."""
        for _ in range(_REOPENS):
            handle = self._open()
            if not _lock_soon(handle, self.waits):
                holder = _read(handle)
                handle.close()
                raise AlreadyRunning(self.journal, holder)
            if _names(self.path, handle):
                break
            handle.close()  # the holder ended and deleted this file meanwhile: lock the path's new one
        else:
            raise JournalError(f"{self.path}: the run lock file kept being replaced; try again")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}) + "\n")
        handle.flush()
        self._file = handle
        return self

    def _open(self) -> IO[str]:
        try:  # "a+" never truncates: the holder's details stay readable
            return self.path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot create the run lock: {exc.strerror}") from None

    def release(self) -> None:
        """Delete the lock file while still holding it (see the module's docstring), then unlock."""
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            if _names(self.path, self._file):  # not if someone deleted or replaced it by hand meanwhile
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self._file.close()  # closing the file drops the flock
            self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def running(journal: Path) -> Holder | None:
    """The run holding this journal right now, or None. Never blocks a run for longer than a probe."""
    path = lock_path(journal)
    try:
        handle = path.open("r", encoding="utf-8")
    except FileNotFoundError:
        return None
    with handle:
        if _try_lock(handle, fcntl.LOCK_SH):
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
        return _read(handle)


_REOPENS = 1000  # each reopen means another run ended in between: never reached in practice


def _lock_soon(handle: IO[str], waits: tuple[float, ...]) -> bool:
    for pause in waits:
        time.sleep(pause)
        if _try_lock(handle, fcntl.LOCK_EX):
            return True
    return False


def _names(path: Path, handle: IO[str]) -> bool:
    """Whether ``path`` still names the file ``handle`` has open (not deleted, not replaced)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _try_lock(handle: IO[str], kind: int) -> bool:
    try:
        fcntl.flock(handle, kind | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _read(handle: IO[str]) -> Holder:
    handle.seek(0)
    try:
        data = json.loads(handle.read() or "{}")
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    pid, host, since = data.get("pid"), data.get("host"), data.get("since")
    return Holder(
        pid if isinstance(pid, int) else None,
        host if isinstance(host, str) else None,
        float(since) if isinstance(since, int | float) else None,
    )
