"""The daily list as one HTML page (`report_YYYY-MM-DD.html`) that opens offline, with no server:
the day's setups ranked, each with its chart thumbnail embedded as a data URI, footprint,
pivot, stop, risk, probability, confidence and a TradingView link; a NEW mark on setups that
were not in the previous run; the near-setups (stocks that failed a late rule) with their
`why_not`; and the simulated-data banner when the store is simulated.

`render_html_report` is a pure function of typed rows (`SetupRow`, `NearSetupRow`); the batch
fills them from its setups and scores, with thumbnails from `inference.charts.render_thumbnail`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

TRADINGVIEW = "https://www.tradingview.com/chart/?symbol="


@dataclass(frozen=True)
class SetupRow:
    """One ranked setup of the day (the detector's setup dict and its score)."""

    rank: int
    isin: str
    nse_symbol: str | None
    bse_code: str | None
    name: str
    footprint: str
    pivot: float
    stop: float
    risk_pct: float  # 0.075 = 7.5% below the pivot
    probability: float  # calibrated P(win) of the breakout trade
    confidence: str  # HIGH / MEDIUM / LOW
    close: float | None = None
    sector: str | None = None
    breakout: bool = False
    chart_png: bytes | None = None  # a thumbnail (inference.charts.render_thumbnail)


@dataclass(frozen=True)
class NearSetupRow:
    """A stock that passed the early rules and failed a late one (`why_not`)."""

    isin: str
    nse_symbol: str | None
    bse_code: str | None
    name: str
    why_not: str
    close: float | None = None
    chart_png: bytes | None = None


def tradingview_url(nse_symbol: str | None, bse_code: str | None) -> str | None:
    """The stock's TradingView chart: NSE when it has an NSE symbol, else BSE by code.
    TradingView spells NSE symbols with '_' for '-' and '&' (BAJAJ-AUTO -> BAJAJ_AUTO)."""
    if nse_symbol:
        symbol = "NSE:" + nse_symbol.upper().replace("-", "_").replace("&", "_")
    elif bse_code:
        symbol = f"BSE:{bse_code}"
    else:
        return None
    return TRADINGVIEW + quote(symbol, safe=":")


# -- page --------------------------------------------------------------------------------------
CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1000px;
  margin:0 auto;padding:16px;color:#1c1c1c;background:#fafafa}
h1{font-size:24px;margin:4px 0}h2{font-size:19px;margin:28px 0 8px;border-bottom:2px solid #ddd}
.banner{background:#b71c1c;color:#fff;padding:10px 14px;border-radius:6px;font-weight:600}
.meta{color:#555;font-size:14px;line-height:1.5}
.card{display:flex;gap:14px;background:#fff;border:1px solid #ddd;border-radius:8px;
  padding:10px;margin:10px 0}
.card img{width:520px;height:320px;flex:none;border:1px solid #eee}
.nochart{width:520px;height:320px;flex:none;display:flex;align-items:center;
  justify-content:center;color:#999;border:1px dashed #ccc}
.facts{flex:1;min-width:0}
.facts h3{margin:2px 0 2px;font-size:18px}
.facts .name{color:#555;font-size:13px;margin-bottom:8px;overflow-wrap:anywhere}
.facts table{border-collapse:collapse;width:100%;font-size:14px}
.facts td{padding:3px 4px;border-bottom:1px solid #f0f0f0}
.facts td.v{text-align:right;font-variant-numeric:tabular-nums;font-weight:600}
.rank{color:#888;font-weight:400;margin-right:6px}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:12px;font-weight:700;
  vertical-align:middle;margin-left:6px}
.new{background:#2e7d32;color:#fff}.HIGH{background:#1b5e20;color:#fff}
.MEDIUM{background:#f9a825;color:#222}.LOW{background:#cfd8dc;color:#222}
.bo{background:#1565c0;color:#fff}
a{color:#1565c0}
table.near{border-collapse:collapse;width:100%;font-size:14px;background:#fff}
table.near th,table.near td{border:1px solid #ddd;padding:4px 6px;text-align:left;
  vertical-align:top}
table.near th{background:#f0f0f0}
.near img{width:260px;height:160px}
.foot{color:#555;font-size:13px;margin-top:28px;line-height:1.5}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _price(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x:,.2f}"


def _img(png: bytes | None, alt: str, css_class: str = "") -> str:
    if png is None:
        return f'<div class="nochart {css_class}">no chart</div>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="chart {css_class}" alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _symbol_link(nse_symbol: str | None, bse_code: str | None, isin: str) -> str:
    label = nse_symbol or bse_code or isin
    url = tradingview_url(nse_symbol, bse_code)
    if url is None:
        return _esc(label)
    return (f'<a class="tv" href="{_esc(url)}" target="_blank" rel="noopener" '
            f'title="Open on TradingView">{_esc(label)}</a>')


def _setup_card(row: SetupRow, is_new: bool) -> str:
    badges = f'<span class="badge {_esc(row.confidence)}">{_esc(row.confidence)}</span>'
    if is_new:
        badges += '<span class="badge new" title="not a setup in the previous run">NEW</span>'
    if row.breakout:
        badges += '<span class="badge bo" title="closed above the pivot today">BREAKOUT</span>'
    ids = " · ".join(_esc(x) for x in (row.nse_symbol and f"NSE {row.nse_symbol}",
                                        row.bse_code and f"BSE {row.bse_code}", row.isin) if x)
    to_pivot = (f"{row.close / row.pivot - 1:+.1%}" if row.close is not None
                and np.isfinite(row.close) and row.pivot else "-")
    facts = [("probability (win)", f"{row.probability:.0%}"), ("footprint", _esc(row.footprint)),
             ("pivot (buy-stop)", _price(row.pivot)), ("stop", _price(row.stop)),
             ("risk", f"{row.risk_pct:.1%}"), ("close", _price(row.close)),
             ("close to pivot", to_pivot)]
    if row.sector:
        facts.append(("sector", _esc(row.sector)))
    cells = "".join(f"<tr><td>{k}</td><td class='v'>{v}</td></tr>" for k, v in facts)
    title = row.nse_symbol or row.bse_code or row.isin
    link = _symbol_link(row.nse_symbol, row.bse_code, row.isin)
    return f"""<div class="card setup" data-isin="{_esc(row.isin)}">
{_img(row.chart_png, f"chart of {title}")}
<div class="facts"><h3><span class="rank">#{row.rank}</span>{link}{badges}</h3>
<div class="name">{_esc(row.name)}<br>{ids}</div>
<table>{cells}</table></div></div>"""


def _near_table(rows: Sequence[NearSetupRow]) -> str:
    if not rows:
        return "<p class='meta'>None today.</p>"
    charts = any(r.chart_png is not None for r in rows)
    head = "<tr><th>stock</th><th>name</th><th>close</th><th>why not a setup</th>"
    head += "<th>chart</th></tr>" if charts else "</tr>"
    body = []
    for r in rows:
        chart = f"<td>{_img(r.chart_png, f'chart of {r.nse_symbol or r.bse_code}')}</td>"
        link = _symbol_link(r.nse_symbol, r.bse_code, r.isin)
        body.append(f"<tr data-isin='{_esc(r.isin)}'><td>{link}</td><td>{_esc(r.name)}</td>"
                    f"<td>{_price(r.close)}</td><td>{_esc(r.why_not)}</td>"
                    f"{chart if charts else ''}</tr>")
    return f"<table class='near'>{head}{''.join(body)}</table>"


def render_html_report(
    *,
    prediction_date: str,
    setups: Sequence[SetupRow],
    near_setups: Sequence[NearSetupRow],
    previous_isins: Collection[str] | None,
    simulated: bool,
    model_version: str,
    thresholds: dict[str, float] | None = None,
    created_at: str | None = None,
    run_id: str | None = None,
    data_seed: str | None = None,
    near_total: int | None = None,
) -> str:
    """The page for one session. `setups` in rank order; `previous_isins` the setups of the
    previous run (None when there is none: nothing is marked new)."""
    new = {r.isin for r in setups if previous_isins is not None and r.isin not in previous_isins}
    banner = ""
    if simulated:
        seed = f" (seed {_esc(data_seed)})" if data_seed else ""
        banner = (f'<p class="banner" id="simulated">SIMULATED DATA{seed}: made-up stocks, NOT '
                  "real companies. The setups, charts and odds describe the simulator.</p>")
    if previous_isins is None:
        compared = "no previous run to compare with"
    else:
        compared = f"{len(new)} new since the previous run"
    levels = ""
    if thresholds:
        def cut(level: str) -> str:  # a cut-off above 1: too few validated setups reach it
            t = thresholds[level]
            return f"p &ge; {t:.2f}" if t <= 1 else "never (no validated precision reaches it)"

        levels = (f"Confidence: HIGH at {cut('HIGH')}, MEDIUM at {cut('MEDIUM')}, LOW below "
                  "(thresholds from the model's out-of-sample precision, kept in its "
                  "metadata).")
    more = ""
    if near_total is not None and near_total > len(near_setups):
        more = (f"; the {len(near_setups)} closest to their pivot of {near_total:,} (all are in "
                f"predictions_{_esc(prediction_date)}.csv)")
    cards = "\n".join(_setup_card(r, r.isin in new) for r in setups) or (
        "<p class='meta'>No setup today.</p>")
    stamp = " · ".join(x for x in (created_at and f"created {_esc(created_at)} UTC",
                                   run_id and f"run {_esc(run_id)}") if x)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>VCP setups {_esc(prediction_date)}</title><style>{CSS}</style></head>
<body>
<h1>VCP breakout setups · {_esc(prediction_date)}</h1>
{banner}
<p class="meta">{len(setups)} setups ranked by probability ({compared}) · model
vcp_breakout:{_esc(model_version)}{' · ' + stamp if stamp else ''}</p>
<h2 id="setups">Setups</h2>
{cards}
<h2 id="near">Near setups</h2>
<p class="meta">Stocks that passed the early rules (trend, base) and failed a later one{more}.</p>
{_near_table(near_setups)}
<div class="foot">
<p><b>The trade.</b> Buy-stop at the pivot, valid 10 sessions; filled at the higher of the open
and the pivot, not filled when a session opens more than 5% above the pivot. Stop: the higher
of the last contraction's low and the fill &minus; 8%; target: the fill + 20%. A gap exits at
the open; a session touching both counts as the stop; otherwise the trade is closed 60
sessions after the fill. <b>Probability</b> is the model's calibrated chance that this trade
wins. {levels}</p>
<p>Chart: daily candles, volume, the 50/150/200-session averages; each contraction T1, T2,
... shaded from its high to its low with its depth; pivot and stop lines. Stock links open
TradingView (NSE, or BSE for BSE-only stocks).</p>
</div>
</body></html>
"""
