"""Progress for people: a tqdm bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from tqdm import tqdm

from chertcast.engine import RunStats


def _done(stats: RunStats) -> int:
    return stats.sent + stats.duplicate + stats.failed


class BarProgress:
    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        sized = shutil.get_terminal_size((0, 0)).columns > 0  # a pty of width 0 would hide the bar
        self._bar = tqdm(
            total=total, unit="msg", file=stream, dynamic_ncols=sized, ncols=None if sized else 100, smoothing=0.1
        )

    def update(self, stats: RunStats) -> None:
        self._bar.n = _done(stats)
        self._bar.set_postfix(
            sent=stats.sent,
            duplicate=stats.duplicate,
            failed=stats.failed,
            retrying=stats.retrying_now,
            refresh=False,
        )
        self._bar.refresh()

    def close(self, stats: RunStats) -> None:
        self.update(stats)
        self._bar.close()


class LineProgress:
    """One line every ``every_s`` seconds: readable in CI logs and cron mail."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, every_s: float = 5.0) -> None:
        self._total, self._stream, self._every = total, stream, every_s
        self._start = self._last = time.monotonic()

    def update(self, stats: RunStats) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._print(stats, now)

    def close(self, stats: RunStats) -> None:
        self._print(stats, time.monotonic())

    def _print(self, stats: RunStats, now: float) -> None:
        done = _done(stats)
        rate = done / max(now - self._start, 1e-9)
        eta = (self._total - done) / rate if rate > 0 else float("inf")
        eta_text = f"{eta:,.0f}s" if eta != float("inf") else "?"
        print(
            f"progress: {done:,}/{self._total:,} done, {stats.sent:,} sent, {stats.duplicate:,} duplicate, "
            f"{stats.failed:,} failed, {stats.retrying_now} retrying, {rate:,.1f} msg/s, ETA {eta_text}",
            file=self._stream,
            flush=True,
        )
