"""The 25-feature vector: one date (``compute_features_at``) or every date
(``compute_features_all``), through the same code.

Both paths compute the same panel-wide inputs, then evaluate features at a set of columns:
rolling means come from cumsums read at those columns, rolling max/min are exact filters, the VCP
window function is called once per column for all stocks. Every ingredient has finite memory
(<= 272 sessions), so a 400-session panel ending at D gives the all-history value at D (to ~1e-15
relative), and a value at column D reads only columns <= D.

"close" in the features is the last close at most 10 sessions old (forward-filled), SMAs average
the raw closes; "simple ATR" averages true ranges (no Wilder smoothing, which has infinite memory).
The VCP features come from the detector (``features.vcp``): NaN for stocks it does not examine
(no base, not in stage 2, no prior advance), which are never setups.

Scoreability at D: a stock needs a trade in the last STALE_AFTER (5) sessions and at least
MIN_HISTORY (200) valid closes in the trailing HISTORY_WINDOW (500) sessions. Rows that are not
scoreable get all-NaN features; other rows may still have NaN features (xgboost handles them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from features import indicators as ind
from features.trend_template import CRITERIA, SLOPE_LAG, trend_template
from features.vcp import LOOKBACK as VCP_LOOKBACK
from features.vcp import VcpDay, prepare_inputs, vcp_day

FEATURE_DOCS: dict[str, str] = {
    "close_sma50": "close / SMA50(close) - 1",
    "close_sma150": "close / SMA150(close) - 1",
    "close_sma200": "close / SMA200(close) - 1",
    "sma50_sma150": "SMA50 / SMA150 - 1",
    "market_trend_63": "log change over 63 sessions of the equal-weighted universe index",
    "sma200_slope21": "SMA200 today / SMA200 21 sessions ago - 1",
    "pct_above_52w_low": "close / min(low, 252 sessions) - 1",
    "pct_below_52w_high": "1 - close / max(high, 252 sessions)",
    "rs_rating": "IBD-style RS: 0.4*r63+0.2*r126+0.2*r189+0.2*r252 ranked 1..99 across stocks",
    "rs_line_slope63": "log change over 63 sessions of close / equal-weighted universe index",
    "trend_template_count": "number of Minervini trend-template criteria met (0..8)",
    "contraction_count": "contractions in the base (VCP detector)",
    "first_depth": "depth of the first contraction: 1 - swing low / swing high",
    "last_depth": "depth of the last contraction (in progress or just completed)",
    "mean_contraction_ratio": "mean of depth[i] / depth[i-1] over consecutive contractions",
    "base_length": "sessions from the base high to the date",
    "dist_to_pivot": "close / pivot - 1, pivot = the high of the last contraction",
    "contraction_dryup": "mean volume in the last contraction / 50-day average volume",
    "updown_volume_50": "volume on up closes / volume on down closes, 50 sessions",
    "rel_volume_50": "today's volume / SMA50(volume)",
    "atr14_pct": "simple ATR14 (mean true range, 14 sessions) / close",
    "atr10_atr50": "simple ATR10 / simple ATR50",
    "bbw_pctile_252": "percentile (0-100) of Bollinger width (20, 2 std)/SMA20 within 252 sessions",
    "prior_advance": "base high / lowest low of the 126 sessions before it - 1",
    "log_traded_value_50": "mean of log(close x volume) over 50 sessions",
}
FEATURES: list[str] = list(FEATURE_DOCS)
assert len(FEATURES) == 25
_FI = {name: i for i, name in enumerate(FEATURES)}
VCP_FEATURES = (
    "contraction_count",
    "first_depth",
    "last_depth",
    "mean_contraction_ratio",
    "base_length",
    "dist_to_pivot",
    "prior_advance",
    "contraction_dryup",
)

HISTORY_WINDOW = 500
MIN_HISTORY = 200
STALE_AFTER = 5
CLOSE_FFILL_LIMIT = 10
# Oldest column any feature reads: the VCP detector's base and prior advance (bbw pctile needs
# 252 + 20).
MAX_LOOKBACK = max(300, VCP_LOOKBACK)
DEFAULT_BLOCK = 2048  # stocks per block for the per-stock rolling series (bounds memory)
FLOAT32_MAX = float(np.finfo(np.float32).max)


class FeaturePanel(NamedTuple):
    """All-dates result: values [n, k, 25], scoreable [n, k], columns [k] (panel indices),
    vcp_detected [n, k] (a setup, and scoreable), and each setup's pivot and stop [n, k]
    (NaN elsewhere)."""

    values: np.ndarray
    scoreable: np.ndarray
    columns: np.ndarray
    vcp_detected: np.ndarray
    pivot: np.ndarray
    stop: np.ndarray


@dataclass
class FeatureResult:
    """One-date result at panel column ``column`` (the last)."""

    values: np.ndarray  # [n, 25] float64
    reasons: list[str | None]  # None when scoreable
    scoreable: np.ndarray  # [n] bool
    vcp: VcpDay  # the detector at the date (only scoreable stocks are examined)
    trend_checks: np.ndarray  # [8, n] bool, order of trend_template.CRITERIA

    def is_setup(self, i: int) -> bool:
        return bool(self.scoreable[i] and self.vcp.detected[i])

    def why_not(self, i: int) -> str | None:
        """Why stock ``i`` is no setup: not scoreable, or the first VCP rule it fails."""
        if not self.scoreable[i]:
            return self.reasons[i]
        return self.vcp.why_not(i)

    def trend_template(self, i: int) -> dict[str, bool]:
        return {name: bool(self.trend_checks[j, i]) for j, name in enumerate(CRITERIA)}

    def as_dict(self, i: int) -> dict[str, float]:
        return {name: float(self.values[i, j]) for j, name in enumerate(FEATURES)}


def _as_panel(*arrays) -> list[np.ndarray]:
    out = [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]
    shape = out[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in out):
        raise ValueError(
            f"price arrays must share one [n_stocks, T] shape, got {[a.shape for a in out]}"
        )
    return out


def _ratio(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        return a / b - 1.0


def _div(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        return a / b


def _block_features(high, low, close, volume, cref, cols, rs, index_lr, market_trend):
    """Non-VCP features of a block of stocks at ``cols``: (dict name -> [nb, k], checks)."""
    take = ind.take_cols
    c_now = take(cref, cols)
    sums = ind._cumsums(close)
    sma50 = ind.window_mean_at(close, 50, cols, sums=sums)
    sma150 = ind.window_mean_at(close, 150, cols, sums=sums)
    sma200 = ind.window_mean_at(close, 200, cols, sums=sums)
    sma200_prev = ind.window_mean_at(close, 200, cols - SLOPE_LAG, sums=sums)
    low52 = ind.window_min_at(low, 252, cols)
    high52 = ind.window_max_at(high, 252, cols)
    checks, tt_count = trend_template(c_now, sma50, sma150, sma200, sma200_prev, low52, high52, rs)

    vsums = ind._cumsums(volume)
    vol50 = ind.window_mean_at(volume, 50, cols, sums=vsums)
    prev = ind.lag(cref, 1)
    vok = ~np.isnan(volume)
    with np.errstate(invalid="ignore"):
        upv = np.where(vok & (close > prev), volume, 0.0)
        dnv = np.where(vok & (close < prev), volume, 0.0)
    up_sum, _ = ind.window_sum_at(upv, 50, cols)
    dn_sum, _ = ind.window_sum_at(dnv, 50, cols)
    _, v_cnt = ind.window_sum_at(volume, 50, cols, sums=vsums)
    updown = np.where((v_cnt >= ind.min_count(50)) & (dn_sum > 0), _div(up_sum, dn_sum), np.nan)

    tr = ind.true_range(high, low, prev)
    trs = ind._cumsums(tr)
    atr14 = ind.window_mean_at(tr, 14, cols, sums=trs)
    atr10 = ind.window_mean_at(tr, 10, cols, sums=trs)
    atr50 = ind.window_mean_at(tr, 50, cols, sums=trs)
    bbw_pct = ind.rolling_pctile_at(ind.bb_width(close), 252, cols)
    with np.errstate(invalid="ignore", divide="ignore"):
        tv = close * volume
        ltv = np.where(tv > 0, np.log(np.where(tv > 0, tv, 1.0)), np.nan)
    feats = {
        "close_sma50": _ratio(c_now, sma50),
        "close_sma150": _ratio(c_now, sma150),
        "close_sma200": _ratio(c_now, sma200),
        "sma50_sma150": _ratio(sma50, sma150),
        "market_trend_63": np.broadcast_to(market_trend, c_now.shape),
        "sma200_slope21": _ratio(sma200, sma200_prev),
        "pct_above_52w_low": _ratio(c_now, low52),
        "pct_below_52w_high": -_ratio(c_now, high52),
        "rs_rating": rs,
        "rs_line_slope63": ind.rs_line_log_change_at(cref, index_lr, cols, 63),
        "trend_template_count": tt_count,
        "updown_volume_50": updown,
        "rel_volume_50": _div(take(volume, cols), vol50),
        "atr14_pct": _div(atr14, c_now),
        "atr10_atr50": _div(atr10, atr50),
        "bbw_pctile_252": bbw_pct,
        "log_traded_value_50": ind.window_mean_at(ltv, 50, cols),
    }
    return feats, checks


def _finite_or_nan(out: np.ndarray) -> None:
    """Every feature is finite or NaN: a ratio over a flat or zero-volume window (x/0) or a
    value beyond float32 (what xgboost and the API read) becomes NaN, never inf."""
    for f in range(out.shape[-1]):  # one feature at a time: small temporaries
        v = out[..., f]
        with np.errstate(invalid="ignore"):
            v[~(np.abs(v) <= FLOAT32_MAX)] = np.nan


def _status(close, cols):
    """(last trade column [n, k], valid closes in the trailing HISTORY_WINDOW [n, k])."""
    last = ind.last_valid_col(close)[:, cols]
    _, cnt = ind.window_sum_at(close, HISTORY_WINDOW, cols)
    return last, cnt


def _market_trend(index_lr: np.ndarray, cols: np.ndarray, k: int = 63) -> np.ndarray:
    """Sum of the index's daily log returns over the k sessions ending at each column."""
    cs = np.concatenate([[0.0], np.cumsum(index_lr)])
    out = np.full(len(cols), np.nan)
    ok = cols - k >= 0
    out[ok] = cs[cols[ok] + 1] - cs[cols[ok] + 1 - k]
    return out


