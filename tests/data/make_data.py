"""Regenerate the real-world input files under tests/data (deterministic). Run from anywhere."""

from __future__ import annotations

import codecs
import csv
import unicodedata
import zipfile
from datetime import datetime
from pathlib import Path

from openpyxl import Workbook

HERE = Path(__file__).parent
BAD = HERE / "bad"


def write(name: str, data: bytes) -> None:
    (HERE / name).write_bytes(data)


def main() -> None:
    BAD.mkdir(exist_ok=True)
    # UTF-8 with BOM, semicolons, CRLF, a quoted cell holding a line break and a semicolon.
    write(
        "bom_semicolon.csv",
        "\ufeffFirst Name;Phone;Note\r\n"
        'Zoë;(415) 555-0100;"line one\r\nline two; still note"\r\n'
        "Ana;415 555 0101;ok\r\n".encode("utf-8"),
    )
    write("cp1252.csv", "name,phone\r\nJosé Müller,4155550102\r\nFrançoise,+1 415 555 0103\r\n".encode("cp1252"))
    write("utf16.csv", "name\tphone\nSøren\t4155550104\n".encode("utf-16"))
    # Zero-width spaces, a BOM inside a cell, non-breaking spaces, a tab-wrapped number.
    write(
        "zero_width.csv",
        (
            "\ufeff Phone Number ,First_Name\n"
            "\u200b+1\u00a0415\u00a0555\u00a00105\u200b,\u200bMaya\u2060\n"
            "\t4155550106\t,Omar\n"
        ).encode("utf-8"),
    )
    # The same number written four ways, plus a blank row and a row of empty cells.
    write(
        "dup_formats.csv",
        (b"phone,name\n(415) 555-0107,A\n+14155550107,B\n\n,\n415.555.0107,C\n1-415-555-0107,D\n4155550108,E\n"),
    )
    write("empty_cells.csv", b"phone,first_name,city\n4155550109,,Austin\n4155550110,Bo,\n4155550111,Cy,Reno\n")
    numbers_xlsx()
    bad_inputs()
    as_shown()
    crm()


