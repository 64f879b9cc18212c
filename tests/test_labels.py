"""Triple-barrier labels on hand-made paths (entry = next open = 100)."""

from __future__ import annotations

import numpy as np
import pytest

from features import LabelParams, triple_barrier_labels

H = 5  # short horizon for hand-made paths


def make(highs, lows, closes=None):
    """Day 0 = signal date, day 1 opens at 100, then the given highs/lows for days 1..."""
    n = len(highs) + 1
    o = np.full(n, 100.0)
    h = np.array([100.0, *highs])
    lo = np.array([100.0, *lows])
    c = np.array([100.0, *(closes if closes is not None else [100.0] * len(highs))])
    return o, h, lo, c


def label0(highs, lows, closes=None, **kw):
    res = triple_barrier_labels(*make(highs, lows, closes), horizon=H, **kw)
    return res, (lambda a: a[0, 0])


def test_target_first():
    res, at = label0([105, 110, 121, 100, 100], [99, 99, 99, 91, 91])
    assert at(res.label) == 1.0
    assert at(res.exit_index) == 3
    assert at(res.r_multiple) == pytest.approx(0.20 / 0.08)
    assert at(res.mfe) == pytest.approx(0.21) and at(res.mae) == pytest.approx(-0.01)


def test_stop_first():
    res, at = label0([105, 101, 125, 100, 100], [99, 91.9, 99, 99, 99])
    assert at(res.label) == 0.0
    assert at(res.exit_index) == 2
    assert at(res.r_multiple) == -1.0
    assert at(res.mfe) == pytest.approx(0.05)  # the later 125 is after the exit


def test_both_same_day_is_failure():
    res, at = label0([105, 120.5, 101, 100, 100], [99, 91, 99, 99, 99])
    assert at(res.label) == 0.0 and at(res.r_multiple) == -1.0 and at(res.exit_index) == 2


def test_neither_is_failure_with_close_at_horizon():
    res, at = label0(
        [105, 110, 115, 110, 108], [95, 96, 97, 95, 94], closes=[101, 104, 110, 106, 105]
    )
    assert at(res.label) == 0.0
    assert at(res.exit_index) == H
    assert at(res.r_multiple) == pytest.approx(0.05 / 0.08)
    assert at(res.mfe) == pytest.approx(0.15) and at(res.mae) == pytest.approx(-0.06)


def test_incomplete_horizon_and_missing_entry_are_nan():
    o, h, lo, c = make([105] * 7, [99] * 7)
    res = triple_barrier_labels(o, h, lo, c, horizon=H)
    t = len(c)
    assert np.isfinite(res.label[0, : t - H]).all()
    assert np.isnan(res.label[0, t - H :]).all()
    assert (res.exit_index[0, t - H :] == -1).all()
    o2 = o.copy()
    o2[1] = np.nan
    assert np.isnan(triple_barrier_labels(o2, h, lo, c, horizon=H).label[0, 0])


def test_gaps_skip_sessions_and_params():
    o, h, lo, c = make([105, np.nan, 121, 100, 100], [99, np.nan, 99, 99, 99])
    res = triple_barrier_labels(o, h, lo, c, params=LabelParams(horizon=H))
    assert res.label[0, 0] == 1.0 and res.exit_index[0, 0] == 3
    assert LabelParams().to_dict() == {"target": 0.20, "stop": 0.08, "horizon": 60}
    assert res.params.horizon == H


def test_vectorized_matches_loop():
    rng = np.random.default_rng(5)
    n, t = 6, 120
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, (n, t)), axis=1))
    o = c * np.exp(rng.normal(0, 0.01, (n, t)))
    h = np.maximum(o, c) * 1.01
    lo = np.minimum(o, c) * 0.99
    res = triple_barrier_labels(o, h, lo, c, horizon=20)
    for i in range(n):
        for d in range(t - 20):
            e = o[i, d + 1]
            lab = 0.0
            for j in range(d + 1, d + 21):
                if lo[i, j] <= e * 0.92:
                    break
                if h[i, j] >= e * 1.2:
                    lab = 1.0
                    break
            assert res.label[i, d] == lab
