"""Property: features are finite or NaN for any panel, and training and scoring accept them.

Hypothesis draws panels of stocks of many kinds at once: flat (circuit-locked) prices,
zero-volume days, long gaps, a single tick, prices of a few paise, huge overnight jumps,
empty rows. 200 examples, derandomized (the same examples on every run).
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import FEATURES, compute_features_all, compute_features_at
from inference.scoring import ScoreRow

KINDS = ("normal", "flat", "zero_volume", "gappy", "single_tick", "tiny", "jumpy", "stepped",
         "empty", "sparse", "illiquid")
FLOAT32_MAX = float(np.finfo(np.float32).max)


@st.composite
def panels(draw):
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=2, max_size=12))
    t = draw(st.integers(205, 420))
    level = draw(st.sampled_from([0.01, 0.05, 0.37, 12.0, 2_500.0, 90_000.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = len(kinds)
    close = level * np.exp(np.cumsum(rng.normal(0, 0.03, (n, t)), axis=1))
    volume = rng.lognormal(8, 2, (n, t)).round()
    for i, kind in enumerate(kinds):
        if kind == "flat":
            close[i] = level
        elif kind == "zero_volume":
            volume[i, rng.random(t) < 0.7] = 0.0
        elif kind == "gappy":
            start = rng.integers(0, t - 60)
            close[i, start:start + rng.integers(20, 60)] = np.nan
        elif kind == "single_tick":
            keep = rng.integers(0, t)
            close[i, np.arange(t) != keep] = np.nan
        elif kind == "tiny":
            close[i] = np.maximum(np.round(close[i] / level * 0.02, 2), 0.01)  # a few paise
        elif kind == "jumpy":
            jumps = rng.random(t) < 0.02
            close[i] *= np.cumprod(np.where(jumps, rng.choice([1e-3, 1e3, 10.0, 0.1], t), 1.0))
        elif kind == "stepped":
            close[i] = np.repeat(close[i, ::40], 40)[:t]  # long flat runs, then a step
        elif kind == "empty":
            close[i] = np.nan
        elif kind == "sparse":
            close[i, rng.random(t) < 0.5] = np.nan
        elif kind == "illiquid":  # no trade on many days, a tick or two away when it trades
            ticks = rng.choice([-1] + [0] * 10 + [1], t)  # mostly the same price as before
            close[i] = np.round(level * (1 + 0.03 * np.cumsum(ticks)), 2)
            close[i] = np.maximum(close[i], 0.01)
            close[i, rng.random(t) < rng.uniform(0.1, 0.3)] = np.nan
    # Single-price bars (open = high = low = close), as illiquid stocks print them.
    one_price = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    spread = np.where(one_price[:, None], 0.0, np.abs(rng.normal(0, 0.01, (n, t))))
    high = close * (1 + spread)
    low = close * (1 - spread)
    opn = np.clip(close * (1 + rng.normal(0, 0.005, (n, t))), low, high)
    volume[np.isnan(close)] = np.nan
    return opn, high, low, close, volume


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(panels())
def test_features_are_never_infinite_and_models_accept_them(panel):
    opn, high, low, close, volume = panel
    at = compute_features_at(opn, high, low, close, volume)
    cols = np.arange(close.shape[1] - 3, close.shape[1])
    every = compute_features_all(opn, high, low, close, volume, dates_mask=cols,
                                 dtype=np.float32)
    rows = np.vstack([at.values, every.values.reshape(-1, len(FEATURES)).astype(np.float64)])
    assert not np.isinf(rows).any()
    assert np.nanmax(np.abs(rows), initial=0.0) <= FLOAT32_MAX
    # Training accepts every row (xgboost refuses inf), and the model scores them.
    labels = np.arange(len(rows)) % 2
    dm = xgb.DMatrix(rows, label=labels, missing=np.nan, feature_names=list(FEATURES))
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, dm,
                        num_boost_round=2)
    p = booster.predict(xgb.DMatrix(rows, missing=np.nan, feature_names=list(FEATURES)))
    assert np.isfinite(p).all()
    # The API's scoring route validates every row the service itself would send.
    for r in at.values:
        ScoreRow(features=[None if np.isnan(v) else float(v) for v in r])