def numbers_xlsx() -> None:
    """Number cells for 160 rows, then a text cell and 'n/a' late; blank rows in between."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Phone", "Name"])
    for i in range(160):
        sheet.append([14155550000 + i, f"Lead {i}"])
    sheet.append([])  # row 162: blank
    sheet.append(["+44 7400 123456", "Late text"])  # row 163
    sheet.append(["n/a", "Not a number"])  # row 164
    sheet.append([447400123457, "UK number cell without plus"])  # row 165
    book.save(HERE / "numbers.xlsx")


def bad_inputs() -> None:
    (BAD / "binary.csv").write_bytes(bytes(range(256)) * 8)
    good = HERE / "numbers.xlsx"
    data = good.read_bytes()
    (BAD / "truncated.xlsx").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(BAD / "bomb.xlsx", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/worksheets/sheet1.xml", b"<" + b"a" * 600_000_000 + b">")
    book = Workbook()
    book.save(BAD / "no_rows.xlsx")
    (BAD / "header_only.csv").write_text("phone,name\n")
    (BAD / "no_phone_column.csv").write_text("email,name\na@example.com,Ann\n")
    (BAD / "unknown_variable.j2").write_text("Hi {{ nickname }}")
    (BAD / "python_internals.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    (BAD / "invalid.toml").write_text('id = "x"\ncontacts = [unclosed\n')
    (BAD / "spaces_id.toml").write_text('id = "my campaign"\ncontacts = "../cp1252.csv"\nbody = "Hi"\n')
    (BAD / "huge_cell.csv").write_text("phone,note\n4155550112," + "x" * 10_000_000 + "\n")
    (BAD / "utf32.csv").write_bytes("phone,name\n4155550113,Ann\n".encode("utf-32"))
    (BAD / "dup_headers.csv").write_text("Phone,Name,phone\n4155550114,Ann,4155550115\n")
    (BAD / "plain_http.toml").write_text(
        'id = "x"\ncontacts = "../cp1252.csv"\nbody = "Hi"\n[api]\nbase_url = "http://chert.example.com/api/v1"\n'
    )
    tricky = Workbook()
    sheet = tricky.active
    assert sheet is not None
    sheet.append(["Phone", "Name", "Signed up"])
    sheet.append(['="4155550116"', "=1+1", "2026-01-02"])
    sheet.append([4155550117, "Merged", None])
    sheet.merge_cells("B3:C3")
    sheet["C2"].number_format = "yyyy-mm-dd"
    tricky.save(BAD / "formula_date_merged.xlsx")


SHOWN = HERE / "shown"


def as_shown() -> None:
    """Files shaped like those of issue 10: what the user sees must be what is read."""
    SHOWN.mkdir(exist_ok=True)
    # A CRM export: the date opted out first, the number under MSISDN.
    (SHOWN / "optouts_msisdn.csv").write_text("Opted out on,MSISDN\n2026-01-05,+14155550109\n2026-01-06,14155550111\n")
    # A list with a UK national number (unreadable for region US) and a note line.
    (SHOWN / "optouts_mixed.csv").write_text(
        "Phone\n+1 (415) 555-0109\n07400 123456\n+44 7400 123456\nsee ticket 42\n415.555.0111\n"
    )
    (SHOWN / "optouts_nothing.csv").write_text("Phone\nn/a\nunknown\n")
    # The first sheet is an old, hidden list; the visible, active sheet is "Leads".
    book = Workbook()
    old = book.active
    assert old is not None
    old.title = "Old list 2024"
    old.append(["Phone", "Name"])
    old.append(["4155550150", "Old lead"])
    old.sheet_state = "hidden"
    leads = book.create_sheet("Leads")
    leads.append(["Phone", "Name"])
    leads.append(["4155550151", "New lead"])
    book.active = 1
    book.save(SHOWN / "hidden_first_sheet.xlsx")
    formats_xlsx()
    # macOS writes headers and names decomposed (NFD): "Prénom" as e + U+0301.
    (SHOWN / "nfd_headers.csv").write_text(
        unicodedata.normalize("NFD", "Téléphone,Prénom\n4155550210,Zoé\n"), encoding="utf-8"
    )
    # A title row above the header, as many CRM exports have.
    (SHOWN / "title_row.csv").write_text(
        "Leads export — 3 May 2026\n\nPhone,First Name\n4155550211,Ann\n4155550212,Bob\n"
    )
    # Numbers with extensions and a label in brackets.
    (SHOWN / "labels.csv").write_text(
        "Phone,Name\n415-555-0213 x123,Ann\n415-555-0214 ext. 12,Bob\n415-555-0215 (mobile),Cy\n"
    )
    # Templates and a campaign file saved by Notepad: BOMs, Windows-1252.
    (SHOWN / "bom_template.j2").write_bytes(codecs.BOM_UTF8 + "Hi {{ name }}, ça va?".encode())
    (SHOWN / "cp1252_template.j2").write_bytes("Hi {{ name }}, ça va? — Zoë".encode("cp1252"))
    (SHOWN / "bom_campaign.toml").write_bytes(
        codecs.BOM_UTF8 + b'id = "bom"\ncontacts = "labels.csv"\ntemplate = "bom_template.j2"\n'
        b"[capacity]\nenabled = false\n[quiet_hours]\nenabled = false\n"
    )
    # A UTF-8 export with one line pasted from a Windows-1252 file.
    (SHOWN / "mixed_encoding.csv").write_bytes(
        "phone,name,city\n4155550200,Zoë,Zürich\n".encode()
        + "4155550201,José,Málaga\n".encode("cp1252")
        + "4155550202,Søren,Århus\n".encode()
    )
    # An unquoted "Acme, Inc." shifts the city into the company column.
    (SHOWN / "ragged.csv").write_text(
        "phone,name,company,city\n4155550160,Ann,Acme, Inc.,Chicago\n4155550161,Bob,Globex,Boston\n"
    )


def formats_xlsx() -> None:
    """Cells as Excel users format them: what the cell shows is what the message must say."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Leads"
    sheet.append(["Phone", "Renewal", "Discount", "Balance", "Zip", "Euro", "Signed", "Score"])
    sheet.append(["4155550190", datetime(2026, 3, 15), 0.15, 1234.5, 2139, 99.9, datetime(2026, 3, 15), 1.5e-3])
    sheet.append(["4155550191", datetime(2026, 12, 1), 0.075, -20, 501, 0, datetime(2026, 12, 1), 2.5e-4])
    sheet.append(["4155550192", "n/a", "none", "TBD", "n/a", "-", "n/a", "n/a"])  # text in formatted columns
    for row in (2, 3, 4):
        sheet[f"B{row}"].number_format = "DD/MM/YYYY"
        sheet[f"C{row}"].number_format = "0.0%"
        sheet[f"D{row}"].number_format = '"$"#,##0.00;-"$"#,##0.00'
        sheet[f"E{row}"].number_format = "00000"
        sheet[f"F{row}"].number_format = "#,##0.00 [$€-407]"
        sheet[f"G{row}"].number_format = "mm-dd-yy"  # built-in 14: the computer's short date
        sheet[f"H{row}"].number_format = "0.00E+00"
    book.save(SHOWN / "formats.xlsx")


