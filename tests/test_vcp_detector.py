"""VCP detector on constructed price paths."""

from __future__ import annotations

import numpy as np
import pytest

from features import compute_features_at
from features.vcp import SWING_K, detect_vcp, detect_vcp_one

RANGE = 0.002  # intraday half-range around the close


def path(points: list[tuple[int, float]]) -> np.ndarray:
    """Piecewise-linear closes through (length_of_leg, end_price) legs from points[0]."""
    out = [points[0][1]]
    for n, p in points[1:]:
        out.extend(np.linspace(out[-1], p, n + 1)[1:])
    return np.array(out)


def bars(close: np.ndarray, volume: np.ndarray | None = None):
    high = close * (1 + RANGE)
    low = close * (1 - RANGE)
    vol = np.full(close.shape, 1e5) if volume is None else volume
    return close.copy(), high, low, close, vol


def textbook():
    """Advance 50 -> 100, then pullbacks of 25%, 12%, 5% from 100, 97, 95; now at 93."""
    close = path(
        [
            (0, 40.0),
            (100, 50.0),
            (60, 100.0),  # prior advance, peak at 160
            (15, 75.0),
            (15, 97.0),  # C1: 25%, swing high at 190
            (10, 97 * 0.88),
            (10, 95.0),  # C2: 12%, swing high at 210
            (8, 95 * 0.95),
            (5, 93.0),
        ]  # C3: 5%, in progress
    )
    vol = np.full(close.shape, 2e5)
    vol[160:190] = 1.5e5
    vol[190:210] = 1e5
    vol[210:] = 5e4  # drying up
    return close, vol


def test_textbook_vcp_detected():
    close, vol = textbook()
    o, h, lo, c, v = bars(close, vol)
    res = detect_vcp_one(h, lo, c, v)
    assert res["detected"]
    cs = res["contractions"]
    assert [s for s, _, _ in cs] == [160, 190, 210]
    assert cs[-1][1] == len(close) - 1
    depths = [d for _, _, d in cs]
    assert depths == pytest.approx([0.25, 0.12, 0.05], abs=0.01)
    assert res["pivot"] == pytest.approx(95 * (1 + RANGE))
    assert res["base_length"] == len(close) - 1 - 160
    assert res["higher_lows"]
    assert res["volume_dryup"] < 0.5
    assert res["prior_runup"] == pytest.approx(100.2 / (lo[100:160].min()) - 1)


def test_textbook_in_feature_vector():
    close, vol = textbook()
    close = np.concatenate([np.linspace(30, 40, 250), close])  # enough history to score
    vol = np.concatenate([np.full(250, 2e5), vol])
    o, h, lo, c, v = (x[None, :] for x in bars(close, vol))
    res = compute_features_at(o, h, lo, c, v)
    assert res.reasons == [None]
    f = res.as_dict(0)
    assert f["contraction_count"] == 3
    assert f["first_depth"] == pytest.approx(0.25, abs=0.01)
    assert f["last_depth"] == pytest.approx(0.05, abs=0.01)
    assert f["dist_to_pivot"] == pytest.approx(93 / 95.19 - 1, abs=1e-3)
    assert res.pattern(0)["detected"]


def test_not_yet_confirmed_swing_is_ignored():
    """A swing high needs SWING_K later sessions: until then the contraction continues."""
    close, vol = textbook()
    o, h, lo, c, v = bars(close, vol)
    d = 210 + SWING_K - 1  # the C2 high at 210 is not confirmed yet
    res = detect_vcp(*(x[None, :] for x in (h, lo, c, v)), d=d).pattern(0)
    assert [s for s, _, _ in res["contractions"]] == [160, 190]
    assert res["contractions"][-1][1] == d


def test_steady_uptrend_not_detected():
    close = 100 * 1.002 ** np.arange(300)
    o, h, lo, c, v = bars(close)
    res = detect_vcp_one(h, lo, c, v)
    assert not res["detected"] and not res["has_base"]


def test_widening_range_not_detected():
    close = path(
        [
            (0, 80.0),
            (60, 100.0),
            (10, 95.0),
            (10, 99.9),
            (12, 90.0),
            (12, 99.8),
            (15, 80.0),
            (15, 99.7),
            (10, 97.0),
        ]
    )
    o, h, lo, c, v = bars(close)
    res = detect_vcp_one(h, lo, c, v)
    depths = [d for _, _, d in res["contractions"]]
    assert len(depths) >= 3 and depths[1] > depths[0]
    assert not res["detected"]


def test_extended_above_pivot_not_detected():
    close, vol = textbook()
    close = np.concatenate([close[:-5], np.linspace(close[-6], 95 * 1.15, 6)[1:]])
    o, h, lo, c, v = bars(close, vol)
    assert not detect_vcp_one(h, lo, c, v)["detected"]


def test_nan_gaps_and_empty_rows_do_not_crash():
    close, vol = textbook()
    rows = np.vstack([close, close, np.full(close.shape, np.nan), close[::-1]])
    rows[1, 170:175] = np.nan
    rows[1, 200] = np.nan
    o, h, lo, c, v = bars(rows, np.tile(vol, (4, 1)))
    win = detect_vcp(h, lo, c, v)
    assert win.detected[0] and not win.detected[2] and not win.has_base[2]
    assert np.isnan(win.first_depth[2])
    p1 = win.pattern(1)
    assert all(np.isfinite(d) for _, _, d in p1["contractions"])
    assert win.pattern(2)["contractions"] == []
    short = detect_vcp(h[:, :8], lo[:, :8], c[:, :8], v[:, :8])
    assert not short.detected.any()
