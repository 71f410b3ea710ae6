"""The command line: options in, one library call, output out. Errors become one line + exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from chertcast import __version__
from chertcast.errors import ChertcastError

F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """Turn our errors into `chertcast: error: <one line>` and their exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ChertcastError as exc:
            click.echo(f"chertcast: error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chertcast")
def cli() -> None:
    """Send bulk iMessage campaigns through Chert's Messaging API, exactly once."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=int, help="Port to listen on.")
@click.option("--secret", default=None, help="Secret to accept (default: the documented sandbox secret).")
@click.option("--latency-ms", default=0.0, show_default=True, help="Added latency per /send.")
@click.option("--jitter-ms", default=0.0, show_default=True, help="Random extra latency, 0..N ms.")
@click.option("--error-500", default=0.0, show_default=True, help="Probability of 3001 / HTTP 500.")
@click.option("--rate-limited", default=0.0, show_default=True, help="Probability of 1007 / HTTP 429.")
@click.option("--saturated", default=0.0, show_default=True, help="Probability of 4002 / HTTP 503.")
@click.option("--retry-after", default=1, show_default=True, help="retry_after for 1007 and 4002, seconds.")
@click.option("--drop-before", default=0.0, show_default=True, help="Probability the connection closes before processing.")
@click.option("--drop-after", default=0.0, show_default=True, help="Probability the connection closes after delivery.")
@click.option("--rate-limit", default=None, type=float, help="Server-side limit in requests/s (over it: 1007).")
@click.option("--dedup-window", default=600.0, show_default=True, help="Dedup window in seconds.")
@click.option("--seed", default=None, type=int, help="Seed for reproducible faults.")
@friendly
def sandbox(host: str, port: int, secret: str | None, latency_ms: float, jitter_ms: float,
            error_500: float, rate_limited: float, saturated: float, retry_after: int,
            drop_before: float, drop_after: float, rate_limit: float | None,
            dedup_window: float, seed: int | None) -> None:  # fmt: skip
    """Serve a local Chert /send stand-in with fault injection, until Ctrl-C."""
    from chertcast.sandbox.model import DEFAULT_SECRET, Faults, SandboxConfig, SandboxModel
    from chertcast.sandbox.server import serve_forever

    faults = Faults(latency_ms=latency_ms, jitter_ms=jitter_ms, error_500=error_500,
                    rate_limited=rate_limited, saturated=saturated, retry_after_s=retry_after,
                    drop_before=drop_before, drop_after=drop_after,
                    rate_limit_per_s=rate_limit, seed=seed)  # fmt: skip
    config = SandboxConfig(secret=secret or DEFAULT_SECRET, faults=faults, dedup_window_s=dedup_window)
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(f"chertcast sandbox listening on http://{shown_host}:{port}/api/v1")
    click.echo(f"accepted secret: {config.secret}  (sandbox only; export CHERT_SIGNING_SECRET={config.secret})")
    click.echo("ledger: GET /_sandbox/deliveries, GET /_sandbox/stats, POST /_sandbox/reset. Ctrl-C to stop.")
    try:
        serve_forever(SandboxModel(config), host, port)
    except OSError as exc:
        raise ChertcastError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def main() -> None:
    cli()
