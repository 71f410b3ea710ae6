"""Regenerate sample_data/contacts.csv and contacts.xlsx (deterministic)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from openpyxl import Workbook

HERE = Path(__file__).parent
FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Hedy",
    "John",
    "Sophie",
    "Guido",
    "Anita",
    "Donald",
    "Shafi",
    "",
    "Niklaus",
    "Adele",
    "Bjarne",
    "Lynn",
]
LAST = ["Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Ritchie", "Liskov"]
CITIES = ["Austin", "Boston", "Chicago", "Denver", "Seattle", "Portland", "Atlanta"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne"]


def rows() -> list[list[str]]:
    rng = random.Random(7)
    out = []
    for i in range(50):
        n = 100 + i
        styles = [f"(415) 555-0{n}", f"415.555.0{n}", f"+1 212 555 0{n}", f"1646555{n:04d}", f"312-555-0{n}"]
        phone = styles[i % len(styles)]
        out.append(
            [
                FIRST[i % len(FIRST)],
                LAST[i % len(LAST)],
                phone,
                COMPANIES[i % len(COMPANIES)],
                CITIES[rng.randrange(len(CITIES))],
                f"CRM-{1000 + i}",
            ]
        )
    out[5][2] = ""  # empty phone
    out[11][2] = "n/a"  # not a number
    out[17][2] = "555-0199"  # too short
    out[23][2] = out[2][2].replace("(", "").replace(")", "").replace(" ", "-")  # duplicate of row 4
    out[29][4] = ""  # empty city: the template has no default for it
    out[33][2] = "+1 800 555 0199"  # toll-free: a warning
    out[41][2] = "+44 7400 123456"  # a UK mobile: fine
    out[44][2] = "+1 415 555 0177"  # on the opt-out list
    return out


HEADERS = ["First Name", "Last Name", "Mobile", "Company", "City", "CRM ID"]


def main() -> None:
    data = rows()
    with (HERE / "contacts.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        writer.writerows(data)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Leads"
    sheet.append(HEADERS)
    for row in data:
        digits = row[2].replace("+", "")
        cells: list[str | int] = list(row)
        if digits.isdigit():  # a number cell, as Excel stores a pasted "14155550101"
            cells[2] = int(digits)
        sheet.append(cells)
    book.save(HERE / "contacts.xlsx")
    (HERE / "optouts.csv").write_text("Phone\n(415) 555-0177\n+1 646 555 9999\n", encoding="utf-8")


if __name__ == "__main__":
    main()
