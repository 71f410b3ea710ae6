"""The scheduler step as a table of states: which row goes next, on which line, or why we wait.

``step`` is pure: rows and a scheduler at a moment in, one choice out. No engine, no clock.
"""

from __future__ import annotations

import datetime as dt
from collections import deque

import pytest

from chertcast.capacity import CapacityRules, LinePlanner, QuietHours
from chertcast.outgoing import Outgoing
from chertcast.preflight import Recipient
from chertcast.schedule import Done, Never, Rows, Scheduler, Send, Wait, launch, never_text, step

NOON = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC).timestamp()  # a Monday, 12:00 UTC
GAP = 600.0
RULES = CapacityRules(line_gap_s=GAP, line_daily_cap=30, timezone="UTC")
QUIET = QuietHours(dt.time(8, 0), dt.time(21, 0))


def row(n: int, *, line: str | None = "a", zone: str | None = "Europe/London") -> Outgoing:
    return Outgoing.of(
        Recipient(
            row=n + 1, raw_phone=f"+1212555{n:04d}", phone=f"+1212555{n:04d}", body="Hi", key=f"key{n}",
            status="sendable", phone_line_id=line, timezone=zone,
        )
    )  # fmt: skip


def scheduler(
    lines: tuple[str, ...] = ("a",), rules: CapacityRules = RULES, quiet: QuietHours | None = QUIET, wait: bool = False
) -> Scheduler:
    return Scheduler(LinePlanner(rules, lines), quiet, wait)


def rows(*outgoing: Outgoing) -> Rows:
    return Rows(deque(outgoing))


def test_a_free_line_sends_the_head_row_and_launch_counts_it() -> None:
    plan, todo = scheduler(), rows(row(1), row(2))
    assert step(todo, plan, NOON, in_flight=0) == Send(row(1), "a")
    assert len(todo.waiting) == 2  # the row stays queued while the engine waits for a slot and a token
    assert launch(todo, plan, NOON) == Send(row(1), "a")
    assert [r.key for r in todo.waiting] == ["key2"] and plan.unanswered["a"] == 1


def test_a_used_line_waits_a_gap_and_an_answer_can_cut_it_short() -> None:
    plan, todo = scheduler(), rows(row(1), row(2))
    launch(todo, plan, NOON)
    assert step(todo, plan, NOON, in_flight=1) == Wait(NOON + GAP, "today's first-touch capacity is used up")
    plan.finished("a")
    plan.answered("a", NOON + 5, first_touch=True)  # the gap runs from the answer
    assert step(todo, plan, NOON + 5, in_flight=0) == Wait(NOON + 5 + GAP, "today's first-touch capacity is used up")
    assert step(todo, plan, NOON + 5 + GAP, in_flight=0) == Send(row(2), "a")


def test_a_row_without_a_line_goes_to_the_pool() -> None:
    plan, todo = scheduler(("a", "b")), rows(row(1, line=None), row(2, line=None), row(3, line=None))
    assert launch(todo, plan, NOON) == Send(row(1, line=None), None)
    assert launch(todo, plan, NOON) == Send(row(2, line=None), None)  # two lines: two pooled sends at once
    assert step(todo, plan, NOON, in_flight=2) == Wait(NOON + GAP, "today's first-touch capacity is used up")


def test_launch_refuses_when_the_slot_moved_while_waiting_for_a_token() -> None:
    plan, todo = scheduler(), rows(row(1))
    assert isinstance(step(todo, plan, NOON, in_flight=0), Send)
    plan.refused("a", NOON, NOON + 30)  # a 4002 landed meanwhile: the line waits
    assert launch(todo, plan, NOON + 1) is None and len(todo.waiting) == 1
    assert step(todo, plan, NOON + 1, in_flight=0) == Wait(NOON + 30, "today's first-touch capacity is used up")


@pytest.mark.parametrize(
    ("wait", "in_flight", "expected"),
    [
        (False, 0, "done"),  # capacity returns tomorrow: today's run ends, saying when
        (False, 1, "answer"),  # but not while an answer in flight may still change the plan
        (True, 0, "wait"),  # --wait: stay up until tomorrow
    ],
)
def test_capacity_spent_for_today(wait: bool, in_flight: int, expected: str) -> None:
    rules = CapacityRules(line_gap_s=GAP, line_daily_cap=1, timezone="UTC")
    plan = Scheduler(LinePlanner(rules, ["a"], [("a", NOON - 3_600)]), None, wait)
    tomorrow = dt.datetime(2026, 3, 3, tzinfo=dt.UTC).timestamp()
    why = "today's first-touch capacity is used up"
    choice = step(rows(row(1)), plan, NOON, in_flight)
    assert choice == {"done": Done(why, tomorrow), "answer": Wait(None), "wait": Wait(tomorrow, why)}[expected]


