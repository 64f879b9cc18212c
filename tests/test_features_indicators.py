"""Indicators against pandas rolling and hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import indicators as ind


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(3)
    x = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (4, 300)), axis=1))
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def by_pandas(x, fn):
    return np.vstack([fn(pd.Series(row)).to_numpy() for row in x])


def test_min_count_rule():
    assert ind.min_count(50) == 40 and ind.min_count(200) == 160 and ind.min_count(3) == 3


def test_sma_hand_and_pandas(series):
    x = np.array([[1.0, 2, 3, 4, np.nan, 6, 7, 8, 9, 10]])
    got = ind.sma(x, 3)
    want = [np.nan, np.nan, 2, 3, np.nan, np.nan, np.nan, 7, 8, 9]
    np.testing.assert_allclose(got[0], want, equal_nan=True)
    for w in (5, 50, 200):
        ref = by_pandas(series, lambda s, w=w: s.rolling(w, min_periods=ind.min_count(w)).mean())
        np.testing.assert_allclose(ind.sma(series, w), ref, rtol=1e-12, equal_nan=True)


def test_window_mean_at_matches_sma(series):
    cols = np.array([-5, 0, 17, 250, 299])
    full = ind.sma(series, 50)
    got = ind.window_mean_at(series, 50, cols)
    assert np.isnan(got[:, 0]).all()
    np.testing.assert_allclose(got[:, 1:], full[:, cols[1:]], equal_nan=True)


def test_rolling_max_min(series):
    x = np.array([[3.0, 1, np.nan, 5, 2, np.nan, np.nan, np.nan, 0]])
    np.testing.assert_array_equal(ind.rolling_max(x, 3)[0], [3, 3, 3, 5, 5, 5, 2, np.nan, 0])
    np.testing.assert_array_equal(ind.rolling_min(x, 2)[0], [3, 1, 1, 5, 2, 2, np.nan, np.nan, 0])
    for w in (1, 5, 252):
        mx = by_pandas(series, lambda s, w=w: s.rolling(w, min_periods=1).max())
        mn = by_pandas(series, lambda s, w=w: s.rolling(w, min_periods=1).min())
        np.testing.assert_array_equal(ind.rolling_max(series, w), mx)
        np.testing.assert_array_equal(ind.rolling_min(series, w), mn)
        cols = np.array([0, 100, 299])
        np.testing.assert_array_equal(ind.window_max_at(series, w, cols), mx[:, cols])
        np.testing.assert_array_equal(ind.window_min_at(series, w, cols), mn[:, cols])


def test_true_range_and_atr_by_hand():
    h = np.array([[10.0, 11, 12, 11, 13]])
    lo = np.array([[9.0, 10, 10, 9, 11]])
    c = np.array([[9.5, 10.5, 11.5, 9.5, 12.5]])
    tr = ind.true_range(h, lo, ind.lag(c, 1))
    np.testing.assert_allclose(tr[0], [1, 1.5, 2, 2.5, 3.5])
    np.testing.assert_allclose(
        ind.atr_simple(h, lo, c, n=3)[0], [np.nan, np.nan, 1.5, 2, 8 / 3], equal_nan=True
    )


def test_bb_width_and_pctile(series):
    def width(s):
        roll = s.rolling(20, min_periods=16)
        return 4 * roll.std(ddof=0) / roll.mean()

    ref = by_pandas(series, width)
    bbw = ind.bb_width(series)
    np.testing.assert_allclose(bbw, ref, rtol=1e-9, equal_nan=True)

    def pct(win):
        v = win[~np.isnan(win)]
        if np.isnan(win[-1]) or len(v) < ind.min_count(30):
            return np.nan
        return 100.0 * (v <= win[-1]).sum() / len(v)

    cols = np.arange(299)
    ref = by_pandas(bbw, lambda s: s.rolling(30, min_periods=1).apply(pct, raw=True))
    np.testing.assert_allclose(ind.rolling_pctile_at(bbw, 30, cols), ref[:, cols], equal_nan=True)
    flat = np.full((1, 60), 50.0)  # circuit-locked stock: width exactly 0 and stable ranks
    assert (ind.bb_width(flat)[0, 19:] == 0).all()


def test_rs_rating_ranks():
    wret = np.array([[0.10], [0.20], [0.30], [np.nan], [0.20]])
    np.testing.assert_array_equal(ind.rs_rating(wret)[:, 0], [1, 50, 99, np.nan, 50])
    rng = np.random.default_rng(0)
    big = rng.normal(size=(1000, 3))
    r = ind.rs_rating(big)
    assert r.min() == 1 and r.max() == 99
    assert (np.diff(r[np.argsort(big[:, 0]), 0]) >= 0).all()  # monotone in the return


def test_weighted_return_and_rs_line():
    t = 300
    close = np.vstack([np.linspace(100, 200, t), np.full(t, 50.0)])
    wr = ind.weighted_return(close)
    d = t - 1
    want = sum(w * (close[0, d] / close[0, d - k] - 1) for k, w in ind.RS_WEIGHTS)
    assert wr[0, d] == pytest.approx(want) and wr[1, d] == 0.0
    # 252 sessions: r252 falls back to the first close (column 0); the others are as usual.
    want = sum(w * (close[0, 251] / close[0, max(251 - k, 0)] - 1) for k, w in ind.RS_WEIGHTS)
    assert wr[0, 251] == pytest.approx(want)
    assert np.isnan(wr[:, ind.RS_MIN_AGE - 1]).all()  # younger than a quarter: no rating
    # Index: mean daily return of the stocks that traded both days.
    c = np.array([[100.0, 110, 121], [100.0, np.nan, 100]])
    lr = ind.universe_log_returns(c)
    np.testing.assert_allclose(lr, [0, np.log(1.1), np.log(1.1)])
    np.testing.assert_allclose(ind.universe_index(c), [1, 1.1, 1.21])
    np.testing.assert_allclose(ind.rs_line(c)[0], [100, 100, 100])
    chg = ind.rs_line_log_change_at(c, lr, np.array([2]), k=2)
    np.testing.assert_allclose(chg[:, 0], [0.0, -np.log(1.21)], atol=1e-12)


def test_ffill_limit_and_last_valid():
    x = np.array([[1.0, np.nan, np.nan, np.nan, 5, np.nan]])
    np.testing.assert_array_equal(ind.ffill(x, 2)[0], [1, 1, 1, np.nan, 5, 5])
    np.testing.assert_array_equal(ind.last_valid_col(x)[0], [0, 0, 0, 0, 4, 4])


def test_rs_rating_is_defined_for_short_and_illiquid_histories():
    """Every stock with 200 sessions gets a rating: r_k reaches back to the stock's first close
    when it listed less than k sessions ago, and to its last close before t-k when it did not
    trade on t-k (at most RS_REF_GAP sessions earlier)."""
    t = 400
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (5, t)), axis=1))
    close[0, : t - 200] = np.nan  # listed 200 sessions ago
    close[1, : t - 251] = np.nan  # 251 sessions
    close[2, t - 80 : t - 50] = np.nan  # no trade around t-63 for 30 sessions
    close[3, : t - 40] = np.nan  # 40 sessions: too young to rate
    d = np.array([t - 1])
    wr = ind.weighted_return_at(close, d)[:, 0]
    first = t - 200
    want0 = sum(w * (close[0, -1] / close[0, max(t - 1 - k, first)] - 1) for k, w in
                ind.RS_WEIGHTS)
    assert wr[0] == pytest.approx(want0)
    assert np.isfinite(wr[:3]).all() and np.isnan(wr[3]) and np.isfinite(wr[4])
    # t-63 falls in the gap: the last close before it (t-81, 18 sessions earlier) is used.
    r63 = close[2, -1] / close[2, t - 81] - 1
    rest = sum(w * (close[2, -1] / close[2, t - 1 - k] - 1) for k, w in ind.RS_WEIGHTS[1:])
    assert wr[2] == pytest.approx(0.4 * r63 + rest)
    rs = ind.rs_rating(wr[:, None])[:, 0]
    assert np.isfinite(rs[[0, 1, 2, 4]]).all() and np.isnan(rs[3])
    # Finite memory: a longer history before the window changes nothing.
    longer = np.hstack([np.full((5, 300), 80.0), close])
    longer[:, :300][np.isnan(close[:, :1]).ravel()] = np.nan
    np.testing.assert_array_equal(ind.weighted_return_at(longer, d + 300)[:, 0], wr)


def test_window_mean_gives_the_sma_at_the_cells_asked_for():
    rng = np.random.default_rng(3)
    x = rng.normal(100, 5, (6, 40))
    x[rng.random(x.shape) < 0.15] = np.nan
    full = ind.sma(x, 10)
    lazy = ind.WindowMean(x, 10)
    rows = np.array([True, False, True, True, False, True])
    cols = np.array([0, 9, 25, 39])
    assert np.array_equal(lazy[:, 30], full[:, 30], equal_nan=True)
    assert np.array_equal(lazy[rows, cols], full[rows, cols], equal_nan=True)
    assert np.isnan(lazy[:, 3]).all()  # fewer valid sessions than the 80% rule asks
