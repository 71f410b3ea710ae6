"""The plan: keys, duplicates, suppression, template checks, campaign-file validation."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from openpyxl import load_workbook

from chertcast.campaign import load_campaign
from chertcast.errors import ConfigError, InputError
from chertcast.preflight import build_plan, idempotency_key
from tests.conftest import DATA, ROOT
from tests.helpers import run_cli, write_campaign

DEMO = ROOT / "campaigns" / "welcome.toml"


def test_idempotency_key_vectors() -> None:
    # Pinned: changing the recipe would re-send every resumed campaign.
    assert idempotency_key("welcome-2026", "+14155550100") == "cc1_fb3e71c4e929bdf2d4817f58ec3e556784903b2b"
    assert (
        idempotency_key("a", "+14155552671")
        == "cc1_" + __import__("hashlib").sha256(b"chertcast/v1\x1fa\x1f+14155552671").hexdigest()[:40]
    )
    assert idempotency_key("a", "+1") != idempotency_key("b", "+1")
    assert len(idempotency_key("x" * 64, "+999999999999999")) == 44


def test_keys_survive_resorting_and_added_rows(tmp_path: Path) -> None:
    original = tmp_path / "a.csv"
    original.write_text("phone,name\n4155550100,A\n4155550101,B\n")
    resorted = tmp_path / "b.csv"
    resorted.write_text("phone,name\n4155550199,New\n4155550101,B\n4155550100,A\n")
    keys = {}
    for name in ("a.csv", "b.csv"):
        plan = build_plan(load_campaign(write_campaign(tmp_path, tmp_path / name)))
        keys[name] = {r.phone: r.key for r in plan.recipients}
    assert keys["a.csv"]["+14155550100"] == keys["b.csv"]["+14155550100"]
    assert keys["a.csv"]["+14155550101"] == keys["b.csv"]["+14155550101"]


def test_duplicates_in_different_formats_name_the_first_row(tmp_path: Path) -> None:
    plan = build_plan(load_campaign(write_campaign(tmp_path, DATA / "dup_formats.csv")))
    statuses = [(r.row, r.status) for r in plan.recipients]
    assert statuses == [(2, "sendable"), (3, "duplicate"), (6, "duplicate"), (7, "duplicate"), (8, "sendable")]
    assert plan.recipients[1].reason == "+14155550107 repeats row 2; only row 2 is sent"
    assert plan.exit_code() == 1


def test_empty_template_cells_are_row_errors(tmp_path: Path) -> None:
    campaign = write_campaign(
        tmp_path, DATA / "empty_cells.csv", body="Hi {{ first_name | default('there', true) }} in {{ city }}"
    )
    plan = build_plan(load_campaign(campaign))
    by_row = {r.row: r for r in plan.recipients}
    assert by_row[2].body == "Hi there in Austin"  # default used, not "Hi  in" or "Hi None"
    assert by_row[3].status == "error"
    assert [(i.row, i.column, i.code) for i in plan.issues] == [(3, "city", "empty_variable")]
    assert all("None" not in (r.body or "") for r in plan.recipients)


def test_suppression_lists_in_any_format(tmp_path: Path) -> None:
    (tmp_path / "optout.txt").write_text("+1 (415) 555-0109\n")
    (tmp_path / "optout.csv").write_text("Mobile\n415.555.0111\n")
    campaign = write_campaign(
        tmp_path, DATA / "empty_cells.csv", body="Hi", extra='suppress = ["optout.txt", "optout.csv"]\n'
    )
    plan = build_plan(load_campaign(campaign))
    assert [r.status for r in plan.recipients] == ["suppressed", "sendable", "suppressed"]
    assert plan.exit_code() == 0


def test_body_limits(tmp_path: Path) -> None:
    campaign = write_campaign(
        tmp_path,
        DATA / "empty_cells.csv",
        body="{{ city | default('', true) }}" + "x" * 5,
        extra="max_body_chars = 8\n",
    )
    plan = build_plan(load_campaign(campaign))
    codes = [i.code for i in plan.issues]
    assert codes == ["body_too_long", "body_too_long"]  # Austin+5 and Reno+5 > 8; "" + 5 fits
    empty = write_campaign(tmp_path, DATA / "empty_cells.csv", body="{{ city | default('', true) }}")
    assert [i.code for i in build_plan(load_campaign(empty)).issues] == ["body_empty"]


def test_phone_column_detection_and_mapping(tmp_path: Path) -> None:
    plan = build_plan(load_campaign(write_campaign(tmp_path, DATA / "zero_width.csv", body="Hi {{ first_name }}")))
    assert plan.phone_column == "Phone Number" and plan.phone_column_detected
    assert [r.phone for r in plan.recipients] == ["+14155550105", "+14155550106"]
    assert plan.recipients[0].body == "Hi Maya"
    wrong = write_campaign(tmp_path, DATA / "zero_width.csv", body="Hi", extra='[columns]\nphone = "Cell"\n')
    with pytest.raises(ConfigError, match=r"columns.phone: no column 'Cell' in zero_width.csv"):
        build_plan(load_campaign(wrong))


def test_xlsx_plan_recovers_number_cells(tmp_path: Path) -> None:
    plan = build_plan(load_campaign(write_campaign(tmp_path, DATA / "numbers.xlsx", body="Hi {{ name }}")))
    by_row = {r.row: r for r in plan.recipients}
    assert by_row[2].phone == "+14155550000"
    assert by_row[163].phone == "+447400123456" and by_row[165].phone == "+447400123457"
    assert by_row[164].status == "error"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("bogus = 1\n", "bogus: unknown key"),
        ("[send]\nrate = -1\n", "send.rate: Input should be greater than 0"),
        ("[send]\nconcurency = 3\n", "send.concurency: unknown key"),
        ('[api]\nbase_url = "http://chert.example.com/api/v1"\n', "plain http to a non-loopback host"),
        ('template = "t.j2"\n', "exactly one of `template`"),
    ],
)
def test_campaign_file_errors_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    campaign = write_campaign(tmp_path, DATA / "cp1252.csv", body="Hi", extra=extra)
    with pytest.raises(ConfigError, match=message):
        load_campaign(campaign)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[send]\nrat = 5\n", "send.rat: unknown key (did you mean `rate`?)"),
        ('[capacity]\nline = ["pl_a"]\n', "capacity.line: unknown key (did you mean `lines`?)"),
        ("[send]\nMax-Attempts = 3\n", "send.Max-Attempts: unknown key (did you mean `max_attempts`?)"),
        ("[sends]\nrate = 5\n", "sends: unknown key (did you mean `send`?)"),
        ("rate = 5\n", "rate: unknown key (it belongs in [send])"),  # a key one table too high
        ('opt_out = "optouts.csv"\n', "opt_out: unknown key (did you mean `opt_out_list`?)"),
        ('[quiet_hours]\nstrat = "08:00"\n', "quiet_hours.strat: unknown key (did you mean `start`?)"),
        (
            '[[follow_up]]\nafter = "1d"\nbody = "x"\nstop_onn = ["opt_out"]\n',
            "follow_up step 2.stop_onn: unknown key (did you mean `stop_on`?)",
        ),
        ('[send]\nattachments = [{ idd = "att_1" }]\n', "AttachmentSpec].idd: unknown key (did you mean `id`?)"),
    ],
)
def test_a_misspelt_key_gets_the_close_known_key_at_its_level(tmp_path: Path, extra: str, message: str) -> None:
    campaign = write_campaign(tmp_path, DATA / "cp1252.csv", body="Hi", extra=extra, planned=True)
    with pytest.raises(ConfigError) as raised:
        load_campaign(campaign)
    text = str(raised.value)
    assert text.startswith(f"{campaign}: ") and "\n" not in text
    assert message in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("bogus = 1\n", "bogus: unknown key"),
        ("[send]\nxyzzy = 5\n", "send.xyzzy: unknown key"),
        ("[capacity]\nsource = 1\n", "capacity.source: unknown key"),  # a key of another table: not a hint
        ("[api]\nsource = 1\n", "api.source: unknown key"),
    ],
)
def test_a_key_far_from_every_known_key_gets_no_suggestion(tmp_path: Path, extra: str, message: str) -> None:
    campaign = write_campaign(tmp_path, DATA / "cp1252.csv", body="Hi", extra=extra, planned=True)
    with pytest.raises(ConfigError) as raised:
        load_campaign(campaign)
    assert str(raised.value).endswith(f"{campaign}: {message}") and "did you mean" not in str(raised.value)


def test_campaign_id_is_required_and_a_slug(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('contacts = "x.csv"\nbody = "Hi"\n')
    with pytest.raises(ConfigError, match="id: Field required"):
        load_campaign(tmp_path / "c.toml")
    with pytest.raises(
        ConfigError, match=r"id: use lowercase letters, digits and '-', starting with a letter or digit"
    ):
        load_campaign(DATA / "bad" / "spaces_id.toml")


def test_unknown_template_variable_is_campaign_level(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, DATA / "cp1252.csv", template=DATA / "bad" / "unknown_variable.j2")
    with pytest.raises(
        ConfigError, match=r"template variable nickname is not a column of cp1252.csv \(available: name, phone\)"
    ):
        build_plan(load_campaign(campaign))


def test_check_cli_on_the_demo() -> None:
    result = run_cli("check", DEMO)
    assert result.exit_code == 1
    assert "sendable          44" in result.output
    assert "    19  Mobile  error     '555-0199' is not a valid number for US" in result.output
    assert "To do: fix 2 phone numbers" in result.output
    data = json.loads(run_cli("check", DEMO, "--json").output)
    assert data["campaign"] == "welcome-2026" and data["total"] == 50 and data["sendable"] == 44
    assert {"row": 31, "column": "City", "severity": "error", "code": "empty_variable"}.items() <= data["issues"][
        4
    ].items()


def test_check_exit_codes(tmp_path: Path) -> None:
    clean = tmp_path / "clean.csv"
    clean.write_text("phone\n4155550100\n")
    assert run_cli("check", write_campaign(tmp_path, clean, body="Hi")).exit_code == 0
    missing = write_campaign(tmp_path, tmp_path / "nope.csv", body="Hi")
    result = run_cli("check", missing)
    assert result.exit_code == 2 and "contact file does not exist" in result.output


def test_preview_shows_bubbles_and_one_row() -> None:
    result = run_cli("preview", DEMO, "--rows", "1")
    assert result.exit_code == 0
    assert "── row 2 · +14155550100 · Ada" in result.output
    assert "   │ Hi Ada, it's Maya from Northwind 👋\n\n   │ We just opened" in result.output
    row = run_cli("preview", DEMO, "--row", "25")
    assert "not sent: duplicate: +12125550102 repeats row 4" in row.output
    assert run_cli("preview", DEMO, "--row", "999").exit_code == 2


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_preview_export_neutralises_formulas(tmp_path: Path, suffix: str) -> None:
    contacts = tmp_path / "c.csv"
    contacts.write_text('phone,name\n4155550100,"=HYPERLINK(""http://x"")"\n4155550101,@SUM(A1)\n')
    out = tmp_path / f"out{suffix}"
    result = run_cli("preview", write_campaign(tmp_path, contacts), "--out", out)
    assert result.exit_code == 0 and "wrote 2 rows" in result.output
    if suffix == ".csv":
        text = out.read_text(encoding="utf-8-sig")
        assert "'=HYPERLINK" in text and "'@SUM(A1)" in text and ",+14155550100," in text
    else:
        rows = list(load_workbook(out).active.iter_rows(values_only=True))  # type: ignore[union-attr]
        assert rows[0][:3] == ("row", "phone", "name")
        assert rows[1][2] == '=HYPERLINK("http://x")' and rows[1][3] == "+14155550100" and rows[1][4] == "sendable"
        assert rows[1][7].startswith("cc1_")


def test_check_and_preview_open_no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert run_cli("check", DEMO).exit_code == 1
    assert run_cli("preview", DEMO, "--out", tmp_path / "p.csv").exit_code == 0


def test_xlsx_demo_matches_csv_demo(tmp_path: Path) -> None:
    text = DEMO.read_text().replace("contacts.csv", "contacts.xlsx")
    xlsx = DEMO.parent / "_xlsx_test.toml"
    try:
        xlsx.write_text(text)
        csv_plan, xlsx_plan = build_plan(load_campaign(DEMO)), build_plan(load_campaign(xlsx))
    finally:
        xlsx.unlink()
    assert [(r.row, r.phone, r.status, r.body) for r in csv_plan.recipients] == [
        (r.row, r.phone, r.status, r.body) for r in xlsx_plan.recipients
    ]


def test_bad_encoding_option(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown encoding"):
        build_plan(load_campaign(write_campaign(tmp_path, DATA / "cp1252.csv", body="Hi")), encoding="klingon")


def test_two_process_path_gives_the_same_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import chertcast.preflight as preflight

    campaign = load_campaign(DEMO)
    serial = build_plan(campaign)
    monkeypatch.setattr(preflight, "PARALLEL_THRESHOLD", 10)
    forked = build_plan(campaign)
    assert forked.recipients == serial.recipients and forked.issues == serial.issues
