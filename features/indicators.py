"""Technical indicators over price panels [n_stocks, T] along the time (last) axis.

Conventions
- NaN marks a session a stock did not trade. Rolling windows count *sessions* (columns), and
  average only the valid values inside the window.
- Min-count rule: a window statistic is defined when at least ``ceil(0.8 * w)`` of its ``w``
  sessions are valid (``min_count(w)``); a window truncated by the panel start counts only the
  columns it has. Illiquid stocks therefore get NaN rather than a mean of three prints.
- Everything used by the feature vector has finite memory (at most ~300 sessions), so the value at
  a date does not depend on where the panel starts: a 400-session panel ending at D gives the same
  numbers as the full history at D; the module keeps no infinite-memory filter (EMA, Wilder ATR).
- Values at column t only read columns <= t (no look-ahead).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d, minimum_filter1d

MIN_VALID_FRAC = 0.8


def min_count(w: int) -> int:
    """Valid sessions a ``w``-session window needs to be defined (80%, rounded up)."""
    return int(np.ceil(MIN_VALID_FRAC * w - 1e-9))


def lag(x: np.ndarray, k: int) -> np.ndarray:
    """x shifted right by k sessions: out[..., t] = x[..., t-k] (NaN before the start)."""
    if k == 0:
        return x.copy()
    out = np.full(x.shape, np.nan)
    if k < x.shape[-1]:
        out[..., k:] = x[..., :-k]
    return out


def take_cols(x: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """x[:, cols] with NaN where a column index is negative (before the panel start)."""
    cols = np.asarray(cols, dtype=np.int64)
    out = x[:, np.maximum(cols, 0)].astype(np.float64, copy=True)
    out[:, cols < 0] = np.nan
    return out


def ffill(x: np.ndarray, limit: int) -> np.ndarray:
    """Forward-fill NaN with the nearest valid value at most ``limit`` sessions back."""
    out = x.copy()
    for k in range(1, limit + 1):
        src = lag(x, k)
        fill = np.isnan(out) & ~np.isnan(src)
        out[fill] = src[fill]
    return out


def last_valid_col(x: np.ndarray) -> np.ndarray:
    """Per column, index of the last valid value at or before it (-1 if none). [n, T] int64."""
    t = x.shape[-1]
    idx = np.where(~np.isnan(x), np.arange(t), -1)
    return np.maximum.accumulate(idx, axis=-1)


# ---------------------------------------------------------------- rolling sums and means


def _cumsums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative sum of valid values and of the valid count, with a leading zero column."""
    valid = ~np.isnan(x)
    n = x.shape[0]
    cs = np.zeros((n, x.shape[1] + 1))
    np.cumsum(np.where(valid, x, 0.0), axis=1, out=cs[:, 1:])
    cc = np.zeros((n, x.shape[1] + 1), dtype=np.int64)
    np.cumsum(valid, axis=1, out=cc[:, 1:])
    return cs, cc


def window_mean_at(
    x: np.ndarray, w: int, cols: np.ndarray, minc: int | None = None, sums=None
) -> np.ndarray:
    """Mean of valid values over the ``w`` sessions ending at each of ``cols`` ([n, len(cols)]).

    Cumsum based (relative error ~1e-15). ``sums`` may pass precomputed ``_cumsums(x)``.
    """
    cs, cc = sums if sums is not None else _cumsums(x)
    cols = np.asarray(cols, dtype=np.int64)
    hi = np.maximum(cols + 1, 0)  # a negative column (before the panel) gives count 0 -> NaN
    lo = np.maximum(hi - w, 0)
    s = _window_diff(cs, hi, lo)
    c = _window_diff(cc, hi, lo)
    minc = min_count(w) if minc is None else minc
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c >= max(minc, 1), s / np.maximum(c, 1), np.nan)


def window_sum_at(x: np.ndarray, w: int, cols: np.ndarray, sums=None):
    """(sum of valid values, valid count) over the ``w`` sessions ending at each of ``cols``."""
    cs, cc = sums if sums is not None else _cumsums(x)
    cols = np.asarray(cols, dtype=np.int64)
    hi = np.maximum(cols + 1, 0)
    lo = np.maximum(hi - w, 0)
    return _window_diff(cs, hi, lo), _window_diff(cc, hi, lo)


