"""What a person sees, in a real browser: headless Chromium (Debian's, /usr/bin/chromium,
installed by `make test` when missing) driven by Playwright loads Swagger UI (`/`, `/docs`) and
ReDoc (`/redoc`) from a real server, and a generated daily report from a file. Checks are made
on the rendered DOM; the console must stay free of errors, page errors and failed loads.
Screenshots are saved in the test's temp folder (the path is printed; `pytest -s` shows it).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batch.html_report import render_html_report
from tests.serverutil import running_server
from tests.setups import report_rows

CHROMIUM = Path("/usr/bin/chromium")
# The flags this workplace's Chromium needs (no sandbox as root; no background connections,
# which a closed network refuses and the console would report).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.fail("Chromium is not installed: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(small_store, quick_model):
    with running_server(small_store.path) as proc:
        yield proc.url


class Page:
    """A page opened in a fresh context, with everything that went wrong while loading."""

    def __init__(self, browser, url: str):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(
            f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(
            f"failed: {r.url[:120]} {r.failure}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(
            f"HTTP {r.status}: {r.url[:120]}"))
        self.page.goto(url, wait_until="networkidle")

    def text(self) -> str:
        return self.page.evaluate("document.body.textContent")

    def shot(self, path: Path) -> None:
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")

    def close(self) -> None:
        self.context.close()


def _operations(url: str) -> list[tuple[str, str, str]]:
    spec = httpx.get(f"{url}/openapi.json", timeout=10).json()
    return [(method.upper(), path, op.get("summary") or "")
            for path, ops in spec["paths"].items() for method, op in ops.items()]


def _template_texts(text: str) -> list[str]:
    return [t for t in ("vcp_api:dev", "Machine Learning Service created with BentoML",
                        "Contact BentoML", "BentoML Team", "shields.io") if t in text]


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_swagger_ui_shows_every_route(browser, server, path, tmp_path):
    operations = _operations(server)
    page = Page(browser, f"{server}{path}")
    try:
        page.page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        shown = set(page.page.eval_on_selector_all(
            ".opblock-summary-path", "els => els.map(e => e.getAttribute('data-path'))"))
        assert {p for _, p, _ in operations} <= shown, sorted(shown)
        text = page.text()
        for _, _, summary in operations:
            assert summary in text
        title = page.page.inner_text(".info .title")
        assert "VCP breakout API" in title and "None" not in title
        for tag in ("prediction", "models", "operations"):
            assert page.page.locator(f"#operations-tag-{tag}").count() == 1, tag
        assert page.page.locator("#operations-tag-default").count() == 0
        assert "SIMULATED" in text and "X-API-Key" in text
        assert _template_texts(text) == []
        page.shot(tmp_path / f"swagger{path.replace('/', '_')}.png")
        assert page.problems == []
    finally:
        page.close()


def test_redoc_renders_every_route_with_resolved_schemas(browser, server, tmp_path):
    operations = _operations(server)
    page = Page(browser, f"{server}/redoc")
    try:
        page.page.wait_for_selector("h1", timeout=30_000)
        page.page.wait_for_selector("[data-section-id^='operation/']", state="attached",
                                    timeout=30_000)
        text = page.text()
        for _method, path, summary in operations:
            assert path in text, path
            assert summary in text, summary
        assert "VCP breakout API" in page.page.inner_text("h1")
        # Markdown rendered: headings are elements, no markup or reference shows as text.
        headings = page.page.eval_on_selector_all(
            "h2", "els => els.map(e => e.textContent.trim())")
        assert "What the probability means" in headings, headings
        assert page.page.locator("blockquote strong").count() >= 1  # the SIMULATED note
        for raw in ("## ", "**", "$ref", "<code>", "#/components"):
            assert raw not in text, raw
        # The request body of predict, resolved: its fields are listed.
        sections = page.page.eval_on_selector_all(
            "[data-section-id^='operation/']", "els => els.map(e => e.dataset.sectionId)")
        predict = [s for s in sections if s.startswith("operation/predict_")]
        assert len(predict) == 1, sections
        body = page.page.locator(f"[data-section-id='{predict[0]}']").text_content()
        for field in ("isin", "bse_code", "nse_symbol", "prediction_date"):
            assert field in body, field
        assert _template_texts(text) == []
        page.shot(tmp_path / "redoc.png")
        assert page.problems == []
    finally:
        page.close()


def test_daily_report_opens_offline_with_its_charts(browser, tmp_path):
    setups, near = report_rows(n_setups=12, n_near=3)
    report = tmp_path / "report_2026-10-30.html"
    report.write_text(render_html_report(
        prediction_date="2026-10-30", setups=setups, near_setups=near,
        previous_isins={setups[1].isin}, simulated=True, model_version="20261030-test",
        thresholds={"HIGH": 0.6, "MEDIUM": 0.45, "LOW": 0.0}), encoding="utf-8")
    page = Page(browser, report.as_uri())
    try:
        images = page.page.eval_on_selector_all(
            "img.chart", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
        assert len(images) >= 10
        assert all(done and w > 0 and h > 0 for done, w, h in images), images
        cards = page.page.eval_on_selector_all(".card.setup", "els => els.length")
        assert cards == 12
        assert page.page.locator(".badge.new").count() == 11
        assert page.page.locator("#simulated").is_visible()
        links = page.page.eval_on_selector_all("a.tv", "els => els.map(e => e.href)")
        assert all(h.startswith("https://www.tradingview.com/chart/?symbol=") for h in links)
        assert any("BSE:" in h for h in links) and any("NSE:" in h for h in links)
        width = page.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280  # no sideways scrolling at a 1280 px window
        page.shot(tmp_path / "report.png")
        assert page.problems == []
    finally:
        page.close()


def test_a_batch_runs_report_opens_offline(browser, small_store, quick_model, tmp_path):
    """The page a real batch run wrote: every setup's card, its chart loaded."""
    from batch import BatchConfig, run_batch

    result = run_batch(BatchConfig(market_db=small_store.path, out_dir=tmp_path / "out",
                                   predictions_db=tmp_path / "predictions.db"))
    page = Page(browser, result.files["html"].as_uri())
    try:
        cards = page.page.eval_on_selector_all(".card.setup", "els => els.length")
        assert cards == result.n_scored >= 1
        images = page.page.eval_on_selector_all(
            "img.chart", "els => els.map(e => [e.complete, e.naturalWidth])")
        assert len(images) >= cards and all(done and w > 0 for done, w in images), images
        assert page.page.locator("#simulated").is_visible()
        page.shot(tmp_path / "batch_report.png")
        assert page.problems == []
    finally:
        page.close()


def test_training_report_tables_fit_a_1000px_page(browser, quick_model, tmp_path):
    report = tmp_path / "training_report.html"
    report.write_text(quick_model[1].report_html, encoding="utf-8")
    page = Page(browser, report.as_uri())
    try:
        tables = page.page.eval_on_selector_all("table", """els => els.map(t => {
            const r = t.getBoundingClientRect();
            return [Math.ceil(t.scrollWidth), Math.ceil(r.width)];
        })""")
        assert len(tables) >= 4
        assert all(scroll <= 1000 and width <= 1000 for scroll, width in tables), tables
        cells = page.page.eval_on_selector_all("td", "els => els.map(e => e.textContent)")
        floats_for_ints = [c for c in cells if re.fullmatch(r"[1-9][\d,]*\.0+", c.strip())]
        assert floats_for_ints == []  # counts print as integers (7,460, not 7460.0000)
        page.shot(tmp_path / "training_report.png")
        assert page.problems == []
    finally:
        page.close()
