"""Small helpers shared by tests: campaign files in a temp dir, CLI runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from chertcast.capacity import CapacityRules
from chertcast.cli import cli
from chertcast.sandbox import CapacityLimits


def write_campaign(
    directory: Path,
    contacts: Path | str,
    *,
    body: str | None = "Hi {{ name | default('there', true) }}",
    template: Path | None = None,
    extra: str = "",
    campaign_id: str = "test-campaign",
    planned: bool = False,
) -> Path:
    """A campaign file; unless ``planned``, capacity planning and quiet hours are off (the
    default sandbox has unlimited lines, and tests must not depend on the hour they run at)."""
    lines = [f'id = "{campaign_id}"', f'contacts = "{Path(contacts).as_posix()}"']
    if template is not None:
        lines.append(f'template = "{Path(template).as_posix()}"')
    elif body is not None:
        lines.append(
            f"body = {body!r}".replace("body = '", 'body = """').replace("'\n", '"""')
            if "\n" in body
            else f"body = '''{body}'''"
        )
    path = directory / "campaign.toml"
    if not planned:
        extra += "\n[capacity]\nenabled = false\n[quiet_hours]\nenabled = false\n"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def sandbox_limits(rules: CapacityRules) -> CapacityLimits:
    """The sandbox's own capacity limits with the same numbers as the planner's ``rules``: the
    server enforces them with its own model, so the planner is checked against something else."""
    return CapacityLimits(
        line_gap_s=rules.line_gap_s,
        line_daily_cap=rules.line_daily_cap,
        project_daily_cap=rules.project_daily_cap,
        window_start=rules.window_start,
        window_end=rules.window_end,
        timezone=rules.timezone,
    )


def run_cli(*args: Any, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def run_process(
    *args: Any, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chertcast", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def start_process(*args: Any, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`chertcast ARGS` running in its own process (to signal it, or to watch it while it runs)."""
    return subprocess.Popen(
        [sys.executable, "-m", "chertcast", *[str(a) for a in args]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


AREAS = ("212", "415", "646", "312", "617", "206", "303", "512")


def numbers(count: int) -> list[str]:
    """Distinct valid US numbers in mixed national formats."""
    out = []
    for i in range(count):
        area, rest = AREAS[i % len(AREAS)], i // len(AREAS)
        out.append(f"({area}) {555 + rest // 10_000}-{rest % 10_000:04d}")
    return out


def write_contacts(path: Path, count: int, extra_rows: str = "") -> Path:
    lines = ["phone,name"] + [f"{n},Lead {i}" for i, n in enumerate(numbers(count))]
    path.write_text("\n".join(lines) + "\n" + extra_rows, encoding="utf-8")
    return path


def assert_journal_matches_ledger(journal_path: Path, campaign_id: str, ledger: list[Any], *, settled: bool) -> None:
    """The journal tells the truth about the sandbox's ledger (deliveries with idempotency_key,
    message_id, phone): every row journaled ``sent``/``duplicate`` was delivered with that
    message_id; no delivered row is ``failed`` or ``pending``: at worst its outcome is
    ``unknown``/``sending`` until a later run settles it. ``settled``: no such row is left, so the
    journal's sent rows equal the ledger's deliveries one for one."""
    from chertcast.journal import Journal

    by_key = {d.idempotency_key: d for d in ledger}
    assert len(by_key) == len(ledger), "a key was delivered twice"
    with Journal(journal_path, campaign_id, readonly=True) as journal:
        rows = {r.key: r for r in journal.rows() if not r.key.startswith("skip:")}
    delivered = {k: r for k, r in rows.items() if r.state in ("sent", "duplicate")}
    for key, row in delivered.items():
        assert key in by_key, f"journal says {row.state} but the ledger has no delivery: {row}"
        assert row.message_id == by_key[key].message_id and row.phone == by_key[key].phone, row
    for key in by_key.keys() - delivered.keys():
        row = rows.get(key)
        assert row is not None, f"delivered but not journaled: {key}"
        assert row.state in ("unknown", "sending"), f"delivered but journaled {row.state}: {row}"
        assert not settled, f"delivered, still {row.state} after the settling run: {row}"