def _window_diff(cs: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """cs[:, hi] - cs[:, lo]; slices instead of gathers when ``hi`` is a run of columns."""
    k = len(hi)
    if k < 2 or hi[-1] - hi[0] != k - 1 or not (np.diff(hi) == 1).all():
        return cs[:, hi] - cs[:, lo]
    out = cs[:, hi[0] : hi[-1] + 1].copy()
    m = int(np.searchsorted(lo, 1))  # lo is 0 (clipped) for the first m columns, then a run
    out[:, :m] -= cs[:, :1]
    if m < k:
        out[:, m:] -= cs[:, lo[m] : lo[-1] + 1]
    return out


class WindowMean:
    """``sma(x, w)`` computed at the cells asked for (``m[rows, cols]``, as on the array) from
    cumulative sums taken once: for a reader of a few columns of a whole panel. Same values as
    ``sma`` (the same differences of the same sums)."""

    def __init__(self, x: np.ndarray, w: int, sums=None):
        sums = sums if sums is not None else _cumsums(x)
        self.cs: np.ndarray = sums[0]
        self.cc: np.ndarray = sums[1]
        self.w = w
        self.minc = max(min_count(w), 1)

    def __getitem__(self, key: tuple) -> np.ndarray:
        rows, cols = key
        hi = np.maximum(np.asarray(cols, dtype=np.int64) + 1, 0)
        lo = np.maximum(hi - self.w, 0)
        s = self.cs[rows, hi] - self.cs[rows, lo]
        c = self.cc[rows, hi] - self.cc[rows, lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c >= self.minc, s / np.maximum(c, 1), np.nan)


def sma(x: np.ndarray, w: int, minc: int | None = None) -> np.ndarray:
    """Simple moving average over valid values in the trailing ``w`` sessions (80% rule)."""
    return window_mean_at(x, w, np.arange(x.shape[1]), minc)


# ---------------------------------------------------------------- max / min


def rolling_max(x: np.ndarray, w: int) -> np.ndarray:
    """Max of valid values over the trailing ``w`` sessions (NaN if none valid). Exact."""
    xi = np.where(np.isnan(x), -np.inf, x)
    m = maximum_filter1d(xi, w, axis=-1, mode="constant", cval=-np.inf, origin=(w - 1) // 2)
    m[np.isneginf(m)] = np.nan
    return m


def rolling_min(x: np.ndarray, w: int) -> np.ndarray:
    """Min of valid values over the trailing ``w`` sessions (NaN if none valid). Exact."""
    xi = np.where(np.isnan(x), np.inf, x)
    m = minimum_filter1d(xi, w, axis=-1, mode="constant", cval=np.inf, origin=(w - 1) // 2)
    m[np.isposinf(m)] = np.nan
    return m


def window_max_at(x: np.ndarray, w: int, cols: np.ndarray) -> np.ndarray:
    """``rolling_max(x, w)`` at ``cols`` (direct reductions when there are few columns)."""
    return _window_extreme_at(x, w, cols, np.fmax, rolling_max)


def window_min_at(x: np.ndarray, w: int, cols: np.ndarray) -> np.ndarray:
    """``rolling_min(x, w)`` at ``cols``."""
    return _window_extreme_at(x, w, cols, np.fmin, rolling_min)


def _window_extreme_at(x, w, cols, ufunc, full):
    cols = np.asarray(cols, dtype=np.int64)
    if len(cols) * w > 2 * x.shape[1]:
        return take_cols(full(x, w), cols)
    out = np.full((x.shape[0], len(cols)), np.nan)
    with np.errstate(invalid="ignore"):
        for j, c in enumerate(cols):
            if c >= 0:
                out[:, j] = ufunc.reduce(x[:, max(0, c - w + 1) : c + 1], axis=1)
    return out


# ---------------------------------------------------------------- ranges and volatility


def true_range(high: np.ndarray, low: np.ndarray, prev_close: np.ndarray) -> np.ndarray:
    """max(high-low, |high-prev_close|, |low-prev_close|); high-low when prev_close is NaN."""
    hl = high - low
    with np.errstate(invalid="ignore"):
        hc = np.abs(high - prev_close)
        lc = np.abs(low - prev_close)
    return np.fmax(hl, np.fmax(hc, lc)) * np.where(np.isnan(hl), np.nan, 1.0)


def atr_simple(high, low, close, n: int = 14, prev_close_limit: int = 10) -> np.ndarray:
    """Simple ATR: mean true range over the trailing ``n`` sessions (80% rule). Finite memory.

    The previous close is the last close at most ``prev_close_limit`` sessions back.
    """
    prev = lag(ffill(close, prev_close_limit), 1)
    return sma(true_range(high, low, prev), n)


def rolling_mean_std(x: np.ndarray, w: int, minc: int | None = None):
    """Exact rolling mean and population std over valid values in ``w`` sessions.

    Sums ``w`` shifted copies (two-pass) instead of cumsums of squares: those lose precision
    for flat series (circuit-locked stocks) and depend on where the panel starts. O(w) passes.
    """
    # Time-major copies make every shifted slice one contiguous block (several times faster).
    xt = np.ascontiguousarray(x.T)
    valid = ~np.isnan(xt)
    xz = np.where(valid, xt, 0.0)
    vf = valid.astype(np.float64)
    t = xt.shape[0]
    s = np.zeros(xt.shape)
    c = np.zeros(xt.shape)
    for k in range(min(w, t)):
        s[k:] += xz[: t - k]
        c[k:] += vf[: t - k]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / c
    ss = np.zeros(xt.shape)
    buf = np.empty(xt.shape)
    for k in range(min(w, t)):
        d = buf[k:]
        np.subtract(xz[: t - k], mean[k:], out=d)
        d *= d
        d *= vf[: t - k]
        ss[k:] += d
    mean, ss, c = mean.T, ss.T, c.T
    minc = min_count(w) if minc is None else minc
    ok = c >= minc
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(ss / c)
    return np.where(ok, mean, np.nan), np.where(ok, std, np.nan)


def bb_width(close: np.ndarray, w: int = 20, k: float = 2.0) -> np.ndarray:
    """Bollinger band width: (upper - lower) / middle = 2*k*std/SMA over ``w`` sessions."""
    mean, std = rolling_mean_std(close, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2.0 * k * std / mean


def rolling_pctile_at(x: np.ndarray, w: int, cols: np.ndarray, minc: int | None = None):
    """Percentile rank (0-100) of x at each of ``cols`` among valid x in its trailing ``w``.

    rank = 100 * #{valid values in window <= today's} / #{valid values in window}; NaN when
    today's value is NaN or fewer than ``minc`` values are valid. Exact (comparisons only).
    """
    cols = np.asarray(cols, dtype=np.int64)
    lo, hi = int(cols.min()), int(cols.max())
    xt = np.ascontiguousarray(x[:, max(0, lo - w + 1) : hi + 1].T)  # time-major: fast slices
    off = max(0, lo - w + 1)
    tgt = xt[lo - off :]
    le = np.zeros(tgt.shape, dtype=np.int16)
    hit = np.empty(tgt.shape, dtype=bool)
    for k in range(w):
        start = max(lo, k)
        if start > hi:
            break
        v = xt[start - k - off : hi + 1 - k - off]
        h = hit[start - lo :]
        np.less_equal(v, tgt[start - lo :], out=h)
        le[start - lo :] += h
    le, tv = le.T[:, cols - lo], tgt.T[:, cols - lo]
    _, cnt = window_sum_at(x, w, cols)
    minc = min_count(w) if minc is None else minc
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((cnt >= minc) & ~np.isnan(tv), 100.0 * le / cnt, np.nan)


# ---------------------------------------------------------------- relative strength

RS_WEIGHTS = ((63, 0.4), (126, 0.2), (189, 0.2), (252, 0.2))
# Illiquid stocks: the close "k sessions ago" is the last one at most RS_REF_GAP sessions before
# t-k. A stock rates only with a close within [t - 252 - RS_REF_GAP, t - RS_MIN_AGE] (finite
# memory, <= 272 sessions, like every other feature input).
RS_REF_GAP = 20
RS_MIN_AGE = 63


def next_valid_col(x: np.ndarray) -> np.ndarray:
    """Per column, index of the first valid value at or after it (T if none). [n, T] int64."""
    t = x.shape[-1]
    idx = np.where(~np.isnan(x), np.arange(t), t)
    return np.minimum.accumulate(idx[..., ::-1], axis=-1)[..., ::-1]


def _rs_reference_cols(last, nxt, cols, k):
    """Column of the reference close for the k-session return at each of ``cols`` (-1: none).

    The last close at or before t-k (at most RS_REF_GAP sessions before it); when there is none
    (listed later, or not trading then) the stock's first close after t-k.
    """
    t = last.shape[1]
    at = cols - k
    back = np.where(at >= 0, last[:, np.clip(at, 0, t - 1)], -1)
    ok = (back >= 0) & (at - back <= RS_REF_GAP)
    after = nxt[:, np.clip(at + 1, 0, t - 1)]
    return np.where(ok, back, np.where(after <= cols, after, -1))


def weighted_return_at(close_ref: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """IBD-style 0.4*r63 + 0.2*r126 + 0.2*r189 + 0.2*r252 at ``cols`` (close_ref ffilled).

    r_k = close_t / close_ref(t-k) - 1 with the reference close of ``_rs_reference_cols``, so a
    stock with 63 to 251 sessions of history uses its first close for the longer horizons
    (r252 is then the return since its first close). NaN without a close today or without one
    at least RS_MIN_AGE sessions back (in the 272-session window).
    """
    cols = np.asarray(cols, dtype=np.int64)
    last = last_valid_col(close_ref)
    nxt = next_valid_col(close_ref)
    now = take_cols(close_ref, cols)
    oldest = RS_WEIGHTS[-1][0] + RS_REF_GAP
    aged = np.where(cols >= RS_MIN_AGE, last[:, np.clip(cols - RS_MIN_AGE, 0, None)], -1)
    rated = (aged >= 0) & (aged >= cols - oldest) & ~np.isnan(now)
    out = np.zeros(now.shape)
    rows = np.arange(close_ref.shape[0])[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        for k, wgt in RS_WEIGHTS:
            ref_col = _rs_reference_cols(last, nxt, cols, k)
            ref = np.where(ref_col >= 0, close_ref[rows, np.maximum(ref_col, 0)], np.nan)
            out += wgt * (now / ref - 1.0)
    return np.where(rated, out, np.nan)


def weighted_return(close_ref: np.ndarray) -> np.ndarray:
    """``weighted_return_at`` at every column."""
    return weighted_return_at(close_ref, np.arange(close_ref.shape[1]))


def rs_rating(wret: np.ndarray) -> np.ndarray:
    """Cross-sectional percentile 1..99 of each column of ``wret`` [n, k] (NaN excluded).

    Ties get their average rank; rating = rint(1 + 98 * (rank - 1) / (m - 1)) with m valid
    stocks on that date (50 when m == 1).
    """
    out = np.full(wret.shape, np.nan)
    for j in range(wret.shape[1]):
        col = wret[:, j]
        ok = np.isfinite(col)
        m = int(ok.sum())
        if m == 0:
            continue
        vals = col[ok]
        srt = np.sort(vals)
        if m == 1:
            out[ok, j] = 50.0
            continue
        left = np.searchsorted(srt, vals, "left")
        right = np.searchsorted(srt, vals, "right")
        rank = (left + right + 1) / 2.0  # average 1-based rank
        out[ok, j] = np.rint(1.0 + 98.0 * (rank - 1.0) / (m - 1.0))
    return out


def universe_log_returns(close: np.ndarray) -> np.ndarray:
    """Daily log return [T] of the equal-weighted universe index.

    Each day: log1p(mean simple return of stocks that traded that day and the session before);
    0 when none did (and on the first column). The index is exp(cumsum) of this.
    """
    prev = close[:, :-1]
    cur = close[:, 1:]
    ok = ~np.isnan(prev) & ~np.isnan(cur) & (prev > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok, cur / np.where(ok, prev, 1.0) - 1.0, 0.0)
    cnt = ok.sum(axis=0)
    mean = np.where(cnt > 0, r.sum(axis=0) / np.maximum(cnt, 1), 0.0)
    return np.concatenate([[0.0], np.log1p(mean)])


def universe_index(close: np.ndarray) -> np.ndarray:
    """Equal-weighted universe index level [T], 1.0 at the first column."""
    return np.exp(np.cumsum(universe_log_returns(close)))


def rs_line(close: np.ndarray) -> np.ndarray:
    """RS line: close / equal-weighted universe index (panel-start dependent scale)."""
    return close / universe_index(close)[None, :]


def rs_line_log_change_at(
    close_ref: np.ndarray, index_lr: np.ndarray, cols: np.ndarray, k: int = 63
) -> np.ndarray:
    """log(RS line[t] / RS line[t-k]) at ``cols``: stock log return minus index log return.

    The index part sums the k daily index log returns directly, so the value does not
    depend on where the panel starts.
    """
    cols = np.asarray(cols, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        stock = np.log(take_cols(close_ref, cols) / take_cols(close_ref, cols - k))
    idx = np.full(len(cols), np.nan)
    ok = cols - k >= 0
    if ok.any():
        win = np.lib.stride_tricks.sliding_window_view(index_lr, k)  # win[i] = lr[i..i+k-1]
        idx[ok] = win[cols[ok] - k + 1].sum(axis=1)
    return stock - idx[None, :]
