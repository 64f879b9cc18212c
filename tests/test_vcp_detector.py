"""The VCP detector on constructed bases, each with the decision and footprint a trader expects."""

from __future__ import annotations

import numpy as np
import pytest

from features import compute_features_at
from features import vcp as V
from features.vcp import detect

RANGE = 0.003  # intraday half-range around the close


def path(points: list[tuple[int, float]]) -> np.ndarray:
    """Piecewise-linear closes through (length_of_leg, end_price) legs from points[0]."""
    out = [points[0][1]]
    for n, p in points[1:]:
        out.extend(np.linspace(out[-1], p, n + 1)[1:])
    return np.array(out)


def bars(close: np.ndarray, volume: np.ndarray):
    return close * (1 + RANGE), close * (1 - RANGE), close, volume


ADVANCE = [(0, 40.0), (150, 55.0), (100, 100.0)]  # a long stage-2 run; the base high at col 250


def base(legs: list[tuple[int, float]], dry_from: int | None = None, dry: float = 0.4):
    """The advance, then `legs`; volume 2e5, `dry` x that from column `dry_from` on."""
    close = path(ADVANCE + legs)
    volume = np.full(close.shape, 2e5)
    if dry_from is not None:
        volume[dry_from:] *= dry
    return close, volume


def textbook_3t():
    """Pullbacks of 25%, 12% and 5% from 100, 97 and 95, each quieter; now at 94."""
    legs = [(15, 75.0), (15, 97.0), (10, 97 * 0.88), (10, 95.0), (6, 95 * 0.95), (4, 94.0)]
    return base(legs, dry_from=250 + 50)


def run(close, volume):
    return detect(*bars(close, volume))


def test_textbook_3t_vcp_is_detected_with_its_footprint():
    close, volume = textbook_3t()
    day = run(close, volume)
    assert day.detected[0], day.why_not(0)
    setup = day.setup(0)
    # Depths are measured from the swing high's high to the swing low's low.
    shrink = (1 - RANGE) / (1 + RANGE)
    expected = [1 - 75 / 100 * shrink, 1 - 0.88 * shrink, 1 - 0.95 * shrink]
    assert setup["footprint"] == "12W 25/6 3T"
    assert [c["high_date"] for c in setup["contractions"]] == [250, 280, 300]
    assert [c["depth"] for c in setup["contractions"]] == pytest.approx(expected)
    assert setup["pivot"] == pytest.approx(95 * (1 + RANGE))
    assert setup["stop"] == pytest.approx(95 * 0.95 * (1 - RANGE))
    assert setup["risk_pct"] == pytest.approx(1 - setup["stop"] / setup["pivot"])
    assert setup["prior_advance"] > 0.8
    assert setup["volume_dryup"] < 0.6
    assert not setup["breakout"] and not setup["extended"]


def test_the_stop_never_risks_more_than_8pct_below_the_pivot():
    """A last contraction 11% deep: the trade's stop is 8% under the pivot, above its low."""
    legs = [(10, 75.0), (15, 97.0), (10, 97 * 0.80), (12, 95.0), (16, 95 * 0.89), (8, 94.0)]
    close, volume = base(legs, dry_from=250 + 47, dry=0.3)
    day = run(close, volume)
    assert day.detected[0], day.why_not(0)
    setup = day.setup(0)
    last_low = setup["contractions"][-1]["low"]
    assert last_low < setup["pivot"] * 0.92
    assert setup["stop"] == pytest.approx(setup["pivot"] * 0.92)
    assert setup["risk_pct"] == pytest.approx(0.08)


def test_textbook_4t_vcp_is_detected():
    legs = [(18, 70.0), (18, 98.0), (12, 98 * 0.85), (12, 96.0), (8, 96 * 0.92), (8, 95.0),
            (5, 95 * 0.96), (3, 94.5)]
    close, volume = base(legs, dry_from=250 + 75)
    day = run(close, volume)
    assert day.detected[0], day.why_not(0)
    assert day.footprint(0) == "17W 30/5 4T"


