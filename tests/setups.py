"""Constructed price histories with a known VCP and its setup dict (the detector's contract:
`VcpDay.setup(i, dates)`), for the chart, HTML report and browser tests and the benchmark.

`synthetic_vcp(seed)` draws a quiet year, a prior advance, a base of contractions, each about
half as deep as the one before with volume drying up, and (optionally) a breakout on the last
session; the setup dict is measured from the bars drawn, so a chart's shaded boxes and labels
must sit on the candles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from market.simulator import trading_days


@dataclass
class Bars:
    dates: np.ndarray  # datetime64[D]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.dates, self.open, self.high, self.low, self.close, self.volume


def _as_date(d: np.datetime64) -> date:
    return d.astype("datetime64[D]").astype(date)


def synthetic_vcp(seed: int = 0, depths: tuple[float, ...] = (0.26, 0.13, 0.06),
                  breakout: bool = True, price: float = 180.0,
                  end: date = date(2026, 10, 30)) -> tuple[Bars, dict[str, Any]]:
    """400 sessions ending at `end` with a VCP of len(depths) contractions (depth of each,
    high to low) and its setup dict."""
    rng = np.random.default_rng(seed)
    days = trading_days(date(2024, 1, 1), end)[-400:]
    last = len(days) - 1
    legs = [(10 + 3 * (len(depths) - k), 9 + 2 * (len(depths) - k)) for k in range(len(depths))]
    h0 = last - 6 - sum(down + up for down, up in legs)  # the base high
    if h0 < 260:
        raise ValueError("too many contractions for 400 sessions")
    # Waypoints (session, price relative to the base high): quiet, advance, then contractions,
    # then the last contraction's right side drifts sideways to the last session.
    points = [(0, 0.55), (h0 - 110, 0.60), (h0 - 55, 0.62), (h0, 1.0)]
    t, level = h0, 1.0
    for k, ((down, up), dp) in enumerate(zip(legs, depths, strict=True)):
        t += down
        points.append((t, level * (1 - dp)))
        t += up
        level = level * (0.985 if k < len(depths) - 1 else 0.99)
        points.append((t, level))
    points.append((last - 1, level * 0.995))
    points.append((last, level * (1.035 if breakout else 0.99)))
    xs, ys = zip(*points, strict=True)
    path = np.interp(np.arange(len(days)), xs, np.log(ys))
    close = price * np.exp(path + rng.normal(0, 0.004, len(days)))
    open_ = np.r_[close[0], close[:-1]] * (1 + rng.normal(0, 0.003, len(days)))
    wick = np.abs(rng.normal(0, 0.005, (2, len(days))))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    volume = rng.lognormal(np.log(400_000), 0.25, len(days))

    # Measure the setup from the bars: each contraction's high and low near its waypoints.
    contractions = []
    base_pts = points[3:3 + 2 * len(depths)]
    highs, lows = base_pts[0::2], base_pts[1::2]
    for (th, _), (tl, _) in zip(highs, lows, strict=True):
        hi = th - 3 + int(np.argmax(high[th - 3:th + 4]))
        lo_ = tl - 3 + int(np.argmin(low[tl - 3:tl + 4]))
        volume[hi:lo_ + 1] *= 0.85 - 0.15 * len(contractions)  # volume dries up
        contractions.append({"high_date": _as_date(days[hi]), "high": float(high[hi]),
                             "low_date": _as_date(days[lo_]), "low": float(low[lo_]),
                             "depth": float((high[hi] - low[lo_]) / high[hi])})
    last_hi = int(np.searchsorted(days, np.datetime64(contractions[-1]["high_date"])))
    volume[last_hi:last] *= 0.8
    # The pivot: the highest high since the last contraction began, before the last session.
    pivot = float(high[last_hi:last].max())
    if breakout:
        volume[last] *= 2.8
        close[last] = max(close[last], pivot * 1.02)
        high[last] = max(high[last], close[last] * 1.004)
    avg50 = volume[last - 50:last].mean()
    for c in contractions:
        a = int(np.searchsorted(days, np.datetime64(c["high_date"])))
        b = int(np.searchsorted(days, np.datetime64(c["low_date"])))
        c["volume_ratio"] = float(volume[a:b + 1].mean() / avg50)
    stop = max(contractions[-1]["low"], pivot * 0.92)
    base_start = int(np.searchsorted(days, np.datetime64(contractions[0]["high_date"])))
    sessions = last - base_start + 1
    advance_from = float(low[base_start - 60:base_start].min())
    setup = {
        "footprint": (f"{round(sessions / 5)}W {round(contractions[0]['depth'] * 100)}/"
                      f"{round(contractions[-1]['depth'] * 100)} {len(contractions)}T"),
        "base_start": _as_date(days[base_start]),
        "base_sessions": sessions,
        "base_high": float(high[base_start]),
        "prior_advance": float(high[base_start] / advance_from - 1),
        "contractions": contractions,
        "pivot": pivot,
        "stop": float(stop),
        "risk_pct": float((pivot - stop) / pivot),
        "volume_dryup": float(volume[last_hi:last].mean() / avg50),
        "breakout": breakout,
        "extended": False,
    }
    return Bars(days, open_, high, low, close, volume), setup


SYMBOLS = ["RAUTGO", "KARIVEN", "VIKTEK", "M&M", "BAJAJ-AUTO", None, "SHAMIRA", "ZENLO",
           "PRATISU", "DHANIYAN", "KORSAVE", "UTLIGO"]


def report_rows(n_setups: int = 12, n_near: int = 3, simulated: bool = True):
    """Setup and near-setup rows of a daily HTML report, each with a thumbnail of a
    constructed base (every third stock BSE-only)."""
    from batch.html_report import NearSetupRow, SetupRow
    from inference.charts import render_thumbnail

    setups, near = [], []
    for i in range(n_setups + n_near):
        depths = ((0.30, 0.15, 0.07), (0.24, 0.11, 0.05, 0.03), (0.20, 0.08))[i % 3]
        bars, setup = synthetic_vcp(seed=10 + i, depths=depths, breakout=i % 4 == 0,
                                    price=60.0 + 37 * i)
        symbol = SYMBOLS[i % len(SYMBOLS)] if i % 3 else None
        code, isin = f"7{i:05d}", f"INEZ{i:07d}0"
        name = f"{(symbol or 'Bseonly').title()} Industries (simulated)"
        title = f"{symbol or code}  {name}"
        if i < n_setups:
            png = render_thumbnail(*bars.arrays(), setup, None, title, simulated)
            setups.append(SetupRow(
                rank=i + 1, isin=isin, nse_symbol=symbol, bse_code=code, name=name,
                footprint=setup["footprint"], pivot=setup["pivot"], stop=setup["stop"],
                risk_pct=setup["risk_pct"], probability=0.71 - 0.03 * i,
                confidence=("HIGH", "MEDIUM", "LOW")[min(i // 4, 2)],
                close=float(bars.close[-1]), sector="Industrials", breakout=setup["breakout"],
                chart_png=png))
        else:
            why = "last contraction 14% deep, more than 12% allowed"
            png = render_thumbnail(*bars.arrays(), None, why, title, simulated)
            near.append(NearSetupRow(isin=isin, nse_symbol=symbol, bse_code=code, name=name,
                                     why_not=why, close=float(bars.close[-1]), chart_png=png))
    return setups, near
