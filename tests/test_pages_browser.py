"""Both pages in a real browser: Debian's headless Chromium driven by Selenium through chromium-driver.

One browser for the module. Without Chromium these tests skip with one line, unless
CHERTCAST_REQUIRE_BROWSER=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from benchmarks.bench_pages import browser as chromium
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from chertcast.campaign import load_campaign
from chertcast.journal import Journal
from chertcast.preflight import Plan, build_plan
from chertcast.present import report_rows
from chertcast.render import bubbles
from chertcast.sandbox import DEFAULT_SECRET, SandboxServer
from tests.helpers import numbers, run_cli, run_process, write_campaign

REQUIRE_ENV = "CHERTCAST_REQUIRE_BROWSER"
HOSTILE = "<img src=x onerror=alert(1)>"
CLOSER = "</script><script>alert(2)</script>"
LEADS = 125  # more than a page of cards (100), so paging and problem links to later pages are exercised


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
MISSING = " and ".join(name for name, path in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if not path)
if MISSING and os.environ.get(REQUIRE_ENV, "") in ("", "0"):
    pytest.skip(
        f"no browser: {MISSING} not found (apt-get install -y chromium chromium-driver)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    if CHROMIUM is None or DRIVER is None:
        pytest.fail(f"{REQUIRE_ENV} is set, but {MISSING} not found: apt-get install -y chromium chromium-driver")
    chrome = chromium(tmp_path_factory.mktemp("chromium-profile"), console_log=True)
    try:
        yield chrome
    finally:
        chrome.quit()


@dataclass
class Pages:
    plan: Plan
    preview: Path
    report: Path
    table_rows: list[list[object]]
    shots: Path


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Pages:
    """A campaign sent to a loopback sandbox: hostile cells, effects, an attachment, an effect Chert
    refuses (a 4098 failure), an error, a duplicate and a suppressed number; then both pages."""
    folder = tmp_path_factory.mktemp("campaign")
    (folder / "card.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a photo")
    phones = numbers(LEADS + 1)
    lines = ["phone,name,note,effect,attachment"]
    lines.append(f'{phones[0]},"{HOSTILE}",plain,,')
    lines.append(f"{phones[1]},{CLOSER},{CLOSER},slam,card.jpg")
    lines.append(f"{phones[2]},Sparkle,sp,sparkle,")  # Chert refuses the effect: a failure with code 4098
    lines += [f"{phone},Lead {i},n{i},,{'card.jpg' if i % 10 == 0 else ''}" for i, phone in enumerate(phones[3:-1])]
    lines.append(f"{phones[5]},Lead twice,dup,,")
    lines.append(f"{phones[-1]},Opted Out,x,,")
    lines.append("555-0199,Broken,x,,")
    (folder / "contacts.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "optout.csv").write_text(f"phone\n{phones[-1]}\n", encoding="utf-8")
    (folder / "message.j2").write_text("Hi {{ name }}!\n\nYour note: {{ note }}\nsee you\n\nBye\n", encoding="utf-8")
    columns = (
        '[columns]\nname = "name"\neffect = "effect"\nattachments = "attachment"\n[send]\nrate = 1000\nburst = 200\n'
    )
    campaign = write_campaign(
        folder, "contacts.csv", template=folder / "message.j2", extra='suppress = ["optout.csv"]\n' + columns
    )
    with SandboxServer() as server:
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        sent = run_process("send", campaign, "--yes", env=env)
    assert sent.returncode == 1 and "failed 1" in sent.stdout, sent.stdout + sent.stderr
    assert run_cli("preview", campaign, "--html", folder / "preview.html").exit_code == 0
    assert run_cli("report", campaign, "--html", folder / "report.html").exit_code == 0
    loaded = load_campaign(campaign)
    plan = build_plan(loaded)
    with Journal.open_existing(loaded.default_journal, loaded.id) as journal:
        _, table = report_rows(plan, list(journal.rows()), None)
    return Pages(plan, folder / "preview.html", folder / "report.html", table, tmp_path_factory.mktemp("shots"))


def open_page(browser: webdriver.Chrome, path: Path) -> None:
    browser.get_log("browser")  # what an earlier page said is not this page's business
    browser.get(path.as_uri())


def assert_clean(browser: webdriver.Chrome) -> None:
    """No console error (a blocked fetch, a CSP violation or a script error all log one), no request."""
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


def assert_no_alert(browser: webdriver.Chrome) -> None:
    with pytest.raises(TimeoutException):
        WebDriverWait(browser, 0.5).until(expected_conditions.alert_is_present())


def count(browser: webdriver.Chrome, selector: str) -> int:
    return len(browser.find_elements(By.CSS_SELECTOR, selector))


def showing(browser: webdriver.Chrome) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, ".showing").text)


def shown_rows(browser: webdriver.Chrome) -> list[int]:
    return [int(card.get_attribute("data-row") or 0) for card in browser.find_elements(By.CSS_SELECTOR, ".card")]


def test_preview_page_loads_clean_and_matches_the_plan(browser: webdriver.Chrome, pages: Pages) -> None:
    open_page(browser, pages.preview)
    assert_clean(browser)
    plan = pages.plan
    first = plan.recipients[:100]
    assert shown_rows(browser) == [r.row for r in first]
    assert showing(browser) == f"showing 1–100 of {len(plan.recipients)}"
    assert count(browser, ".bubble") == sum(len(bubbles(r.body)) for r in first if r.body is not None) == 300
    assert count(browser, "tr.problem") == len(plan.issues) == 2  # the duplicate and the bad number
    assert count(browser, ".attachment") == sum(len(r.attachments) for r in first) > 0
    card = browser.find_element(By.ID, "row-3")  # slam effect, the attachment, three bubbles
    assert [b.text for b in card.find_elements(By.CSS_SELECTOR, ".bubble")] == bubbles(plan.recipients[1].body or "")
    assert card.find_element(By.CSS_SELECTOR, ".effect").text == "sent with the slam effect"
    assert card.find_element(By.CSS_SELECTOR, ".attachment").text == "📎 attachment: card.jpg"
    assert card.find_element(By.CSS_SELECTOR, ".phone").text == plan.recipients[1].phone
    shot = pages.shots / "preview.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_preview_filter_and_search(browser: webdriver.Chrome, pages: Pages) -> None:
    open_page(browser, pages.preview)
    status = Select(browser.find_element(By.ID, "status"))
    for value in ("error", "duplicate", "suppressed", "sendable"):
        status.select_by_value(value)
        expected = [r.row for r in pages.plan.recipients if r.status == value][:100]
        assert shown_rows(browser) == expected and expected
    status.select_by_value("")
    search = browser.find_element(By.ID, "search")
    for query, names in [
        ("lead 11", ["Lead 11", *[f"Lead {n}" for n in range(110, 120)]]),
        ("twice", ["Lead twice"]),
        (pages.plan.recipients[0].phone, [HOSTILE]),  # the E.164 number
        (pages.plan.recipients[1].raw_phone, [CLOSER]),  # as written in the sheet
        (spaced(pages.plan.recipients[2].phone or ""), ["Sparkle"]),  # the digits, in another layout
        ("nobody by that name", []),
    ]:
        search.clear()
        search.send_keys(query)
        assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".card .name")] == names, query
    assert showing(browser) == "nothing matches"


def spaced(e164: str) -> str:
    """+16465550000 → '646 555 0000', a layout the sheet does not use."""
    return f"{e164[2:5]} {e164[5:8]} {e164[8:]}"


def test_a_problem_link_shows_its_row_even_on_a_later_page(browser: webdriver.Chrome, pages: Pages) -> None:
    open_page(browser, pages.preview)
    broken = pages.plan.recipients[-1]
    assert broken.status == "error" and len(pages.plan.recipients) > 100
    Select(browser.find_element(By.ID, "status")).select_by_value("sendable")  # the link clears the filter
    browser.find_element(By.CSS_SELECTOR, f'a[data-row="{broken.row}"]').click()
    card = browser.find_element(By.ID, f"row-{broken.row}")
    assert card.is_displayed() and "flash" in (card.get_attribute("class") or "")
    assert showing(browser) == f"showing 101–{len(pages.plan.recipients)} of {len(pages.plan.recipients)}"
    assert card.find_element(By.CSS_SELECTOR, ".reason").text.startswith("not sent: ")


def test_hostile_cells_show_as_text_and_run_nothing(browser: webdriver.Chrome, pages: Pages) -> None:
    open_page(browser, pages.preview)
    assert_no_alert(browser)
    assert count(browser, "main img") == 0 and count(browser, "script") == 2
    first = browser.find_element(By.ID, "row-2")
    assert first.find_element(By.CSS_SELECTOR, ".name").text == HOSTILE
    assert first.find_element(By.CSS_SELECTOR, ".bubble").text == f"Hi {HOSTILE}!"
    second = browser.find_element(By.ID, "row-3")
    assert second.find_element(By.CSS_SELECTOR, ".name").text == CLOSER
    assert f"Your note: {CLOSER}" in second.text
    open_page(browser, pages.report)
    assert_no_alert(browser)
    search = browser.find_element(By.ID, "search")
    search.send_keys("onerror")
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#table-body td")]
    assert HOSTILE in cells and count(browser, "main img") == 0


def test_report_page_loads_clean_and_matches_the_journal(browser: webdriver.Chrome, pages: Pages) -> None:
    open_page(browser, pages.report)
    assert_clean(browser)
    assert count(browser, ".js-plotly-plot .main-svg") >= 2  # plotly drew the funnel and the sends per day
    stages = {
        row.get_attribute("data-stage"): row.find_elements(By.TAG_NAME, "td")[1].text
        for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-stage]")
    }
    sendable = len(pages.plan.sendable)
    assert stages == {
        "planned": f"{sendable}",
        "sent": f"{sendable - 1}",
        **dict.fromkeys(["delivered", "read", "replied", "opted_out"], "not synced yet"),
    }
    failures = browser.find_elements(By.CSS_SELECTOR, "tr.failure")
    assert [" ".join(f.text.split()) for f in failures] == ["4098 1 1 × Unknown effect: sparkle"]
    lines = browser.find_elements(By.CSS_SELECTOR, "tr.line-day")
    assert sum(int(line.find_elements(By.TAG_NAME, "td")[2].text) for line in lines) == sendable - 1
    assert count(browser, "#table-body tr") == len(pages.table_rows)
    state = Select(browser.find_element(By.ID, "state"))
    state.select_by_value("failed")
    assert [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#table-body tr td:nth-child(3)")] == ["Sparkle"]
    state.select_by_value("skipped")
    assert count(browser, "#table-body tr") == len(pages.plan.recipients) - sendable
    shot = pages.shots / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_report_page_shows_messages_that_failed_delivery_after_sending(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """After sync: the failures list them and the state filter's "failed delivery" shows just them."""
    import time

    from chertcast.sandbox import SandboxConfig, SandboxModel
    from chertcast.sandbox.outcomes import OutcomeConfig
    from tests.helpers import write_contacts

    campaign = write_campaign(tmp_path, write_contacts(tmp_path / "contacts.csv", 30), extra="[send]\nrate = 1000\n")
    model = SandboxModel(SandboxConfig(outcomes=OutcomeConfig(seed=5, failed_share=0.3, delay_s=0.1)))
    with SandboxServer(model) as server:
        env = {**os.environ, "CHERT_BASE_URL": server.base_url, "CHERT_SIGNING_SECRET": DEFAULT_SECRET}
        assert run_cli("send", campaign, "--yes", env=env).exit_code == 0
        model.config.clock = lambda: time.time() + 10_000  # every outcome has happened
        assert run_cli("sync", campaign, env=env).exit_code == 0
    page = tmp_path / "report.html"
    assert run_cli("report", campaign, "--html", page).exit_code == 0
    with Journal.open_existing(load_campaign(campaign).default_journal, "test-campaign") as journal:
        failed = journal.connection().execute("SELECT COUNT(*) FROM outcomes WHERE status = 'failed'").fetchone()[0]
    assert 0 < failed < 30
    open_page(browser, page)
    assert_clean(browser)
    failures = browser.find_elements(By.CSS_SELECTOR, "tr.failure")
    assert [" ".join(f.text.split()) for f in failures] == [
        f"sent, then failed delivery {failed} {failed} × Recipient is not reachable on iMessage"
    ]
    Select(browser.find_element(By.ID, "state")).select_by_value("failed-delivery")
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#row-table th")]
    column = f"#table-body tr td:nth-child({headers.index('note') + 1})"
    notes = [td.text for td in browser.find_elements(By.CSS_SELECTOR, column)]
    assert notes == ["sent, then failed delivery: Recipient is not reachable on iMessage"] * failed
