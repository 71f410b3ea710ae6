"""The command line: options in, one library call, output out. Errors become one line + exit code."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from chertcast import api, crashes, pages, present, runlock, runner
from chertcast._version import __version__
from chertcast.campaign import BASE_URL_ENV, Campaign, load_campaign
from chertcast.capacity import parse_clock
from chertcast.client import Secret
from chertcast.crashes import scrub
from chertcast.credentials import locate_secret, read_secret
from chertcast.engine import RunHooks, RunStats
from chertcast.errors import ChertcastError, InputError, JournalError
from chertcast.export import guard_output, write_table
from chertcast.followups import step_recipient
from chertcast.preflight import build_plan
from chertcast.progress import BarProgress, LineProgress
from chertcast.runner import Endpoint
from chertcast.sync import sent_messages
from chertcast.testsend import run_test_send, summary_json, summary_lines

if TYPE_CHECKING:  # the sandbox is imported only when a command uses it
    from chertcast.sandbox.capacity import CapacityLimits

F = TypeVar("F", bound=Callable[..., Any])
PROBABILITY = click.FloatRange(0.0, 1.0)
NON_NEGATIVE = click.FloatRange(min=0.0)


DEBUG_ENV = "CHERTCAST_DEBUG"


def friendly(func: F) -> F:
    """Turn our errors into `chertcast: error: <one line>` and their exit code.

    A bug of ours (any other exception) is still one line, exit 70, and its traceback goes to
    a crash file whose path the line gives (``CHERTCAST_DEBUG=1`` prints it instead).
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except runlock.AlreadyRunning as exc:  # cron met a run still going: that run does the work
            click.echo(f"chertcast: {exc}", err=True)
            sys.exit(exc.exit_code)
        except ChertcastError as exc:
            click.echo(f"chertcast: error: {exc}", err=True)
            if kwargs.get("as_json"):  # a script reading --json gets the error as JSON too
                click.echo(json.dumps({"error": str(exc), "exit_code": exc.exit_code}, ensure_ascii=False))
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, click.exceptions.Abort):
            click.echo("chertcast: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            report_bug(exc)
            sys.exit(70)

    return wrapper  # type: ignore[return-value]


def report_bug(exc: BaseException) -> None:
    """One scrubbed line on stderr; the scrubbed traceback in a crash file (or on stderr when debugging)."""
    line = scrub(f"chertcast: internal error: {type(exc).__name__}: {str(exc)[:300]}")
    details = scrub("".join(traceback.format_exception(exc)))
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        click.echo(details.rstrip(), err=True)
        click.echo(f"{line} (a bug in chertcast; please report it with the traceback above)", err=True)
        return
    path = crashes.write(details)
    where = f"details in {path}" if path is not None else "no crash file could be written; rerun with CHERTCAST_DEBUG=1"
    click.echo(f"{line} (a bug in chertcast; {where}; please attach it to a report)", err=True)


def quiet_pipe(func: F) -> F:
    """A reader that stops early (`preview | head`) ends the output quietly, like any Unix tool."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)  # the interpreter's last flush goes nowhere
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE, what the shell reports for `cat file | head`

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chertcast")
def cli() -> None:
    """Send bulk iMessage campaigns through Chert's Messaging API, exactly once."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--secret", default=None, help="Secret to accept (default: the documented sandbox secret).")
@click.option("--latency-ms", default=0.0, show_default=True, type=NON_NEGATIVE, help="Added latency per /send.")
@click.option("--jitter-ms", default=0.0, show_default=True, type=NON_NEGATIVE, help="Random extra latency, 0..N ms.")
@click.option("--error-500", default=0.0, show_default=True, type=PROBABILITY, help="Probability of 3001 / HTTP 500.")
@click.option(
    "--rate-limited", default=0.0, show_default=True, type=PROBABILITY, help="Probability of 1007 / HTTP 429."
)
@click.option("--saturated", default=0.0, show_default=True, type=PROBABILITY, help="Probability of 4002 / HTTP 503.")
@click.option(
    "--retry-after", default=1, show_default=True, type=click.IntRange(min=0), help="retry_after for 1007 and 4002, s."
)
@click.option(
    "--drop-before",
    default=0.0,
    show_default=True,
    type=PROBABILITY,
    help="Probability the connection closes before processing.",
)
@click.option(
    "--drop-after",
    default=0.0,
    show_default=True,
    type=PROBABILITY,
    help="Probability the connection closes after delivery.",
)
@click.option(
    "--rate-limit", default=None, type=click.FloatRange(min=0, min_open=True), help="Server-side limit in requests/s."
)
@click.option("--dedup-window", default=600.0, show_default=True, type=NON_NEGATIVE, help="Dedup window in seconds.")
@click.option("--seed", default=None, type=int, help="Seed for reproducible faults.")
@click.option("--lines", "line_count", default=3, show_default=True, type=click.IntRange(1, 500), help="Sender lines.")
@click.option("--capacity", is_flag=True, help="Enforce Chert's first-touch capacity (10 min gap, 30/line/day).")
@click.option("--window", default=None, help="Capacity mode: sending window, e.g. 09:00-18:00.")
@click.option("--timezone", "zone", default="UTC", show_default=True, help="Capacity mode: the project's time zone.")
@click.option(
    "--project-daily-cap", default=None, type=click.IntRange(min=1), help="Capacity mode: first-touch sends per day."
)
@click.option(
    "--line-gap-s",
    default=None,
    type=click.FloatRange(min=0),
    help="Capacity mode: seconds between a line's first touches (default 600; e.g. 1.5 for a rehearsal).",
)
@click.option(
    "--line-daily-cap",
    default=None,
    type=click.IntRange(min=1),
    help="Capacity mode: first touches per line per day (default 30).",
)
@click.option("--reject-links", is_flag=True, help="Refuse a first message whose text holds a link (1005).")
@click.option("--reply-share", default=0.3, show_default=True, type=PROBABILITY, help="Share of delivered who reply.")
@click.option("--opt-out-share", default=0.1, show_default=True, type=PROBABILITY, help="Share of replies opting out.")
@click.option(
    "--contains-word-share",
    default=0.05,
    show_default=True,
    type=PROBABILITY,
    help="Share of replies merely containing an opt-out word.",
)
@click.option("--read-share", default=0.6, show_default=True, type=PROBABILITY, help="Share of delivered read.")
@click.option("--fail-share", default=0.02, show_default=True, type=PROBABILITY, help="Share of sent never delivered.")
@click.option(
    "--outcome-delay-s",
    default=5.0,
    show_default=True,
    type=NON_NEGATIVE,
    help="Delivery within N s; reads, replies 2N.",
)
@click.option("--outcome-seed", default=2, show_default=True, type=int, help="Seed for who reads, replies, opts out.")
@friendly
@quiet_pipe
def sandbox(
    host: str,
    port: int,
    secret: str | None,
    latency_ms: float,
    jitter_ms: float,
    error_500: float,
    rate_limited: float,
    saturated: float,
    retry_after: int,
    drop_before: float,
    drop_after: float,
    rate_limit: float | None,
    dedup_window: float,
    seed: int | None,
    line_count: int,
    capacity: bool,
    window: str | None,
    zone: str,
    project_daily_cap: int | None,
    line_gap_s: float | None,
    line_daily_cap: int | None,
    reject_links: bool,
    reply_share: float,
    opt_out_share: float,
    contains_word_share: float,
    read_share: float,
    fail_share: float,
    outcome_delay_s: float,
    outcome_seed: int,
) -> None:
    """Serve a local Chert /send stand-in with fault injection, until Ctrl-C.

    --line-gap-s and --line-daily-cap turn capacity mode on by themselves.
    """
    from chertcast.sandbox.model import DEFAULT_SECRET, Faults, SandboxConfig, SandboxModel
    from chertcast.sandbox.outcomes import OutcomeConfig
    from chertcast.sandbox.server import bind, serve_forever

    faults = Faults(
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        error_500=error_500,
        rate_limited=rate_limited,
        saturated=saturated,
        retry_after_s=retry_after,
        drop_before=drop_before,
        drop_after=drop_after,
        rate_limit_per_s=rate_limit,
        seed=seed,
    )
    custom = line_gap_s is not None or line_daily_cap is not None
    rules = _capacity_rules(window, zone, project_daily_cap, line_gap_s, line_daily_cap) if capacity or custom else None
    lines = tuple(f"pl_sandbox_line_{i}" for i in range(1, line_count + 1))
    if opt_out_share + contains_word_share > 1:
        raise ChertcastError("--opt-out-share plus --contains-word-share must not exceed 1")
    outcomes = OutcomeConfig(
        seed=outcome_seed,
        failed_share=fail_share,
        read_share=read_share,
        reply_share=reply_share,
        opt_out_share=opt_out_share,
        contains_word_share=contains_word_share,
        delay_s=outcome_delay_s,
    )
    config = SandboxConfig(
        secret=secret or DEFAULT_SECRET,
        faults=faults,
        dedup_window_s=dedup_window,
        lines=lines,
        capacity=rules,
        reject_links=reject_links,
        outcomes=outcomes,
    )
    try:
        sock = bind(host, port)  # before saying "listening": a busy port fails first, alone
    except OSError as exc:
        raise ChertcastError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(f"chertcast sandbox listening on http://{shown_host}:{sock.getsockname()[1]}/api/v1")
    click.echo(f"accepted secret: {config.secret}  (sandbox only; export CHERT_SIGNING_SECRET={config.secret})")
    click.echo(
        "ledger: GET /_sandbox/deliveries, GET /_sandbox/replies, GET /_sandbox/stats, POST /_sandbox/reset. "
        "Ctrl-C to stop."
    )
    serve_forever(SandboxModel(config), sock)


CAMPAIGN = click.argument("campaign", type=click.Path(path_type=Path))
ENCODING = click.option("--encoding", default=None, help="CSV text encoding (default: detected).")
FORCE = click.option(
    "--force", is_flag=True, help="Replace the --out/--html file if it exists (never a campaign input)."
)
HTML = click.option(
    "--html", default=None, type=click.Path(path_type=Path), help="Write a self-contained page to FILE.html."
)


@cli.command()
@CAMPAIGN
@ENCODING
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@friendly
@quiet_pipe
def check(campaign: Path, encoding: str | None, as_json: bool) -> None:
    """Check every row of the contact sheet; send nothing.

    Exit 0: every row can be sent. 1: some rows have problems, the rest can go.
    2: the campaign cannot run (missing file, bad config, unknown template variable...).
    """
    checked = api.check(campaign, encoding=encoding)
    if as_json:
        click.echo(json.dumps(checked.as_json(), ensure_ascii=False))
    else:
        plan, eta = checked.plan, checked.eta
        for line in [
            *present.plan_summary(plan, eta),
            *present.calendar_lines(plan.campaign, checked.outlook, checked.unplanned),
        ]:
            click.echo(line)
        for line in present.sequence_lines(plan, checked.steps, checked.now, checked.outlook, eta):
            click.echo(line)
        if plan.issues:
            click.echo("")
            click.echo("To do: " + present.fix_list(plan.issues))
            for line in present.issue_table(plan.issues):
                click.echo(line)
        click.echo("")
        click.echo(f"Next: chertcast preview {campaign}   then   chertcast send {campaign}")
    sys.exit(checked.exit_code)


@cli.command()
@CAMPAIGN
@ENCODING
@click.option(
    "--rows", "count", default=3, show_default=True, type=click.IntRange(min=1), help="How many messages to show."
)
@click.option("--row", "row", default=None, type=click.IntRange(min=1), help="Show the message for this sheet row.")
@click.option(
    "--step",
    "step",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Show this step of the sequence (1: the first touch; 2, 3, …: each [[follow_up]]).",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(path_type=Path),
    help="Write every row with its message, status and key to FILE.csv or FILE.xlsx.",
)
@HTML
@FORCE
@friendly
@quiet_pipe
def preview(
    campaign: Path,
    encoding: str | None,
    count: int,
    row: int | None,
    step: int,
    out: Path | None,
    html: Path | None,
    force: bool,
) -> None:
    """Show exactly what recipients will see (blank lines split bubbles); send nothing."""
    if html is not None and step != 1:
        raise click.UsageError(
            "--html shows the first touch; use --step without --html (or with --out) for later steps"
        )
    if html is not None:
        page = pages.write_preview(campaign, html, encoding=encoding, force=force)
        click.echo(f"wrote the preview of {present.plural(page.rows, 'row')} to {html} ({pages.size_text(page.size)})")
        if out is None:
            return
    loaded = load_campaign(campaign)
    if out is not None:
        guard_output(out, loaded.inputs(), force=force)
    plan = build_plan(loaded.for_step(step), encoding=encoding)
    if step > 1:  # each row under the key that step really sends with, not the first touch's
        stepped = [step_recipient(r, step) if r.key is not None else r for r in plan.recipients]
        plan = dataclasses.replace(plan, recipients=stepped)
    if out is not None:
        headers = ["row", *plan.sheet.headers, *present.PREVIEW_HEADERS]
        written = write_table(out, headers, present.preview_rows(plan))
        click.echo(f"wrote {present.plural(written, 'row')} to {out}")
        return
    if row is not None:
        chosen = [r for r in plan.recipients if r.row == row]
        if not chosen:
            raise InputError(
                f"{plan.sheet.path}: row {row} is not a data row (rows {plan.sheet.row_numbers[0]}"
                f"-{plan.sheet.row_numbers[-1]}, blank rows skipped)"
            )
    else:
        chosen = plan.sendable[:count]
        if not chosen:
            click.echo(
                f"No row of {plan.sheet.path.name} can be sent ({len(plan.recipients):,} read); "
                f"see why with: chertcast check {campaign}"
            )
            return
    for recipient in chosen:
        click.echo("\n".join(present.bubble_view(recipient)))
        click.echo("")
    remaining = len(plan.sendable) - len(chosen)
    if row is None and remaining > 0:
        click.echo(f"… {present.plural(remaining, 'more sendable message')} (--out FILE.csv writes them all)")


@cli.command()
@CAMPAIGN
@click.option("--dry-run", is_flag=True, help="Plan and report what would be sent; no HTTP at all.")
@click.option("--sandbox", is_flag=True, help="Rehearse against a built-in sandbox on loopback (own journal).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Send at most N messages this run.")
@click.option("--rate", type=click.FloatRange(min=0.01), default=None, help="Messages per second (default: campaign).")
@click.option(
    "--concurrency", type=click.IntRange(1, 256), default=None, help="Requests in flight (default: campaign)."
)
@click.option(
    "--journal", type=click.Path(path_type=Path), default=None, help="Journal file (default: beside the campaign)."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed when not on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print a final JSON summary instead of text.")
@click.option("--allow-changes", is_flag=True, help="Send rows whose message changed since they were attempted.")
@click.option("--retry-failed", is_flag=True, help="Put rows that failed back in the queue.")
@click.option("--wait", is_flag=True, help="When today's capacity is spent, stay up and continue when it returns.")
@click.option(
    "--to",
    "to",
    default=None,
    metavar="PHONE",
    help="Test send: send one row's message to this number (yours) only; the journal is not touched.",
)
@click.option(
    "--row",
    "row",
    default=None,
    type=click.IntRange(min=1),
    help="With --to: the sheet row whose message to send (default: the first sendable row).",
)
@ENCODING
@friendly
@quiet_pipe
def send(
    campaign: Path,
    dry_run: bool,
    sandbox: bool,
    limit: int | None,
    rate: float | None,
    concurrency: int | None,
    journal: Path | None,
    yes: bool,
    as_json: bool,
    allow_changes: bool,
    retry_failed: bool,
    wait: bool,
    to: str | None,
    row: int | None,
    encoding: str | None,
) -> None:
    """Send the campaign: paced, retried, exactly once. Rerun the same command to resume.

    With --to PHONE: a test send of one row's message to your own number, under its own key;
    the campaign's journal is not touched.
    """
    if to is not None or row is not None:
        refused = {
            "--dry-run": dry_run,
            "--limit": limit is not None,
            "--rate": rate is not None,
            "--concurrency": concurrency is not None,
            "--journal": journal is not None,
            "--allow-changes": allow_changes,
            "--retry-failed": retry_failed,
            "--wait": wait,
        }
        _test_send(campaign, to, row, sandbox, as_json, encoding, [name for name, given in refused.items() if given])
        return
    secret = None
    if not sandbox:  # fail before anything is written or asked; a dry run checks the same
        loaded = load_campaign(campaign)
        loaded.resolved_base_url()  # CHERT_BASE_URL / [api] base_url usable
        if not dry_run:
            read_secret(loaded)
            secret = locate_secret(loaded)
    if journal is not None and not journal.parent.is_dir():
        raise ChertcastError(f"--journal {journal}: the folder {journal.parent} does not exist")
    options = runner.SendOptions(
        yes=yes,
        dry_run=dry_run,
        sandbox=sandbox,
        limit=limit,
        rate=rate,
        concurrency=concurrency,
        journal=journal,
        allow_changes=allow_changes,
        retry_failed=retry_failed,
        encoding=encoding,
        wait=wait,
    )
    out = sys.stderr if as_json else sys.stdout
    progress = _LateProgress()

    def on_plan(prepared: runner.Prepared) -> bool:
        """Print the plan; on a real run, confirm and make the progress bar."""
        for line in present.send_header(prepared, options):
            click.echo(line, file=out)
        if dry_run or not prepared.to_send:
            return True
        if not yes:
            if not sys.stdin.isatty():
                raise ChertcastError(
                    f"about to send {present.plural(len(prepared.to_send), 'message')}; "
                    "not on a terminal, so add --yes to confirm"
                )
            if not click.confirm(present.confirm_question(prepared), default=False):
                click.echo("Nothing sent.")
                return False
        total = len(prepared.to_send)
        if not as_json:
            progress.bar = BarProgress(total) if sys.stderr.isatty() else LineProgress(total)
        return True

    with _endpoint(campaign, options) as (endpoint, ledger):
        hooks = RunHooks(_notice, _interrupted)
        outcome = api.send(
            campaign, endpoint=endpoint, options=options, on_plan=on_plan, progress=progress, hooks=hooks
        )
        if outcome.result is not None:
            outcome.result.sandbox_deliveries = ledger()
    if outcome.declined:
        return
    invocation = present.Invocation(_program(), os.environ.get(BASE_URL_ENV, "").strip(), secret)
    lines = present.send_summary(outcome.result, options, invocation) if outcome.result is not None else []
    _finish_send(outcome.as_json(), as_json, lines, outcome.exit_code)


def _program() -> str:
    """This chertcast, by absolute path: cron has neither this shell's PATH nor its venv."""
    argv0 = sys.argv[0]
    if Path(argv0).name == "chertcast":
        found = argv0 if os.sep in argv0 else (shutil.which(argv0) or argv0)
        return shlex.quote(os.path.abspath(found))
    return f"{shlex.quote(os.path.abspath(sys.executable))} -m chertcast"


class _LateProgress:
    """The progress bar, made once the plan is confirmed and its total known (engine.Progress)."""

    def __init__(self) -> None:
        self.bar: BarProgress | LineProgress | None = None

    def update(self, stats: RunStats) -> None:
        if self.bar is not None:
            self.bar.update(stats)

    def close(self, stats: RunStats) -> None:
        if self.bar is not None:
            self.bar.close(stats)


@contextmanager
def _endpoint(
    campaign: Path, options: runner.SendOptions
) -> Iterator[tuple[Endpoint | None, Callable[[], int | None]]]:
    """Where a send goes: Chert (CHERT_BASE_URL or [api] base_url, and the secret), or a built-in
    sandbox on loopback for a rehearsal (the product itself never imports the sandbox); none for
    a dry run. The second value counts the sandbox ledger's deliveries."""
    if options.dry_run:
        yield None, lambda: None
        return
    if not options.sandbox:
        loaded = load_campaign(campaign)
        yield Endpoint(loaded.resolved_base_url(), read_secret(loaded)), lambda: None
        return
    from chertcast.sandbox import SandboxConfig, SandboxModel, SandboxServer

    listed = tuple(load_campaign(campaign).capacity.lines)  # a rehearsal sends on the lines the campaign plans with
    config = SandboxConfig(reject_links=True)  # refuses links as Chert does
    if listed:
        config = dataclasses.replace(config, lines=listed)
    with SandboxServer(SandboxModel(config)) as server:
        endpoint = Endpoint.sandbox(server.base_url, Secret(server.model.config.secret))
        yield endpoint, lambda: len(server.model.deliveries())


def _test_send(
    campaign: Path,
    to: str | None,
    row: int | None,
    sandbox: bool,
    as_json: bool,
    encoding: str | None,
    refused: list[str],
) -> None:
    """``send --to``: one row's message to the operator's number; no journal, no lock, no capacity."""
    if to is None:
        raise ChertcastError(
            f"--row {row} chooses whose message a test send uses: add --to YOUR_NUMBER "
            f"(to only look at that row's message: chertcast preview {campaign} --row {row})"
        )
    if refused:
        raise ChertcastError(f"--to sends one test message; it does not take {', '.join(refused)}")
    with _endpoint(campaign, runner.SendOptions(sandbox=sandbox)) as (endpoint, ledger):
        assert endpoint is not None  # not a dry run
        result = run_test_send(
            campaign, to, row, base_url=endpoint.base_url, secret=endpoint.secret, sandbox=sandbox, encoding=encoding
        )
        result.sandbox_deliveries = ledger()
    if as_json:
        click.echo(json.dumps(summary_json(result), ensure_ascii=False))
    else:
        for line in summary_lines(result):
            click.echo(line)
    sys.exit(result.exit_code)


def _notice(text: str) -> None:
    print(f"chertcast: {text}", file=sys.stderr, flush=True)


def _interrupted(again: bool, signal_name: str = "Ctrl-C") -> None:
    """Ctrl-C (or SIGTERM) during a send: the first lets messages in flight land, the second leaves now.

    ``signal_name``: "Ctrl-C" for SIGINT, else the signal's name; the notice names that one, so a
    SIGTERM from a service manager is not answered with advice about a keyboard."""
    if again:
        # Every journal transition is already committed, and rows caught in flight stay
        # 'sending' and are resent with the same key: leaving without cleanup loses nothing.
        print("\nchertcast: stopped at once; the journal is consistent. Rerun to resume.", file=sys.stderr, flush=True)
        os._exit(130)
    again_hint = "Ctrl-C again to quit now" if signal_name == "Ctrl-C" else f"a second {signal_name} quits now"
    print(f"\nchertcast: stopping: waiting for messages in flight ({again_hint})", file=sys.stderr, flush=True)


def _finish_send(summary: dict[str, Any], as_json: bool, lines: list[str], code: int) -> None:
    if as_json:
        click.echo(json.dumps(summary))
    else:
        for line in lines:
            click.echo(line)
    sys.exit(code)


@cli.command(name="sync")
@CAMPAIGN
@click.option("--sandbox", is_flag=True, help="Sync the sandbox rehearsal's journal against a built-in sandbox.")
@click.option(
    "--journal", type=click.Path(path_type=Path), default=None, help="Journal file (default: beside the campaign)."
)
@click.option("--rate", type=click.FloatRange(min=0.01), default=None, help="Requests per second (default: campaign).")
@click.option(
    "--page-size", default=200, show_default=True, type=click.IntRange(1, 200), help="Reply events per request."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
@quiet_pipe
def sync_command(
    campaign: Path, sandbox: bool, journal: Path | None, rate: float | None, page_size: int, as_json: bool
) -> None:
    """Fetch delivery status, replies and opt-outs for sent messages. Safe to rerun or interrupt."""
    from chertcast.sync import SyncRunning

    loaded = load_campaign(campaign)
    path = runner.journal_path_for(loaded, runner.SendOptions(journal=journal, sandbox=sandbox))
    if not path.exists():
        again = f"chertcast send {campaign}{' --sandbox' if sandbox else ''}"
        raise JournalError(f"{path}: no journal yet; run `{again}` first")
    try:
        with _sync_endpoint(loaded, path, sandbox) as endpoint:
            result = api.sync(
                campaign, endpoint=endpoint, journal=path, sandbox=sandbox, rate=rate, page_size=page_size
            )
    except SyncRunning as exc:  # cron met the last sync still going: that one does the work
        click.echo(f"chertcast: {exc}", err=True)
        sys.exit(0)
    data = result.as_json()
    if as_json:
        click.echo(json.dumps(data))
        return
    for line in present.sync_lines(data, campaign, sandbox, journal):
        click.echo(line)


@contextmanager
def _sync_endpoint(loaded: Campaign, journal_path: Path, sandbox: bool) -> Iterator[Endpoint]:
    """Chert, or for ``sync --sandbox`` a sandbox that goes on with the rehearsal's story.

    ``send --sandbox`` ran its own sandbox, gone with that run. Outcomes are a pure function of
    the seed and the message (``sandbox/outcomes.py``), so a new sandbox that adopts the
    journal's sent messages tells the same story: what has happened by now, and the same
    event ids, so a later sync dedupes against an earlier one.
    """
    if not sandbox:
        yield Endpoint(loaded.resolved_base_url(), read_secret(loaded))
        return
    from chertcast.sandbox import SandboxModel, SandboxServer

    model = SandboxModel()
    for phone, message_id, lead_id, sent_at in sent_messages(journal_path, loaded.id):
        model.adopt(phone, message_id, lead_id, "", sent_at)
    with SandboxServer(model) as server:
        yield Endpoint(server.base_url, Secret(model.config.secret))


@cli.command()
@CAMPAIGN
@click.option(
    "--journal", type=click.Path(path_type=Path), default=None, help="Journal file (default: beside the campaign)."
)
@click.option("--sandbox", is_flag=True, help="Show the sandbox rehearsal's journal.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@friendly
@quiet_pipe
def status(campaign: Path, journal: Path | None, sandbox: bool, as_json: bool) -> None:
    """Where the campaign stands: counts by state, common errors, last progress."""
    result = api.status(campaign, journal=journal, sandbox=sandbox)
    if as_json:
        click.echo(json.dumps(result.as_json()))
        return
    for line in result.lines():
        click.echo(line)


@cli.command()
@CAMPAIGN
@click.option("--out", default=None, type=click.Path(path_type=Path), help="FILE.csv or FILE.xlsx")
@click.option(
    "--only",
    type=click.Choice(present.REPORT_ONLY),
    default=None,
    help="Only rows in this state (e.g. failed: a sheet to fix and rerun), or failed-delivery: "
    "sent, then not delivered (found by sync).",
)
@click.option(
    "--journal", type=click.Path(path_type=Path), default=None, help="Journal file (default: beside the campaign)."
)
@click.option("--sandbox", is_flag=True, help="Report on the sandbox rehearsal's journal.")
@ENCODING
@HTML
@FORCE
@friendly
@quiet_pipe
def report(
    campaign: Path,
    out: Path | None,
    only: str | None,
    journal: Path | None,
    sandbox: bool,
    encoding: str | None,
    html: Path | None,
    force: bool,
) -> None:
    """Write what happened, row by row, with the sheet's own columns, for your CRM (--out);
    or the campaign at a glance as a page (--html)."""
    if out is None and html is None:
        raise InputError("report: give --out FILE.csv (or .xlsx) for the rows, or --html FILE.html for the page")
    if html is not None:
        page = pages.write_report(
            campaign, html, time.time(), journal=journal, sandbox=sandbox, encoding=encoding, force=force
        )
        click.echo(f"wrote the report of {present.plural(page.rows, 'row')} to {html} ({pages.size_text(page.size)})")
    if out is None:
        return
    result = api.report(campaign, out, only=only, journal=journal, sandbox=sandbox, encoding=encoding, force=force)
    click.echo(f"wrote {present.plural(result.rows, 'row')} to {result.out}")


def _capacity_rules(
    window: str | None,
    zone: str,
    project_daily_cap: int | None,
    line_gap_s: float | None = None,
    line_daily_cap: int | None = None,
) -> CapacityLimits:
    """The sandbox's capacity mode, from its options (the sandbox's own model, not the planner's)."""
    from chertcast.sandbox.capacity import CapacityLimits

    start = end = None
    if window:
        try:
            first, _, last = window.partition("-")
            start, end = parse_clock(first), parse_clock(last)
        except ValueError:
            raise ChertcastError(f"--window: expected HH:MM-HH:MM, got {window!r}") from None
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ChertcastError(f"--timezone: unknown time zone {zone!r}") from None
    defaults = CapacityLimits()
    try:
        return CapacityLimits(
            line_gap_s=defaults.line_gap_s if line_gap_s is None else line_gap_s,
            line_daily_cap=line_daily_cap or defaults.line_daily_cap,
            window_start=start,
            window_end=end,
            timezone=zone,
            project_daily_cap=project_daily_cap,
        )
    except ValueError as exc:
        raise ChertcastError(f"sandbox capacity: {exc}") from None


def main() -> None:
    cli()
