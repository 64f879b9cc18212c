"""Feature vector: contract, no look-ahead, one-date == all-dates, scoreability."""

from __future__ import annotations

import numpy as np
import pytest

from features import FEATURE_DOCS, FEATURES, compute_features_all, compute_features_at

FIELDS = ("open", "high", "low", "close", "volume")


def random_panel(n: int = 60, t: int = 500, seed: int = 0, gap: float = 0.03):
    """Random-walk OHLCV dict with NaN gaps, a late listing and a delisted (stale) stock."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, (n, t)), axis=1))
    open_ = close * np.exp(rng.normal(0.0, 0.005, (n, t)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.01, (n, t))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.01, (n, t))))
    volume = rng.lognormal(10.0, 1.0, (n, t))
    missing = rng.random((n, t)) < gap
    missing[1, : t // 2] = True  # late listing
    missing[2, t - 30 :] = True  # stopped trading
    missing[3, :] = True  # never traded
    missing[4, ::3] = True  # illiquid
    out = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    for a in out.values():
        a[missing] = np.nan
    return out


DATES = (260, 333, 399, 450, 499)


@pytest.fixture(scope="module")
def panel():
    return random_panel()


@pytest.fixture(scope="module")
def all_dates(panel):
    return compute_features_all(*(panel[f] for f in FIELDS))


def cut(panel, d, start=0):
    return [panel[f][:, start : d + 1] for f in FIELDS]


def assert_same(a, b, rtol=0.0):
    # atol guards values that are ~0 (e.g. close == SMA); cumsum error is ~1e-15 relative.
    np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12 if rtol else 0.0, equal_nan=True)


def test_feature_list_contract():
    assert len(FEATURES) == 25 == len(set(FEATURES))
    assert list(FEATURE_DOCS) == FEATURES
    assert all(isinstance(v, str) and v for v in FEATURE_DOCS.values())


def test_all_dates_shapes(panel, all_dates):
    n, t = panel["close"].shape
    assert all_dates.values.shape == (n, t, 25)
    assert all_dates.values.dtype == np.float64
    assert all_dates.scoreable.shape == (n, t)
    assert np.array_equal(all_dates.columns, np.arange(t))
    # Some rows are scoreable late in the panel and their core features are defined.
    ok = all_dates.scoreable[:, -1].copy()
    assert ok.sum() > 40
    ok[4] = False  # illiquid: scoreable, but trades on < 80% of sessions so SMAs are NaN
    assert np.isnan(all_dates.values[4, -1, FEATURES.index("close_sma200")])
    assert np.isfinite(all_dates.values[ok, -1, FEATURES.index("close_sma200")]).all()
    assert np.isnan(all_dates.values[~all_dates.scoreable]).all()


@pytest.mark.parametrize("d", DATES)
def test_no_look_ahead(panel, all_dates, d):
    """Features at D ignore bars after D, whichever path computes them.

    Same path, same start: bit-identical. Across paths only cumsum rounding differs (~1e-15).
    """
    one = compute_features_at(*cut(panel, d))
    assert_same(one.values, all_dates.values[:, d], rtol=1e-9)
    rng = np.random.default_rng(d)
    noisy = {f: panel[f].copy() for f in FIELDS}
    t = panel["close"].shape[1]
    for f in FIELDS:
        noisy[f][:, d + 1 :] = rng.lognormal(4.0, 1.0, (panel[f].shape[0], t - d - 1))
    noisy["close"][:, d + 1 :: 7] = np.nan
    other = compute_features_all(*(noisy[f] for f in FIELDS))
    assert_same(other.values[:, d], all_dates.values[:, d])
    assert np.array_equal(other.scoreable[:, d], all_dates.scoreable[:, d])
    assert_same(compute_features_at(*cut(noisy, d)).values, one.values)


@pytest.mark.parametrize("d", DATES)
def test_one_date_matches_all_dates(panel, all_dates, d):
    """A 400-session panel ending at D gives the all-history features at D."""
    one = compute_features_at(*cut(panel, d, start=max(0, d - 399)))
    assert_same(one.values, all_dates.values[:, d], rtol=1e-9)
    assert np.array_equal(one.scoreable, all_dates.scoreable[:, d])


def test_dates_mask_and_dtype(panel, all_dates):
    t = panel["close"].shape[1]
    mask = np.zeros(t, dtype=bool)
    mask[[300, 420, 499]] = True
    sub = compute_features_all(*(panel[f] for f in FIELDS), dates_mask=mask, dtype=np.float32)
    assert sub.values.shape == (60, 3, 25) and sub.values.dtype == np.float32
    assert list(sub.columns) == [300, 420, 499]
    np.testing.assert_allclose(
        sub.values, all_dates.values[:, [300, 420, 499]].astype(np.float32), equal_nan=True
    )
    idx = compute_features_all(*(panel[f] for f in FIELDS), dates_mask=[499])
    assert_same(idx.values[:, 0], all_dates.values[:, 499], rtol=1e-9)
    assert sub.vcp_detected.shape == (60, 3)
    assert not (sub.vcp_detected & ~sub.scoreable).any()


def test_reasons_and_pattern(panel):
    res = compute_features_at(*cut(panel, 499))
    assert res.values.shape == (60, 25)
    assert res.reasons[3] == "no_data"
    last = int(np.flatnonzero(~np.isnan(panel["close"][2]))[-1])
    assert res.reasons[2] == f"stale: last trade {499 - last} sessions before the date"
    assert res.reasons[0] is None and res.scoreable[0]
    assert not res.scoreable[3] and np.isnan(res.values[3]).all()
    short = compute_features_at(*cut(panel, 399))
    assert short.reasons[1] is not None
    assert short.reasons[1].startswith("insufficient_history: ")
    assert short.reasons[1].endswith("sessions, 200 needed")
    checks = res.trend_template(0)
    assert len(checks) == 8
    assert res.values[0, FEATURES.index("trend_template_count")] == sum(checks.values())
    # Every stock is a setup or says why not; unscoreable stocks give their scoreability reason.
    for i in range(60):
        assert res.is_setup(i) == (res.why_not(i) is None)
    assert res.why_not(3) == "no_data"


def test_bad_shapes_raise():
    a = np.ones((3, 10))
    with pytest.raises(ValueError, match="shape"):
        compute_features_at(a, a, a, a, np.ones((3, 9)))


def test_block_size_does_not_change_results(panel, all_dates):
    small = compute_features_all(*(panel[f] for f in FIELDS), block_size=7)
    assert_same(small.values, all_dates.values)
    assert np.array_equal(small.vcp_detected, all_dates.vcp_detected)