def _compute(high, low, close, volume, cols, block_size, dtype):
    n, t = close.shape
    k = len(cols)
    # Scoreability reads up to HISTORY_WINDOW sessions; everything else at most MAX_LOOKBACK,
    # so earlier columns are dropped (same values, less work for the one-date path).
    last, cnt = _status(close, cols)
    age = cols[None, :] - last
    scoreable = (last >= 0) & (age < STALE_AFTER) & (cnt >= MIN_HISTORY)
    s0 = max(0, int(cols.min()) - MAX_LOOKBACK)
    if s0:
        high, low, close, volume = (a[:, s0:] for a in (high, low, close, volume))
        cols = cols - s0
    cref = ind.ffill(close, CLOSE_FFILL_LIMIT)
    rs = ind.rs_rating(ind.weighted_return_at(cref, cols))
    index_lr = ind.universe_log_returns(close)
    market_trend = _market_trend(index_lr, cols)
    out = np.full((n, k, len(FEATURES)), np.nan, dtype=dtype)

    inp = prepare_inputs(high, low, cref, volume)
    vcp_idx = [_FI[f] for f in VCP_FEATURES]
    day: VcpDay | None = None
    detected = np.zeros((n, k), dtype=bool)
    pivot = np.full((n, k), np.nan)
    stop = np.full((n, k), np.nan)
    for j, d in enumerate(cols):
        day = vcp_day(inp, int(d), eligible=scoreable[:, j])
        detected[:, j] = day.detected
        pivot[day.detected, j] = day.pivot[day.detected]
        stop[day.detected, j] = day.stop[day.detected]
        vals = (
            np.where(day.count > 0, day.count, np.nan),
            day.first_depth,
            day.last_depth,
            day.mean_ratio,
            np.where(day.count > 0, day.base_length, np.nan),
            day.dist_to_pivot,
            day.advance,
            day.dryup,
        )
        for fi, arr in zip(vcp_idx, vals, strict=True):
            out[:, j, fi] = arr
    del inp

    other = [f for f in FEATURES if f not in VCP_FEATURES]
    other_idx = [_FI[f] for f in other]
    checks_all = np.zeros((len(CRITERIA), n, k), dtype=bool)
    for b0 in range(0, n, block_size):
        sl = slice(b0, min(n, b0 + block_size))
        feats, checks = _block_features(
            high[sl], low[sl], close[sl], volume[sl], cref[sl], cols, rs[sl], index_lr,
            market_trend,
        )
        out[sl][:, :, other_idx] = np.stack([feats[f] for f in other], axis=-1)
        checks_all[:, sl] = checks

    out[~scoreable] = np.nan
    _finite_or_nan(out)
    detected &= scoreable
    if day is not None:
        day.offset = s0  # its columns index the cropped panel
    return out, scoreable, detected, np.where(detected, pivot, np.nan), \
        np.where(detected, stop, np.nan), last, cnt, day, checks_all


