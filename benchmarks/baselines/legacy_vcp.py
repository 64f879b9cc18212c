"""The VCP detector as it was before issue 11 (commit 890628d, features/vcp.py), frozen here so
benchmarks/bench_detector.py can compare it with today's. Not used by the product."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d

from features.indicators import ffill, rolling_max, rolling_min

SWING_K = 5
BASE_WINDOW = 120
MIN_BASE_AGE = 10
MIN_CONTRACTIONS = 2
MAX_CONTRACTIONS = 6
CONTRACTION_RATIO = 0.8
MAX_FIRST_DEPTH = 0.50
MAX_LAST_DEPTH = 0.15
MAX_EXTENSION = 1.05
PRIOR_RUNUP_WINDOW = 60
VOLUME_BASE_WINDOW = 50
CLOSE_FFILL_LIMIT = 10


@dataclass
class VcpInputs:
    """Panel-wide arrays the per-date window function reads (all [n, T])."""

    high: np.ndarray  # NaN -> -inf
    low: np.ndarray  # NaN -> +inf
    volume: np.ndarray
    close_ref: np.ndarray  # close forward-filled up to CLOSE_FFILL_LIMIT sessions
    swing_high: np.ndarray  # bool; swing at t needs columns up to t+k
    runup_low: np.ndarray  # min low over the PRIOR_RUNUP_WINDOW sessions ending at t
    lead_high: np.ndarray  # max high over the SWING_K sessions before t (NaN -> -inf)


def swing_highs(high: np.ndarray, k: int = SWING_K) -> np.ndarray:
    """Bool [n, T]: high[t] == max(high[t-k..t+k]) and > max(high[t-k..t-1])."""
    hi = np.where(np.isnan(high), -np.inf, high)
    center = maximum_filter1d(hi, 2 * k + 1, axis=-1, mode="constant", cval=-np.inf)
    trail = maximum_filter1d(hi, k, axis=-1, mode="constant", cval=-np.inf, origin=(k - 1) // 2)
    left = np.full(hi.shape, -np.inf)
    left[:, 1:] = trail[:, :-1]
    return np.isfinite(hi) & (hi >= center) & (hi > left)


def prepare_vcp_inputs(high, low, close_ref, volume) -> VcpInputs:
    lead_high = np.full(high.shape, -np.inf)
    lead_high[:, 1:] = np.nan_to_num(rolling_max(high, SWING_K), nan=-np.inf)[:, :-1]
    return VcpInputs(
        high=np.where(np.isnan(high), -np.inf, high),
        low=np.where(np.isnan(low), np.inf, low),
        volume=volume,
        close_ref=close_ref,
        swing_high=swing_highs(high),
        runup_low=rolling_min(low, PRIOR_RUNUP_WINDOW),
        lead_high=lead_high,
    )


@dataclass
class VcpWindow:
    """VCP state of every stock at one date ``d`` (column index into the panel).

    Per stock [n]: has_base, detected, count, first_depth, last_depth, mean_ratio, base_length,
    base_high_col, pivot, dist_to_pivot, prior_runup, higher_lows, volume_dryup (detail only).
    Segments (flat, sorted by stock then start): seg_row, seg_start, seg_end (inclusive panel
    columns), seg_depth, seg_high, seg_low.
    """

    d: int
    has_base: np.ndarray
    detected: np.ndarray
    count: np.ndarray
    first_depth: np.ndarray
    last_depth: np.ndarray
    mean_ratio: np.ndarray
    base_length: np.ndarray
    base_high_col: np.ndarray
    pivot: np.ndarray
    dist_to_pivot: np.ndarray
    prior_runup: np.ndarray
    higher_lows: np.ndarray
    volume_dryup: np.ndarray | None
    seg_row: np.ndarray
    seg_start: np.ndarray
    seg_end: np.ndarray
    seg_depth: np.ndarray
    seg_high: np.ndarray
    seg_low: np.ndarray

    def pattern(self, i: int) -> dict:
        """Detail of stock ``i``: flag, contractions [(start_col, end_col, depth)], pivot..."""
        lo, hi = np.searchsorted(self.seg_row, [i, i + 1])
        contractions = [
            (int(s), int(e), float(dp))
            for s, e, dp in zip(
                self.seg_start[lo:hi], self.seg_end[lo:hi], self.seg_depth[lo:hi], strict=True
            )
        ]

        def num(a):
            return None if a is None or not np.isfinite(a[i]) else float(a[i])

        return {
            "detected": bool(self.detected[i]),
            "has_base": bool(self.has_base[i]),
            "contractions": contractions,
            "pivot": num(self.pivot),
            "base_length": None if not self.has_base[i] else int(self.base_length[i]),
            "base_high_index": None if not self.has_base[i] else int(self.base_high_col[i]),
            "dist_to_pivot": num(self.dist_to_pivot),
            "prior_runup": num(self.prior_runup),
            "higher_lows": bool(self.higher_lows[i]),
            "mean_contraction_ratio": num(self.mean_ratio),
            "volume_dryup": num(self.volume_dryup),
        }


def vcp_at(inp: VcpInputs, d: int, detail: bool = False) -> VcpWindow:
    """Evaluate the VCP for every stock at panel column ``d`` (reads columns <= d only)."""
    n = inp.high.shape[0]
    a = max(0, d - BASE_WINDOW + 1)
    ww = d - a + 1
    hw = inp.high[:, a : d + 1]
    lw = inp.low[:, a : d + 1]
    rows = np.arange(n)
    h0 = hw.argmax(axis=1)
    hmax = hw[rows, h0]
    # A window that opens mid-decline has its max at the first column without a peak there.
    peak = inp.lead_high[rows, a + h0] <= hmax
    has_base = np.isfinite(hmax) & (h0 <= ww - 1 - MIN_BASE_AGE) & peak

    cols = np.arange(ww)
    starts = inp.swing_high[:, a : d + 1] & (cols > h0[:, None])
    starts[:, max(0, ww - SWING_K) :] = False  # swings not yet confirmed at d
    starts |= cols == h0[:, None]
    starts &= has_base[:, None]
    starts[:, 0] = True  # dummy start per row so no segment spans two rows
    idx = np.flatnonzero(starts)
    seg_hi = np.maximum.reduceat(hw.ravel(), idx)
    seg_lo = np.minimum.reduceat(lw.ravel(), idx)
    row = idx // ww
    start = idx - row * ww
    end = np.append(idx[1:], n * ww) - 1 - row * ww
    real = has_base[row] & (start >= h0[row])
    row, start, end, seg_hi, seg_lo = row[real], start[real], end[real], seg_hi[real], seg_lo[real]
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = np.where(np.isfinite(seg_lo), (seg_hi - seg_lo) / seg_hi, np.nan)

    count = np.bincount(row, minlength=n)
    first = np.ones(len(row), dtype=bool)
    first[1:] = row[1:] != row[:-1]
    last = np.ones(len(row), dtype=bool)
    last[:-1] = row[1:] != row[:-1]
    first_depth = np.full(n, np.nan)
    first_depth[row[first]] = depth[first]
    last_depth = np.full(n, np.nan)
    last_depth[row[last]] = depth[last]
    pivot = np.full(n, np.nan)
    pivot[row[last]] = seg_hi[last]
    last_start = np.full(n, -1)
    last_start[row[last]] = start[last]

    cur = np.flatnonzero(~first)  # segments with a predecessor in the same stock
    prv = cur - 1
    prow = row[cur]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = depth[cur] / depth[prv]
        not_contracting = ~(depth[cur] <= CONTRACTION_RATIO * depth[prv])
    npairs = np.bincount(prow, minlength=n)
    bad = np.bincount(prow, weights=not_contracting, minlength=n) > 0
    lower_low = np.bincount(prow, weights=seg_lo[cur] < seg_lo[prv], minlength=n) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_ratio = np.where(
            npairs > 0, np.bincount(prow, weights=ratio, minlength=n) / npairs, np.nan
        )

    close = inp.close_ref[:, d]
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = close / pivot - 1.0
        detected = (
            has_base
            & (count >= MIN_CONTRACTIONS)
            & (count <= MAX_CONTRACTIONS)
            & ~bad
            & (first_depth <= MAX_FIRST_DEPTH)
            & (last_depth <= MAX_LAST_DEPTH)
            & (close <= pivot * MAX_EXTENSION)
        )
    h0_abs = a + h0
    runup_col = h0_abs - 1
    runup_low = np.where(runup_col >= 0, inp.runup_low[rows, np.maximum(runup_col, 0)], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        prior_runup = np.where(has_base, hmax / runup_low - 1.0, np.nan)

    dryup = None
    if detail:
        vw = inp.volume[:, a : d + 1]
        in_last = (cols >= last_start[:, None]) & (last_start[:, None] >= 0)
        vv = np.where(in_last & ~np.isnan(vw), vw, 0.0)
        vc = (in_last & ~np.isnan(vw)).sum(axis=1)
        base = inp.volume[:, max(0, d - VOLUME_BASE_WINDOW + 1) : d + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            vmean = np.where(vc > 0, vv.sum(axis=1) / np.maximum(vc, 1), np.nan)
            bcount = (~np.isnan(base)).sum(axis=1)
            bmean = np.where(bcount > 0, np.nansum(base, axis=1) / np.maximum(bcount, 1), np.nan)
            dryup = vmean / bmean

    return VcpWindow(
        d=d,
        has_base=has_base,
        detected=detected,
        count=count.astype(np.float64),
        first_depth=first_depth,
        last_depth=last_depth,
        mean_ratio=mean_ratio,
        base_length=np.where(has_base, ww - 1 - h0, np.nan).astype(np.float64),
        base_high_col=np.where(has_base, h0_abs, -1),
        pivot=pivot,
        dist_to_pivot=dist,
        prior_runup=prior_runup,
        higher_lows=has_base & ~lower_low,
        volume_dryup=dryup,
        seg_row=row,
        seg_start=a + start,
        seg_end=a + end,
        seg_depth=depth,
        seg_high=seg_hi,
        seg_low=seg_lo,
    )


def detect_vcp(high, low, close, volume, d: int | None = None) -> VcpWindow:
    """VCP of every stock at column ``d`` (default: the last) of [n, T] arrays, with detail."""
    high, low, close, volume = (np.asarray(x, dtype=np.float64) for x in (high, low, close, volume))
    inp = prepare_vcp_inputs(high, low, ffill(close, CLOSE_FFILL_LIMIT), volume)
    return vcp_at(inp, high.shape[1] - 1 if d is None else d, detail=True)


def detect_vcp_one(high, low, close, volume, d: int | None = None) -> dict:
    """VCP detail of one stock from 1-D arrays (indices are positions in those arrays)."""
    arrs = [np.asarray(x, dtype=np.float64)[None, :] for x in (high, low, close, volume)]
    return detect_vcp(*arrs, d=d).pattern(0)
