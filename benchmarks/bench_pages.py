"""Pages at scale: a 100,000-row sheet's preview page (size, first paint in headless Chromium) and
`preview --html` against `check` on the same sheet; the report page of the same campaign too."""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from benchmarks.common import machine, save, write_campaign

RUNS = 3


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-400:]}")
    return elapsed


# The flags the probe of this machine kind found necessary: headless as root, and no background
# connections (this machine's network is closed). The browser tests use the same browser.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1200,1400",
)


def browser(profile: Path, *, console_log: bool = False) -> webdriver.Chrome:
    """Debian's headless Chromium through its chromedriver, with a fresh profile."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))


def paint(chrome: webdriver.Chrome, page: Path, ready: str) -> dict[str, float]:
    """First contentful paint (the browser's own clock), and when `ready` (drawn by the script) showed."""
    chrome.get("about:blank")
    start = time.perf_counter()
    chrome.get(page.as_uri())
    WebDriverWait(chrome, 60).until(lambda c: c.find_elements(By.CSS_SELECTOR, ready))
    ready_s = time.perf_counter() - start
    fcp = chrome.execute_script(
        "var e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null"
    )
    return {"first_contentful_paint_s": round(float(fcp) / 1000, 3), "first_card_s": round(ready_s, 3)}


def median_paint(chrome: webdriver.Chrome, page: Path, ready: str) -> dict[str, float]:
    runs = [paint(chrome, page, ready) for _ in range(RUNS)]
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in runs[0]}


def pages(rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        campaign = write_campaign(folder, rows, duplicate_share=0.05)
        chertcast = [sys.executable, "-m", "chertcast"]
        preview = folder / "preview.html"
        check_s, html_s = [], []
        for _ in range(RUNS):  # alternated, so both see the same machine noise
            check_s.append(timed([*chertcast, "check", str(campaign)]))
            html_s.append(timed([*chertcast, "preview", str(campaign), "--html", str(preview), "--force"]))
        send = [*chertcast, "send", str(campaign), "--sandbox", "--limit", "100", "--yes"]
        timed(send)  # a journal for the report: every row planned, 100 sent
        report = folder / "report.html"
        report_s = timed([*chertcast, "report", str(campaign), "--sandbox", "--html", str(report)])
        chrome = browser(folder / "profile")
        try:
            preview_paint = median_paint(chrome, preview, ".card")
            report_paint = median_paint(chrome, report, "#table-body tr")
        finally:
            chrome.quit()
        check, html = statistics.median(check_s), statistics.median(html_s)
        return {
            "rows": rows,
            "runs": RUNS,
            "check_s": round(check, 2),
            "preview_html_s": round(html, 2),
            "preview_html_over_check": round(html / check, 2),
            "preview_page_mb": round(preview.stat().st_size / 1e6, 2),
            "preview_paint": preview_paint,
            "report_html_s": round(report_s, 2),
            "report_page_mb": round(report.stat().st_size / 1e6, 2),
            "report_paint": report_paint,
        }


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    return save("pages", {"machine": machine(), "pages": pages(args.rows)})


if __name__ == "__main__":
    main()