def _columns(t: int, dates_mask) -> np.ndarray:
    if dates_mask is None:
        return np.arange(t)
    m = np.asarray(dates_mask)
    if m.dtype == bool:
        if m.shape != (t,):
            raise ValueError(f"dates_mask must be a bool array of length {t}")
        return np.flatnonzero(m)
    cols = np.unique(m.astype(np.int64))
    if len(cols) and (cols[0] < 0 or cols[-1] >= t):
        raise ValueError(f"dates_mask column indices must lie in [0, {t})")
    return cols


def compute_features_all(
    open: np.ndarray,  # noqa: A002 - the panel field name
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    dates_mask: np.ndarray | None = None,
    dtype=np.float64,
    block_size: int = DEFAULT_BLOCK,
) -> FeaturePanel:
    """Features at every column (or the columns selected by ``dates_mask``: bool [T] or indices).

    Returns ``FeaturePanel(values [n, k, 25] dtype, scoreable [n, k] bool, columns [k],
    vcp_detected [n, k] bool)``;
    k = T without a mask. Computed in float64; ``dtype=np.float32`` halves the output memory.
    """
    _, high, low, close, volume = _as_panel(open, high, low, close, volume)
    cols = _columns(close.shape[1], dates_mask)
    if len(cols) == 0:
        none = np.zeros((close.shape[0], 0), dtype=bool)
        empty = np.zeros((close.shape[0], 0))
        return FeaturePanel(np.empty((close.shape[0], 0, len(FEATURES)), dtype=dtype), none,
                            cols, none, empty, empty)
    values, scoreable, detected, pivot, stop, *_ = _compute(
        high, low, close, volume, cols, block_size, dtype
    )
    return FeaturePanel(values, scoreable, cols, detected, pivot, stop)