def test_quiet_hours_hold_a_row_until_its_morning_and_others_go_first() -> None:
    plan, todo = scheduler(), rows(row(1, zone="Asia/Tokyo"), row(2))  # 21:00 in Tokyo: quiet
    assert step(todo, plan, NOON, in_flight=0) == Send(row(2), "a")
    morning = dt.datetime(2026, 3, 2, 23, 0, tzinfo=dt.UTC).timestamp()  # 08:00 in Tokyo
    assert todo.held == [(morning, row(1, zone="Asia/Tokyo"))]
    launch(todo, plan, NOON)
    assert step(todo, plan, NOON, in_flight=1) == Wait(morning, "1 row is held by quiet hours")
    plan.finished("a")
    plan.answered("a", NOON + 1, first_touch=True)
    assert step(todo, plan, morning, in_flight=0) == Send(row(1, zone="Asia/Tokyo"), "a")
    assert todo.held == []


def test_a_row_that_can_never_be_sent_is_noted_and_the_run_ends_saying_so() -> None:
    rules = CapacityRules(line_gap_s=GAP, timezone="UTC", window_start=dt.time(9), window_end=dt.time(10))
    plan, todo = scheduler(rules=rules), rows(row(1, zone="Pacific/Kiritimati"))  # 09-10 UTC is 23-24 there
    choice = step(todo, plan, NOON, in_flight=0)
    assert isinstance(choice, Never) and choice.outgoing == row(1, zone="Pacific/Kiritimati")
    assert choice.reason.startswith("never sendable: ") and todo.never == 1 and not todo.waiting
    assert step(todo, plan, NOON, in_flight=0) == Done(never_text(1))
    assert step(todo, plan, NOON, in_flight=1) == Wait(None)  # an answer may still hand a row back


def test_a_handed_back_row_waits_for_its_retry_after() -> None:
    plan, todo = scheduler(), rows(row(1))
    launch(todo, plan, NOON)
    plan.refused("a", NOON + 1, NOON + 901)
    todo.hand_back(row(1), NOON + 901)
    plan.finished("a")
    assert step(todo, plan, NOON + 1, in_flight=0) == Wait(NOON + 901, "1 row waits for a 4002's retry_after")
    assert step(todo, plan, NOON + 901, in_flight=0) == Send(row(1), "a")


def test_nothing_left() -> None:
    assert step(rows(), scheduler(), NOON, in_flight=0) == Done()
    assert step(rows(), scheduler(), NOON, in_flight=3) == Wait(None)


def test_a_row_without_phone_body_or_key_is_not_something_to_send() -> None:
    broken = Recipient(row=7, raw_phone="n/a", phone=None, body=None, key=None, status="error")
    with pytest.raises(ValueError, match="row 7 is not sendable"):
        Outgoing.of(broken)


def test_a_row_the_sending_window_holds_is_not_said_to_be_held_by_quiet_hours() -> None:
    """At 08:30 London, inside quiet hours (08:00-21:00) but before the 09:00 sending window, the
    wait line said "held by quiet hours" (new-user walkthrough); it names the window now."""
    rules = CapacityRules(line_gap_s=GAP, window_start=dt.time(9), window_end=dt.time(18), timezone="Europe/London")
    plan = scheduler(rules=rules)
    early = dt.datetime(2026, 3, 2, 8, 30, tzinfo=dt.UTC).timestamp()  # 08:30 in London
    nine = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC).timestamp()
    assert step(rows(row(1)), plan, early, in_flight=0) == Wait(nine, "1 row waits for the sending window")
    night = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC).timestamp()  # 21:30 in Tokyo: its quiet hours
    tomorrow = dt.datetime(2026, 3, 3, 9, 0, tzinfo=dt.UTC).timestamp()  # 18:00 in Tokyo, 09:00 in London
    assert step(rows(row(2, zone="Asia/Tokyo")), plan, night, in_flight=0) == Done(
        "1 row is held by quiet hours", tomorrow
    )