def test_a_cup_without_contractions_is_not_a_vcp():
    legs = [(30, 72.0), (30, 97.0)]  # one rounded decline and recovery, then nothing
    close, volume = base(legs, dry_from=250 + 40)
    day = run(close, volume)
    assert not day.detected[0]
    assert day.code[0] == V.TOO_FEW
    assert day.why_not(0).startswith("one contraction only")


def test_widening_contractions_are_not_a_vcp():
    legs = [(8, 94.0), (8, 99.0), (12, 99 * 0.88), (12, 98.0), (15, 98 * 0.80), (15, 96.0)]
    close, volume = base(legs, dry_from=250 + 40)
    day = run(close, volume)
    assert day.code[0] == V.NOT_TIGHTENING
    assert "do not tighten" in day.why_not(0)


def test_a_base_without_volume_dry_up_is_not_a_vcp():
    close, volume = textbook_3t()
    day = run(close, np.full(close.shape, 2e5))  # volume never dries up
    assert day.code[0] == V.NO_DRYUP
    assert "no volume dry-up" in day.why_not(0)


def test_a_base_after_a_decline_is_not_in_stage_2():
    decline = [(0, 100.0), (150, 60.0), (100, 45.0)]  # falling averages, no prior advance
    close = path(decline + [(15, 40.0), (15, 44.0), (10, 42.0), (10, 43.5), (6, 42.8),
                            (4, 43.0)])
    volume = np.full(close.shape, 2e5)
    volume[-20:] *= 0.4
    day = run(close, volume)
    assert day.code[0] in (V.NOT_STAGE2, V.NO_BASE)
    assert not day.detected[0]


def test_a_flat_stock_is_not_a_vcp_and_its_features_are_finite_or_nan():
    close = np.full(400, 20.0)
    volume = np.full(400, 1e4)
    day = run(close, volume)
    assert not day.detected[0]
    assert day.why_not(0) is not None
    o, h, lo, c, v = (x[None, :] for x in (close, close, close, close, volume))
    res = compute_features_at(o, h, lo, c, v)
    assert not np.isinf(res.values).any()


def test_each_contraction_high_date_is_a_session_with_that_high():
    """The date bug cannot return: the stated high price is the high on the stated date, in
    the features' one-date path (which crops the panel) as well."""
    close, volume = textbook_3t()
    pre = 220  # extra history, so the one-date path crops the panel
    close = np.concatenate([np.full(pre, 40.0), close])
    volume = np.concatenate([np.full(pre, 2e5), volume])
    high, low, c, v = bars(close, volume)
    dates = np.arange("2020-01-01", len(close), dtype="datetime64[D]")
    res = compute_features_at(c[None, :], high[None, :], low[None, :], c[None, :], v[None, :])
    assert res.is_setup(0), res.why_not(0)
    setup = res.vcp.setup(0, dates)
    for con in setup["contractions"]:
        col = int((np.datetime64(con["high_date"]) - dates[0]).astype(int))
        assert high[col] == pytest.approx(con["high"])
        col = int((np.datetime64(con["low_date"]) - dates[0]).astype(int))
        assert low[col] == pytest.approx(con["low"])


def test_breakout_and_extended_flags():
    close, volume = textbook_3t()
    pivot = 95 * (1 + RANGE)
    up = np.concatenate([close, [pivot * 1.02]])
    vol = np.concatenate([volume, [2e5 * 2.0]])
    day = run(up, vol)
    assert day.detected[0] and day.breakout[0]
    far = np.concatenate([close, [pivot * 1.06]])  # still within the base's flat top
    day = run(far, vol)
    assert not day.detected[0] and day.extended[0] and day.code[0] == V.EXTENDED
    assert day.why_not(0).startswith("extended")


def test_detection_reads_nothing_after_the_date():
    close, volume = textbook_3t()
    d = len(close) - 1
    noise = np.random.default_rng(0).uniform(0.5, 2.0, 60)
    longer = np.concatenate([close, close[-1] * noise])
    vol = np.concatenate([volume, np.full(60, 9e5)])
    a, b = run(close, volume), detect(*bars(longer, vol), d=d)
    assert a.detected[0] == b.detected[0] and a.footprint(0) == b.footprint(0)
    np.testing.assert_array_equal(a.hi_col, b.hi_col)
