"""Follow-up sequences end to end: the sandbox over loopback (real client, real journal),
seconds-long delays, replies and opt-outs on."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from chertcast.followups import step_key
from chertcast.sandbox import SandboxModel
from tests.helpers import write_campaign, write_contacts

STEPS = """
[[follow_up]]
after = "1s"
body = "Nudge for {{ name }}"

[[follow_up]]
after = "1s"
body = "Last note, {{ name }}"
"""


def table(journal: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(journal) as db:
        return db.execute(sql).fetchall()


def three_step_campaign(tmp_path: Path, count: int) -> Path:
    contacts = write_contacts(tmp_path / "contacts.csv", count)
    settings = 'opt_out_list = "optouts.csv"\n' + STEPS + "[send]\nrate = 500\nburst = 50\nconcurrency = 8\n"
    return write_campaign(tmp_path, contacts, extra=settings)


def check_sequence(model: SandboxModel, journal: Path, count: int) -> dict[str, int]:
    """Each step at most once per recipient; nothing after a reply the sandbox made before it."""
    sent = model.deliveries()
    per_key = Counter(d.idempotency_key for d in sent)
    assert max(per_key.values()) == 1, "a step went out twice"
    first = {key: phone for key, phone in table(journal, "SELECT key, phone FROM recipients")}
    phone_key = {phone: key for key, phone in first.items()}
    replied_at: dict[str, float] = {}
    for reply in model.replies():
        key = phone_key[reply["phone"]]
        replied_at[key] = min(replied_at.get(key, reply["at"]), reply["at"])
    by_step = Counter()
    for delivery in sent:
        key = phone_key[delivery.phone]
        step = next(n for n in (1, 2, 3) if step_key(key, n) == delivery.idempotency_key)
        by_step[step] += 1
        if step > 1:
            assert delivery.body.startswith("Nudge" if step == 2 else "Last")
            # the recipient had not replied (as the sandbox records it) before this follow-up left
            assert key not in replied_at or replied_at[key] > delivery.time - 0.0, (key, step)
    assert by_step[1] == count
    return dict(by_step)