CRM = HERE / "crm"


def crm() -> None:
    """Contact exports shaped like the CRMs' own: their headers, several phone columns, and
    the generic phone column blank in many or all rows (the mobile one filled)."""
    CRM.mkdir(exist_ok=True)
    hubspot = [
        [
            "Record ID",
            "First Name",
            "Last Name",
            "Email",
            "Phone Number",
            "Mobile Phone Number",
            "Company Name",
            "Lifecycle Stage",
            "Create Date",
        ],
        [
            "51101",
            "Ada",
            "Park",
            "ada@northwind.example",
            "",
            "+1 213-555-0101",
            "Northwind",
            "lead",
            "2026-10-02 09:14",
        ],
        ["51102", "Ben", "Ortiz", "ben@acme.example", "", "(310) 555-0102", "Acme", "lead", "2026-10-02 09:15"],
        [
            "51103",
            "Cleo",
            "Hart",
            "cleo@initech.example",
            "",
            "323.555.0103",
            "Initech",
            "subscriber",
            "2026-10-03 11:40",
        ],
        ["51104", "Dev", "Rao", "dev@globex.example", "", "+1 (213) 555-0104", "Globex", "lead", "2026-10-04 16:02"],
        [
            "51105",
            "Eli",
            "Moss",
            "eli@umbrella.example",
            "",
            "310-555-0105",
            "Umbrella",
            "opportunity",
            "2026-10-05 08:31",
        ],
        ["51106", "Fay", "Cole", "fay@hooli.example", "", "+1 212-555-0106", "Hooli", "lead", "2026-10-06 10:12"],
        ["51107", "Gus", "Lind", "gus@vandelay.example", "", "", "Vandelay", "lead", "2026-10-07 13:45"],
    ]
    salesforce = [
        [
            "First Name",
            "Last Name",
            "Title",
            "Account Name",
            "Phone",
            "Mobile",
            "Fax",
            "Asst. Phone",
            "Email",
            "Mailing City",
            "Contact ID",
        ],
        [
            "Hana",
            "Ito",
            "VP Sales",
            "Northwind",
            "(212) 555-0200",
            "(213) 555-0201",
            "(212) 555-0290",
            "(212) 555-0291",
            "hana@northwind.example",
            "Los Angeles",
            "0035g00000AbCd1",
        ],
        [
            "Ivan",
            "Berg",
            "CTO",
            "Acme",
            "(212) 555-0200",
            "(310) 555-0202",
            "",
            "",
            "ivan@acme.example",
            "Santa Monica",
            "0035g00000AbCd2",
        ],
        [
            "Jo",
            "Kim",
            "Buyer",
            "Initech",
            "(323) 555-0203",
            "",
            "",
            "",
            "jo@initech.example",
            "Los Angeles",
            "0035g00000AbCd3",
        ],
        [
            "Kai",
            "Wu",
            "Director",
            "Globex",
            "(213) 555-0204",
            "555-0299",
            "",
            "",
            "kai@globex.example",
            "Pasadena",
            "0035g00000AbCd4",
        ],
        [
            "Lea",
            "Fox",
            "Analyst",
            "Umbrella",
            "",
            "",
            "(212) 555-0292",
            "",
            "lea@umbrella.example",
            "New York",
            "0035g00000AbCd5",
        ],
    ]
    pipedrive = [
        [
            "Name",
            "First name",
            "Last name",
            "Organization",
            "Email - Work",
            "Phone - Work",
            "Phone - Home",
            "Phone - Mobile",
            "Phone - Other",
            "Label",
            "Owner",
        ],
        [
            "Mia Stone",
            "Mia",
            "Stone",
            "Northwind",
            "mia@northwind.example",
            "",
            "",
            "213-555-0301",
            "",
            "Hot",
            "Maya Chen",
        ],
        [
            "Ned Shaw",
            "Ned",
            "Shaw",
            "Acme",
            "ned@acme.example",
            "212-555-0302",
            "",
            "310-555-0303",
            "",
            "",
            "Maya Chen",
        ],
        ["Ona Bell", "Ona", "Bell", "Initech", "ona@initech.example", "", "", "323-555-0304", "", "Warm", "Maya Chen"],
        ["Pat Gray", "Pat", "Gray", "Globex", "pat@globex.example", "212-555-0305", "", "", "", "Cold", "Maya Chen"],
    ]
    apollo = [
        [
            "First Name",
            "Last Name",
            "Title",
            "Company",
            "Company Name for Emails",
            "Email",
            "Email Status",
            "Seniority",
            "Departments",
            "Contact Owner",
            "Work Direct Phone",
            "Home Phone",
            "Mobile Phone",
            "Corporate Phone",
            "Other Phone",
            "Stage",
            "Lists",
            "Last Contacted",
            "Account Owner",
            "# Employees",
            "Industry",
            "Person Linkedin Url",
            "Website",
            "City",
            "State",
            "Country",
        ],
        [
            "Quinn",
            "Lowe",
            "Head of Ops",
            "Northwind",
            "Northwind",
            "quinn@northwind.example",
            "Verified",
            "Head",
            "Operations",
            "maya@chert.example",
            "",
            "",
            "+1 213-555-0401",
            "+1 212-555-0400",
            "",
            "Cold",
            "LA leads",
            "",
            "maya@chert.example",
            "120",
            "Logistics",
            "http://www.linkedin.com/in/quinnlowe",
            "http://www.northwind.example",
            "Los Angeles",
            "California",
            "United States",
        ],
        [
            "Rae",
            "Diaz",
            "VP Finance",
            "Northwind",
            "Northwind",
            "rae@northwind.example",
            "Verified",
            "Vp",
            "Finance",
            "maya@chert.example",
            "",
            "",
            "",
            "+1 212-555-0400",
            "",
            "Cold",
            "LA leads",
            "",
            "maya@chert.example",
            "120",
            "Logistics",
            "http://www.linkedin.com/in/raediaz",
            "http://www.northwind.example",
            "Los Angeles",
            "California",
            "United States",
        ],
        [
            "Sol",
            "Vega",
            "Founder",
            "Acme",
            "Acme",
            "sol@acme.example",
            "Verified",
            "Founder",
            "C-Suite",
            "maya@chert.example",
            "+1 310-555-0402",
            "",
            "",
            "+1 212-555-0403",
            "",
            "Cold",
            "LA leads",
            "",
            "maya@chert.example",
            "15",
            "Software",
            "http://www.linkedin.com/in/solvega",
            "http://www.acme.example",
            "Santa Monica",
            "California",
            "United States",
        ],
        [
            "Tia",
            "Ross",
            "Buyer",
            "Initech",
            "Initech",
            "tia@initech.example",
            "Unavailable",
            "Senior",
            "Purchasing",
            "maya@chert.example",
            "",
            "",
            "+1 323-555-0404",
            "",
            "",
            "Cold",
            "LA leads",
            "",
            "maya@chert.example",
            "400",
            "Manufacturing",
            "http://www.linkedin.com/in/tiaross",
            "http://www.initech.example",
            "Los Angeles",
            "California",
            "United States",
        ],
        [
            "Uma",
            "Chen",
            "CEO",
            "Globex",
            "Globex",
            "uma@globex.example",
            "Verified",
            "C suite",
            "C-Suite",
            "maya@chert.example",
            "",
            "",
            "+1 310-555-0405",
            "+1 212-555-0406",
            "",
            "Cold",
            "LA leads",
            "",
            "maya@chert.example",
            "60",
            "Energy",
            "http://www.linkedin.com/in/umachen",
            "http://www.globex.example",
            "Pasadena",
            "California",
            "United States",
        ],
    ]
    for name, rows in (("hubspot", hubspot), ("salesforce", salesforce), ("pipedrive", pipedrive), ("apollo", apollo)):
        with (CRM / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)
    for name, rows in (("hubspot", hubspot), ("apollo", apollo)):
        book = Workbook()
        sheet = book.active
        assert sheet is not None
        sheet.title = "Sheet1" if name == "apollo" else "All contacts"
        for row in rows:
            sheet.append([cell if cell else None for cell in row])  # blank cells, as the export leaves them
        book.save(CRM / f"{name}.xlsx")


if __name__ == "__main__":
    main()
