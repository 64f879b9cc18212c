"""The breakout trade (features/labels.py) on hand-made bars: pivot 100, last contraction's low
95, so the stop is max(95, fill x 0.92) and the target fill x 1.20."""

from __future__ import annotations

import numpy as np
import pytest

from features.labels import (
    LOSS,
    NO_FILL,
    TIMEOUT,
    UNKNOWN,
    WIN,
    TradeParams,
    breakout_trades,
    setup_trades,
)

PIVOT, LOW = 100.0, 95.0
SHORT = TradeParams(entry_window=3, hold=5)  # short windows for hand-made bars


def trade(bars, params=SHORT, pivot=PIVOT, low=LOW, sessions=None):
    """bars: (open, high, low, close) per session after D; None = no trade that session."""
    cols = [[np.nan if b is None else b[k] for b in bars] for k in range(4)]
    res = breakout_trades(*cols, pivot=np.array([pivot]), stop_floor=np.array([low]),
                          params=params, sessions=None if sessions is None else
                          np.array([sessions]))
    return res, (lambda a: a[0])


QUIET = (98.0, 99.0, 97.0, 98.5)  # below the pivot, above the stop


def test_fill_at_the_pivot_then_the_target():
    res, at = trade([QUIET, (99.0, 101.0, 98.5, 100.5), (101.0, 110.0, 100.0, 109.0),
                     (109.0, 121.0, 108.0, 119.0)])
    assert at(res.outcome) == WIN and at(res.label) == 1.0
    assert at(res.fill_col) == 1 and at(res.fill) == pytest.approx(100.0)
    assert at(res.stop) == pytest.approx(95.0)  # the contraction low is above fill x 0.92
    assert at(res.exit_col) == 3 and at(res.exit_price) == pytest.approx(120.0)
    assert at(res.ret) == pytest.approx(0.20)
    assert at(res.r_multiple) == pytest.approx(0.20 / 0.05)


def test_gap_above_the_pivot_fills_at_the_open():
    above = (105.0, 106.0, 104.0, 105.0)
    res, at = trade([(103.0, 106.0, 102.5, 105.0)] + [above] * 6)
    assert at(res.fill) == pytest.approx(103.0)
    # The stop is the higher of the contraction low (95) and 103 x 0.92 = 94.76.
    assert at(res.stop) == pytest.approx(95.0)
    assert at(res.outcome) == TIMEOUT


def test_gap_more_than_5pct_above_the_pivot_is_no_fill():
    res, at = trade([(105.5, 108.0, 105.0, 107.0)] + [QUIET] * 7)
    assert at(res.outcome) == NO_FILL and at(res.label) == 0.0
    assert at(res.fill_col) == -1 and np.isnan(at(res.fill))
    assert at(res.ret) == 0.0 and at(res.r_multiple) == 0.0


def test_no_fill_when_the_high_never_reaches_the_pivot():
    res, at = trade([QUIET] * 8)
    assert at(res.outcome) == NO_FILL and at(res.label) == 0.0
    # A fill after the entry window does not count.
    res, at = trade([QUIET, QUIET, QUIET, (99.0, 101.0, 98.0, 100.0)] + [QUIET] * 5)
    assert at(res.outcome) == NO_FILL


def test_a_gap_through_the_stop_exits_at_the_open():
    res, at = trade([(99.0, 100.5, 98.0, 100.0), (90.0, 91.0, 88.0, 89.0)] + [QUIET] * 5)
    assert at(res.outcome) == LOSS and at(res.label) == 0.0
    assert at(res.exit_price) == pytest.approx(90.0)  # the real fill, worse than the 95 stop
    assert at(res.ret) == pytest.approx(-0.10)
    assert at(res.r_multiple) == pytest.approx(-0.10 / 0.05)


def test_both_levels_in_one_bar_exits_at_the_stop():
    res, at = trade([(99.0, 100.5, 98.0, 100.0), (100.0, 121.0, 94.0, 110.0)] + [QUIET] * 5)
    assert at(res.outcome) == LOSS
    assert at(res.exit_price) == pytest.approx(95.0)
    assert at(res.r_multiple) == pytest.approx(-1.0)


def test_a_timeout_exits_at_the_close_hold_sessions_after_the_fill():
    inside = (101.0, 103.0, 99.0, 102.0)
    res, at = trade([(99.0, 100.5, 98.0, 100.0)] + [inside] * 4 + [(102.0, 104.0, 100.0, 103.0)]
                    + [inside] * 3)
    assert at(res.outcome) == TIMEOUT and at(res.label) == 0.0
    assert at(res.exit_col) == 0 + SHORT.hold
    assert at(res.exit_price) == pytest.approx(103.0)
    assert at(res.ret) == pytest.approx(0.03)


def test_a_delisting_in_the_window_exits_at_the_last_close():
    filled = (99.0, 100.5, 98.0, 100.0)
    res, at = trade([filled, (100.0, 102.0, 99.0, 101.5)] + [None] * 6)
    assert at(res.outcome) == TIMEOUT
    assert at(res.exit_col) == 1 and at(res.exit_price) == pytest.approx(101.5)


def test_a_window_past_the_end_of_the_data_is_unknown():
    filled = (99.0, 100.5, 98.0, 100.0)
    res, at = trade([filled, QUIET, QUIET, QUIET, QUIET, QUIET], sessions=3)
    assert at(res.outcome) == UNKNOWN and np.isnan(at(res.label))
    assert np.isnan(at(res.r_multiple))


def test_the_stop_is_never_more_than_8pct_below_the_fill():
    res, at = trade([(99.0, 100.5, 98.0, 100.0)] + [QUIET] * 6, low=80.0)
    assert at(res.stop) == pytest.approx(92.0)


def test_setup_trades_reads_only_after_the_setup():
    """The bar at D itself (above the pivot) must not fill the order."""
    t = 12
    o = np.full((1, t), 98.0)
    h = np.full((1, t), 99.0)
    lo = np.full((1, t), 97.0)
    c = np.full((1, t), 98.0)
    h[0, 5] = 130.0  # D = column 5: the setup's own session
    res = setup_trades(o, h, lo, c, np.array([0]), np.array([5]), np.array([PIVOT]),
                       np.array([LOW]), SHORT)
    assert res.outcome[0] == NO_FILL


def test_defaults_are_the_documented_trade():
    assert TradeParams().to_dict() == {"entry_window": 10, "max_gap": 0.05, "max_loss": 0.08,
                                       "target": 0.20, "hold": 60}
    assert TradeParams().horizon == 70
