"""Issue 17's simulated days: 1,000 recipients, 3 steps, 5 lines, replies and opt-outs on,
against the capacity-mode sandbox on a simulated clock; the first runs are killed mid-request
and rerun (see benchmarks/bench_followups.py, which this test shares)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_followups import LINE_CAP, Simulation, simulate


def test_a_thousand_recipients_over_simulated_days(tmp_path: Path) -> None:
    measured = simulate(Simulation(recipients=1000, lines=5, kills=4), tmp_path)
    assert measured["runs_cut_off"] == 4
    assert measured["duplicates"] == 0  # each step delivered at most once per recipient
    assert measured["after_reply_or_opt_out"] == 0  # by the sandbox's own record of when it replied
    assert measured["replies"] > 200
    assert measured["due_but_not_sent"] == 0  # every due step sent
    assert measured["sent_per_step"]["1"] == 1000
    assert 0 < measured["sent_per_step"]["3"] <= measured["sent_per_step"]["2"] < 1000
    assert measured["follow_ups_refused_4002"] == 0  # follow-ups never met first-touch capacity
    assert measured["follow_ups_in_quiet_hours"] == 0  # each sent within 08:00-21:00 of the recipient's zone
    assert measured["max_first_touches_per_line_day"] <= LINE_CAP
    assert measured["calendar_vs_ideal"] <= 1.05


def test_a_step_falling_due_at_night_waits_for_the_morning(tmp_path: Path) -> None:
    """Step 3 comes 36 h after step 2, so most fall due between 21:00 and 01:00 in New York: each
    goes the next morning, none in the recipient's quiet hours, and still once."""
    measured = simulate(Simulation(recipients=150, lines=5, kills=1, delays=("1d", "36h")), tmp_path)
    assert measured["follow_ups_in_quiet_hours"] == 0
    assert measured["duplicates"] == measured["after_reply_or_opt_out"] == measured["due_but_not_sent"] == 0
    assert measured["sent_per_step"]["3"] > 0
    assert measured["calendar_vs_ideal"] > 1.1  # the night's wait is real: held, not sent early
