"""The daily HTML report (batch/html_report.py): a self-contained page of ranked setups with
embedded thumbnails, NEW marks, near setups, TradingView links and the simulated banner.
The browser test (test_browser.py) loads one in Chromium."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from batch.html_report import NearSetupRow, SetupRow, render_html_report, tradingview_url
from tests.setups import report_rows


class _Page(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.external: list[str] = []  # anything the page would load from elsewhere
        self.setups: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        if tag in ("script", "link", "iframe") or (
                tag == "img" and not a["src"].startswith("data:")):
            self.external.append(f"{tag} {a}")
        if tag == "a":
            self.links.append(a["href"])
        if tag == "div" and "setup" in (a.get("class") or "").split():
            self.setups.append(a["data-isin"])


@pytest.fixture(scope="module")
def rows():
    return report_rows(n_setups=6, n_near=2)


def _render(setups, near, previous=None, simulated=True, **kw) -> str:
    return render_html_report(prediction_date="2026-10-30", setups=setups, near_setups=near,
                              previous_isins=previous, simulated=simulated,
                              model_version="20261030-abc",
                              thresholds={"HIGH": 0.6, "MEDIUM": 0.45, "LOW": 0.0}, **kw)


def test_setups_ranked_with_their_facts_and_embedded_charts(rows):
    setups, near = rows
    text = _render(setups, near)
    page = _Page(text)
    assert page.setups == [r.isin for r in setups]  # in rank order
    assert len(page.images) == len(setups) + len(near)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert page.external == []  # opens offline: nothing loaded from anywhere
    for r in setups:
        card = text[text.index(f'data-isin="{r.isin}"'):]
        card = card[:card.index("</table>")]
        for fact in (f"#{r.rank}", r.footprint, f"{r.pivot:,.2f}", f"{r.stop:,.2f}",
                     f"{r.risk_pct:.1%}", f"{r.probability:.0%}", f">{r.confidence}<"):
            assert fact in card, (fact, r.isin)
    assert "SIMULATED DATA" in text and 'id="simulated"' in text
    assert 'id="simulated"' not in _render(setups, near, simulated=False)


def test_new_marks_only_on_setups_not_in_the_previous_run(rows):
    setups, near = rows
    previous = {setups[0].isin, setups[3].isin, "INEZ99999990"}
    text = _render(setups, near, previous=previous)
    marked = {m for m in re.findall(r'data-isin="([^"]+)"', text)
              if 'class="badge new"' in text[text.index(f'data-isin="{m}"'):].split(
                  "</table>")[0]}
    assert marked == {r.isin for r in setups} - previous
    assert "4 new since the previous run" in text
    first_run = _render(setups, near, previous=None)
    assert 'class="badge new"' not in first_run
    assert "no previous run to compare with" in first_run


def test_tradingview_links_nse_or_bse_for_bse_only():
    assert tradingview_url("RAUTGO", "700001") == (
        "https://www.tradingview.com/chart/?symbol=NSE:RAUTGO")
    assert tradingview_url(None, "700002") == (
        "https://www.tradingview.com/chart/?symbol=BSE:700002")
    assert tradingview_url("M&M", "500520").endswith("symbol=NSE:M_M")
    assert tradingview_url("bajaj-auto", None).endswith("symbol=NSE:BAJAJ_AUTO")
    assert tradingview_url(None, None) is None


def test_near_setups_with_why_not_and_text_escaped(rows):
    setups, near = rows
    hostile = replace(setups[0], name="<script>alert(1)</script> & Co")
    odd = NearSetupRow(isin="INEZ00000990", nse_symbol=None, bse_code="700099",
                       name="Near <b>Ltd</b>", why_not="pivot < 5% away & volume > 2x",
                       close=None)
    text = _render([hostile], [odd])
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in text
    assert "pivot &lt; 5% away &amp; volume &gt; 2x" in text
    assert "Near &lt;b&gt;Ltd&lt;/b&gt;" in text
    assert "symbol=BSE:700099" in text


def test_an_empty_day_still_renders():
    text = _render([], [])
    assert "No setup today." in text and "None today." in text
    assert "0 setups" in text


def test_a_setup_without_a_chart():
    row = SetupRow(rank=1, isin="INEZ00000010", nse_symbol="RAUTGO", bse_code=None,
                   name="Rautgo", footprint="8W 20/6 2T", pivot=100.0, stop=93.0,
                   risk_pct=0.07, probability=0.5, confidence="MEDIUM")
    text = _render([row], [])
    assert _Page(text).images == [] and "no chart" in text