def compute_features_at(
    open: np.ndarray,  # noqa: A002 - the panel field name
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
) -> FeatureResult:
    """Features at the last column of the panel (pass >= 400 sessions for full history).

    ``reasons[i]`` is None for scoreable stocks, else "no_data",
    "stale: last trade K sessions before the date" or
    "insufficient_history: N sessions, 200 needed".
    """
    _, high, low, close, volume = _as_panel(open, high, low, close, volume)
    n, t = close.shape
    if t == 0:
        raise ValueError("the price panel has no dates")
    cols = np.array([t - 1])
    values, scoreable, _, _, _, last, cnt, day, checks = _compute(
        high, low, close, volume, cols, DEFAULT_BLOCK, np.float64
    )
    reasons: list[str | None] = []
    for i in range(n):
        li, ci = int(last[i, 0]), int(cnt[i, 0])
        if scoreable[i, 0]:
            reasons.append(None)
        elif li < 0:
            reasons.append("no_data")
        elif t - 1 - li >= STALE_AFTER:
            reasons.append(f"stale: last trade {t - 1 - li} sessions before the date")
        else:
            reasons.append(f"insufficient_history: {ci} sessions, {MIN_HISTORY} needed")
    return FeatureResult(
        values=values[:, 0, :],
        reasons=reasons,
        scoreable=scoreable[:, 0],
        vcp=day,
        trend_checks=checks[:, :, 0],
    )
