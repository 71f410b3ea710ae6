"""The pages' I/O: read the campaign (and its journal), refuse to overwrite inputs, write the page.

One call per page, so the CLI adds ``--html`` with a couple of lines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chertcast.campaign import journal_files, load_campaign
from chertcast.export import guard_output
from chertcast.journal import Journal
from chertcast.outlook import CapacityFacts, outlook, unfinished
from chertcast.pages.base import write_page
from chertcast.pages.preview import preview_page
from chertcast.pages.report import report_page
from chertcast.preflight import build_plan
from chertcast.runner import SendOptions, journal_path_for
from chertcast.sync import outcomes_by_key


@dataclass(frozen=True)
class Written:
    path: Path
    rows: int  # sheet rows on the page
    size: int  # bytes


def write_preview(campaign: Path, html: Path, *, encoding: str | None = None, force: bool = False) -> Written:
    loaded = load_campaign(campaign)
    guard_output(html, loaded.inputs(), force=force, option="--html")
    plan = build_plan(loaded, encoding=encoding)
    return Written(html, len(plan.recipients), write_page(html, preview_page(plan)))


def write_report(
    campaign: Path,
    html: Path,
    now: float,
    *,
    journal: Path | None = None,
    sandbox: bool = False,
    encoding: str | None = None,
    force: bool = False,
) -> Written:
    loaded = load_campaign(campaign)
    path = journal_path_for(loaded, SendOptions(journal=journal, sandbox=sandbox))
    guard_output(html, {**loaded.inputs(), **journal_files(path)}, force=force, option="--html")
    plan = build_plan(loaded, encoding=encoding)
    with Journal.open_existing(path, loaded.id) as opened:
        rows = list(opened.rows())
        outcomes = outcomes_by_key(opened) if opened.meta("last_sync_at") else None
        ahead = outlook(loaded, unfinished(plan, opened), now, CapacityFacts.read(loaded, opened, now))
    return Written(html, len(plan.recipients), write_page(html, report_page(plan, rows, now, ahead, outcomes)))
