"""Volatility Contraction Pattern (Minervini) detector: one date, every stock, data up to it.

A setup at date D, as the book describes it (every rule is a field of ``VcpRules``, with why):

1. **A base**: its start is the highest high since the lowest low of the last 65 weeks (the
   peak of the latest advance; when that peak is under 3 weeks old, an older high at most 2%
   below it: a flat top), at least 3 weeks before D (a stock at new highs is not in a base).
2. **Stage 2**: the close above the 150- and 200-day averages, both rising over a month.
3. **A prior advance** of at least 30% into the base: base high / lowest low of the 6 months
   before it.
4. **Contractions**: from the base high, a zigzag whose reversal threshold scales with
   volatility (1.5 ATR as % of price, at least 2%) finds swing highs and lows. A contraction is
   a decline from a swing high to the lowest low before the next contraction starts. The right
   side tightens under a ceiling, so only swing highs that no later swing high exceeds (by more
   than 2%) and that win back at least half of the decline before them start contractions;
   other swing highs are wiggles inside a decline or a recovery. 2 to 6 contractions.
5. **Tightening**: the last contraction at most 0.75 as deep as the deepest before it, and none
   deeper than 0.75 + 0.15 of the deepest before it (a tolerance for noise: no widening);
   contractions of 4% or less count as tight whatever the ratio; the first at most 50% deep.
   A dip less than half as deep as the decline that follows it from the same ceiling is that
   decline's start, not a contraction of its own.
6. **Under a ceiling**: every contraction's high within 15% of the base high.
7. **The last contraction** at most 12% deep; the stock quieter than in its first contraction
   (ATR now below 0.9 of its mean there); the last contraction's average volume at most 60% of
   the 50-day average (volume dries up).
8. **Not extended**: the close at most 5% above the pivot.

Pivot = the high of the last contraction; stop = its low, or 8% below the pivot when that is
closer (the breakout trade's initial stop, features/labels.py). A **breakout** is a close above the
pivot on volume at least 1.4x the 50-day average; **extended** is a close more than 5% above
the pivot (no setup: the buy-stop would not fill). When there is no setup, ``why_not`` names the
first rule that failed.

The footprint is traders' shorthand: "18W 28/4 3T" = an 18-week base, deepest/last contraction
28% and 4%, 3 contractions.

No look-ahead: the result at column d reads columns <= d only, and every ingredient has finite
memory (``LOOKBACK`` sessions), so a panel of that many sessions ending at D gives the same
result as the whole history. The zigzag runs per date over that window, vectorized over the
stocks that pass rules 1-3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features import indicators as ind

MAX_LOSS = 0.08  # the trade never risks more than 8% below the pivot (TradeParams.max_loss)


@dataclass(frozen=True)
class VcpRules:
    max_base: int = 325  # 65 weeks: the longest bases the book counts
    min_base: int = 15  # 3 weeks: the shortest
    flat_top: float = 0.02  # a fresh high at most 2% above an older one does not restart the base
    advance_lookback: int = 126  # the prior advance starts at the low of the 6 months before
    min_advance: float = 0.30  # "a prior uptrend of at least 30%"
    slope_lag: int = 21  # stage 2: 150- and 200-day averages rising over a month
    atr_sessions: int = 14
    zigzag_atr: float = 1.5  # a swing needs a reversal of 1.5 ATR: noise-sized moves are not
    zigzag_min: float = 0.02  # ... and at least 2%, however quiet the stock
    high_tolerance: float = 0.02  # a swing high exceeded later by more than 2% is a wiggle
    min_recovery: float = 0.5  # a rally must win back half the decline to start a contraction
    prelude: float = 0.5  # a dip under half the next decline from the same highs is its start
    min_contractions: int = 2
    max_contractions: int = 6
    max_first_depth: float = 0.50  # deeper first declines are broken stocks, not bases
    max_ratio: float = 0.75  # the last contraction at most 3/4 as deep as any before it
    ratio_tolerance: float = 0.15  # the others at most 0.90 of the deepest before: no widening
    tight: float = 0.04  # contractions this shallow are all "tight": ratios bind above it
    ceiling: float = 0.15  # the right side tightens under the base high
    max_last_depth: float = 0.12  # the final contraction is tight: 10-12% at most
    max_atr_ratio: float = 0.9  # and the stock is quieter: ATR below its first contraction's
    max_dryup: float = 0.60  # volume in the last contraction dries up: <= 60% of the 50-day mean
    volume_sessions: int = 50
    breakout_volume: float = 1.4  # a breakout needs 40% more volume than usual
    max_extension: float = 0.05  # more than 5% above the pivot is extended: do not chase

    @property
    def lookback(self) -> int:
        """Oldest column before D that any rule reads."""
        return self.max_base + self.advance_lookback + self.atr_sessions + 11


RULES = VcpRules()
LOOKBACK = RULES.lookback
MAX_STORED = 8  # contractions kept per stock (more than max_contractions: to say "too many")
MAX_SWINGS = 48  # raw zigzag swings per stock and date

# why_not codes, in the order the rules are checked.
OK, NO_DATA, NO_BASE, NOT_STAGE2, NO_ADVANCE, TOO_FEW, TOO_MANY, FIRST_TOO_DEEP, NOT_TIGHTENING, \
    UNDER_CEILING, LAST_TOO_DEEP, NO_VOL_CONTRACTION, NO_DRYUP, EXTENDED = range(14)


@dataclass
class VcpInputs:
    """Panel-wide ingredients, computed once for all dates (all [n, T])."""

    high: np.ndarray  # NaN -> -inf
    low: np.ndarray  # NaN -> +inf
    close: np.ndarray  # forward-filled (at most 10 sessions)
    volume: np.ndarray
    atr_pct: np.ndarray  # simple ATR / close
    # Read at a few columns per date: computed there, not over the whole panel.
    sma150: ind.WindowMean
    sma200: ind.WindowMean
    vol_avg: ind.WindowMean  # mean volume over `volume_sessions`
    advance_low: np.ndarray  # lowest low of the `advance_lookback` sessions ending at t
    vol_cum: np.ndarray  # [n, T + 1] cumulative volume (NaN as 0) ...
    vol_cnt: np.ndarray  # ... and count of sessions with volume
    atr_cum: np.ndarray  # the same for atr_pct
    atr_cnt: np.ndarray


def prepare_inputs(high, low, close_ref, volume, rules: VcpRules = RULES) -> VcpInputs:
    prev = ind.lag(close_ref, 1)
    tr = ind.true_range(high, low, prev)
    with np.errstate(invalid="ignore", divide="ignore"):
        atr_pct = ind.sma(tr, rules.atr_sessions) / close_ref
    vol_cum, vol_cnt = _cumulative(volume)
    atr_cum, atr_cnt = _cumulative(atr_pct)
    close_sums = ind._cumsums(close_ref)
    return VcpInputs(
        high=np.where(np.isnan(high), -np.inf, high),
        low=np.where(np.isnan(low), np.inf, low),
        close=close_ref,
        volume=volume,
        atr_pct=atr_pct,
        sma150=ind.WindowMean(close_ref, 150, sums=close_sums),
        sma200=ind.WindowMean(close_ref, 200, sums=close_sums),
        vol_avg=ind.WindowMean(volume, rules.volume_sessions),
        advance_low=ind.rolling_min(low, rules.advance_lookback),
        vol_cum=vol_cum, vol_cnt=vol_cnt, atr_cum=atr_cum, atr_cnt=atr_cnt,
    )


def _cumulative(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n, T + 1] cumulative sums of x (NaN as 0) and of its valid counts."""
    zeros = np.zeros((x.shape[0], 1))
    return (np.concatenate([zeros, np.cumsum(np.nan_to_num(x, nan=0.0), axis=1)], axis=1),
            np.concatenate([zeros, np.cumsum(~np.isnan(x), axis=1)], axis=1))


def _span_mean(cum: np.ndarray, cnt: np.ndarray, rows: np.ndarray, a: np.ndarray,
               b: np.ndarray) -> np.ndarray:
    """Mean over columns (a, b] of each row (NaN when none is valid)."""
    s = cum[rows, b + 1] - cum[rows, a + 1]
    c = cnt[rows, b + 1] - cnt[rows, a + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


@dataclass
class VcpDay:
    """The detector's result for every stock at column ``d``; contraction arrays are
    [n, MAX_STORED] (NaN / -1 past each stock's count), columns are panel indices."""

    d: int
    code: np.ndarray  # why-not code (OK when detected)
    detected: np.ndarray
    base_col: np.ndarray  # column of the base high, -1 without a base
    base_high: np.ndarray
    advance: np.ndarray
    count: np.ndarray
    hi_col: np.ndarray
    hi: np.ndarray
    lo_col: np.ndarray
    lo: np.ndarray
    depth: np.ndarray
    vol_ratio: np.ndarray
    mean_ratio: np.ndarray
    max_ratio: np.ndarray
    last_depth: np.ndarray
    max_depth: np.ndarray
    dryup: np.ndarray
    atr_ratio: np.ndarray  # ATR% at d over its mean in the first contraction
    pivot: np.ndarray
    stop: np.ndarray
    close: np.ndarray
    breakout: np.ndarray
    extended: np.ndarray
    stage2_detail: dict[str, np.ndarray] = field(default_factory=dict)
    rules: VcpRules = RULES
    offset: int = 0  # columns are this many sessions after the caller's panel start

    @property
    def base_length(self) -> np.ndarray:
        """Sessions from the base high to the date (NaN without a base)."""
        return np.where(self.base_col >= 0, self.d - self.base_col, np.nan).astype(np.float64)

    @property
    def first_depth(self) -> np.ndarray:
        return self.depth[:, 0]

    @property
    def dist_to_pivot(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.close / self.pivot - 1.0

    def footprint(self, i: int) -> str | None:
        """Traders' notation, e.g. "18W 28/4 3T" (weeks, deepest/last depth %, contractions)."""
        k = int(self.count[i])
        if self.base_col[i] < 0 or k < 1:
            return None
        weeks = max(1, round((self.d - int(self.base_col[i])) / 5))
        return (f"{weeks}W {round(100 * float(self.max_depth[i]))}/"
                f"{round(100 * float(self.last_depth[i]))} {k}T")

    def why_not(self, i: int) -> str | None:
        """The first rule stock ``i`` fails, in words with its numbers (None for a setup)."""
        r, c = self.rules, int(self.code[i])
        if c == OK:
            return None
        if c == EXTENDED:  # a base with a pivot: the ratio is defined
            return (f"extended: the close is {100 * (self.close[i] / self.pivot[i] - 1):.1f}% "
                    f"above the pivot (more than {100 * r.max_extension:.0f}%)")
        k = int(self.count[i])
        depths = "/".join(f"{100 * x:.0f}" for x in self.depth[i, :min(k, MAX_STORED)])
        texts = {
            NO_DATA: "no data: too few sessions with prices to look for a base",
            NO_BASE: f"no base: the highest high of the last {r.max_base // 5} weeks is less "
                     f"than {r.min_base // 5} weeks old (at or near new highs)",
            NOT_STAGE2: "not in stage 2: " + self._stage2_text(i),
            NO_ADVANCE: f"prior advance {100 * self.advance[i]:.0f}% is below "
                        f"{100 * r.min_advance:.0f}%",
            TOO_FEW: "one contraction only: the base has not tightened yet",
            TOO_MANY: f"{k} contractions: more than {r.max_contractions} is a sloppy base",
            FIRST_TOO_DEEP: f"first contraction {100 * self.depth[i, 0]:.0f}% is deeper than "
                            f"{100 * r.max_first_depth:.0f}%",
            NOT_TIGHTENING: f"contractions do not tighten: {depths}% (the last at most "
                            f"{r.max_ratio:.2f} of the deepest before it, none deeper than "
                            f"{r.max_ratio + r.ratio_tolerance:.2f} of it)",
            UNDER_CEILING: f"contraction highs fall more than {100 * r.ceiling:.0f}% below the "
                           "base high",
            LAST_TOO_DEEP: f"last contraction {100 * self.last_depth[i]:.1f}% is deeper than "
                           f"{100 * r.max_last_depth:.0f}%",
            NO_VOL_CONTRACTION: f"volatility has not contracted: ATR is "
                                f"{100 * self.atr_ratio[i]:.0f}% of its mean in the first "
                                f"contraction (at most {100 * r.max_atr_ratio:.0f}%)",
            NO_DRYUP: f"no volume dry-up: the last contraction trades "
                      f"{100 * self.dryup[i]:.0f}% of the 50-day average volume (at most "
                      f"{100 * r.max_dryup:.0f}%)",
        }
        return texts[c]

    def _stage2_text(self, i: int) -> str:
        parts = {
            "above_sma150": "the close is below the 150-day average",
            "above_sma200": "the close is below the 200-day average",
            "sma150_rising": "the 150-day average is not rising",
            "sma200_rising": "the 200-day average is not rising",
        }
        failed = [text for key, text in parts.items() if not self.stage2_detail[key][i]]
        return "; ".join(failed) or "moving averages undefined"

    def setup(self, i: int, dates: np.ndarray | None = None) -> dict[str, Any] | None:
        """The structured setup of stock ``i`` (None when not detected). With ``dates`` (the
        panel's session dates) columns become dates."""
        if not self.detected[i]:
            return None
        k = int(self.count[i])

        def when(col: int):
            return col + self.offset if dates is None else dates[col + self.offset].astype(object)

        pivot, stop = float(self.pivot[i]), float(self.stop[i])
        return {
            "footprint": self.footprint(i),
            "base_start": when(int(self.base_col[i])),
            "base_sessions": int(self.d - self.base_col[i]),
            "base_high": float(self.base_high[i]),
            "prior_advance": float(self.advance[i]),
            "contractions": [
                {"high_date": when(int(self.hi_col[i, j])), "high": float(self.hi[i, j]),
                 "low_date": when(int(self.lo_col[i, j])), "low": float(self.lo[i, j]),
                 "depth": float(self.depth[i, j]), "volume_ratio": _num(self.vol_ratio[i, j])}
                for j in range(k)
            ],
            "pivot": pivot,
            "stop": stop,
            "risk_pct": float(1.0 - stop / pivot),
            "volume_dryup": _num(self.dryup[i]),
            "breakout": bool(self.breakout[i]),
            "extended": bool(self.extended[i]),
        }


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _swings(inp: VcpInputs, rows: np.ndarray, start: np.ndarray, d: int, rules: VcpRules):
    """Raw swings of `rows` from their base high (column `start`) to d: a zigzag whose
    reversal threshold scales with volatility. Segment j runs from swing high j to the next
    one and holds its lowest low; the last runs to d (in progress).

    Returns per row: the number of segments and [m, MAX_SWINGS] arrays hi_col, hi, lo_col, lo.
    """
    m = len(rows)
    hi_col = np.full((m, MAX_SWINGS), -1, dtype=np.int64)
    lo_col = np.full((m, MAX_SWINGS), -1, dtype=np.int64)
    hi = np.full((m, MAX_SWINGS), np.nan)
    lo = np.full((m, MAX_SWINGS), np.nan)
    done = np.zeros(m, dtype=np.int64)
    c_hi = inp.high[rows, start].copy()
    c_hi_col = start.copy()
    c_lo = np.full(m, np.inf)
    c_lo_col = start.copy()
    up = np.zeros(m, dtype=bool)
    run_hi = np.full(m, -np.inf)
    run_hi_col = start.copy()
    ar = np.arange(m)
    for t in range(int(start.min()) + 1, d + 1):
        h, lw = inp.high[rows, t], inp.low[rows, t]
        thr = np.fmax(rules.zigzag_atr * inp.atr_pct[rows, t], rules.zigzag_min)
        live = (t > start) & np.isfinite(h)
        # Falling: track the segment's low; a rally of `thr` from it turns the zigzag up.
        dn = live & ~up
        new_low = dn & (lw < c_lo)
        c_lo[new_low], c_lo_col[new_low] = lw[new_low], t
        turn = dn & (h >= c_lo * (1 + thr))
        up[turn], run_hi[turn], run_hi_col[turn] = True, h[turn], t
        # Rallying: a fall of `thr` from the rally's high confirms a swing high there.
        rise = live & up & ~turn
        new_hi = rise & (h > run_hi)
        run_hi[new_hi], run_hi_col[new_hi] = h[new_hi], t
        fall = rise & ((lw <= run_hi * (1 - thr)) | (lw < c_lo))
        if fall.any():
            f = ar[fall]
            slot = np.minimum(done[f], MAX_SWINGS - 1)
            hi_col[f, slot], hi[f, slot] = c_hi_col[f], c_hi[f]
            lo_col[f, slot], lo[f, slot] = c_lo_col[f], c_lo[f]
            done[f] += 1
            c_hi[f], c_hi_col[f] = run_hi[f], run_hi_col[f]
            c_lo[f], c_lo_col[f] = lw[f], t
            up[f] = False
    slot = np.minimum(done, MAX_SWINGS - 1)
    hi_col[ar, slot], hi[ar, slot] = c_hi_col, c_hi
    has_low = np.isfinite(c_lo)
    lo_col[ar, slot] = np.where(has_low, c_lo_col, -1)
    lo[ar, slot] = np.where(has_low, c_lo, np.nan)
    return done + 1, hi_col, hi, lo_col, lo


def _contractions(n_seg, hi_col, hi, lo_col, lo, rules: VcpRules):
    """Contractions from raw swings: the right side tightens under a ceiling, so a contraction
    starts only at a swing high that no later swing high exceeds (by more than
    `high_tolerance`); lower swing highs are wiggles inside a decline or a recovery. The base
    high always starts the first. Returns count and [m, MAX_STORED] hi_col, hi, lo_col, lo."""
    m, s = hi.shape
    real = np.arange(s)[None, :] < np.minimum(n_seg, s)[:, None]
    h = np.where(real, hi, -np.inf)
    # Highest swing high after each one (right to left).
    later = np.full((m, s), -np.inf)
    later[:, :-1] = np.maximum.accumulate(h[:, ::-1], axis=1)[:, ::-1][:, 1:]
    record = real & (h * (1 + rules.high_tolerance) >= later)
    # ... and that wins back at least `min_recovery` of the decline before it (a lower high
    # inside a decline is a bounce, not a new contraction).
    keep = np.zeros((m, s), dtype=bool)
    keep[:, 0] = real[:, 0]
    cur_hi, cur_lo = hi[:, 0].copy(), np.where(real[:, 0], lo[:, 0], np.inf)
    for j in range(1, s):
        with np.errstate(invalid="ignore"):
            new = record[:, j] & (hi[:, j] >= cur_lo + rules.min_recovery * (cur_hi - cur_lo))
        keep[:, j] = new
        cur_hi = np.where(new, hi[:, j], cur_hi)
        lo_j = np.where(real[:, j], lo[:, j], np.inf)
        cur_lo = np.where(new, lo_j, np.fmin(cur_lo, lo_j))
    group = np.cumsum(keep, axis=1) - 1  # contraction index of every raw segment
    count = keep.sum(axis=1)
    out_hi_col = np.full((m, MAX_STORED), -1, dtype=np.int64)
    out_lo_col = np.full((m, MAX_STORED), -1, dtype=np.int64)
    out_hi = np.full((m, MAX_STORED), np.nan)
    out_lo = np.full((m, MAX_STORED), np.nan)
    lows = np.where(real, lo, np.inf)
    rows_k, cols_k = np.nonzero(keep & (group < MAX_STORED))
    out_hi_col[rows_k, group[rows_k, cols_k]] = hi_col[rows_k, cols_k]
    out_hi[rows_k, group[rows_k, cols_k]] = hi[rows_k, cols_k]
    for k in range(MAX_STORED):
        in_k = real & (group == k)
        if not in_k.any():
            break
        g_low = np.where(in_k, lows, np.inf)
        j = g_low.argmin(axis=1)
        r = np.arange(m)
        has = in_k.any(axis=1) & np.isfinite(g_low[r, j])
        out_lo[has, k] = lows[r[has], j[has]]
        out_lo_col[has, k] = lo_col[r[has], j[has]]
    return _merge_flat_dips(count, out_hi_col, out_hi, out_lo_col, out_lo, rules)


def _merge_flat_dips(count, hi_col, hi, lo_col, lo, rules: VcpRules):
    """A dip less than half as deep as the decline that follows it from the same ceiling (the
    next high within `high_tolerance`) is that decline's prelude, not a contraction."""
    for _ in range(MAX_STORED - 1):
        with np.errstate(invalid="ignore", divide="ignore"):
            depth = 1.0 - lo / hi
            flat = hi[:, 1:] >= hi[:, :-1] * (1 - rules.high_tolerance)
            merge = flat & (depth[:, :-1] < rules.prelude * depth[:, 1:])
        merge &= np.arange(MAX_STORED - 1)[None, :] < (np.minimum(count, MAX_STORED) - 1)[:, None]
        rows = np.flatnonzero(merge.any(axis=1))
        if not len(rows):
            break
        k = merge[rows].argmax(axis=1)  # the first such pair in each row
        top = np.where(hi[rows, k + 1] > hi[rows, k], k + 1, k)
        hi_col[rows, k], hi[rows, k] = hi_col[rows, top], hi[rows, top]
        lower = lo[rows, k + 1] < lo[rows, k]
        lo_col[rows, k] = np.where(lower, lo_col[rows, k + 1], lo_col[rows, k])
        lo[rows, k] = np.fmin(lo[rows, k], lo[rows, k + 1])
        for a in (hi_col, hi, lo_col, lo):  # shift the rest left by one
            for r, kk in zip(rows, k, strict=True):
                a[r, kk + 1:-1] = a[r, kk + 2:]
                a[r, -1] = -1 if a.dtype.kind == "i" else np.nan
        count[rows] -= 1
    return count, hi_col, hi, lo_col, lo


def vcp_day(inp: VcpInputs, d: int, rules: VcpRules = RULES,
            eligible: np.ndarray | None = None) -> VcpDay:
    """The detector at panel column ``d`` for every stock (reads columns <= d only).

    ``eligible`` [n] bool limits the zigzag to those rows (others get NO_DATA)."""
    n = inp.high.shape[0]
    rows = np.arange(n)
    a = max(0, d - rules.max_base + 1)
    window = inp.high[:, a:d + 1]
    # The base follows the latest advance: its high is the highest high since the lowest low
    # of the window (an older, higher peak belongs to an earlier cycle).
    low_col = inp.low[:, a:d + 1].argmin(axis=1)
    after_low = np.where(np.arange(d + 1 - a)[None, :] >= low_col[:, None], window, -np.inf)
    h0 = after_low.argmax(axis=1)
    top = after_low[rows, h0]
    # A fresh high at most `flat_top` above an older one is a flat top, not a new base.
    with np.errstate(invalid="ignore"):
        near_top = after_low >= (top * (1 - rules.flat_top))[:, None]
    first_near = near_top.argmax(axis=1)
    h0 = np.where(d - a - h0 < rules.min_base, first_near, h0) + a
    base_high = inp.high[rows, h0]
    close = inp.close[:, d]
    has_data = np.isfinite(base_high) & np.isfinite(close)
    if eligible is not None:
        has_data &= eligible
    has_base = has_data & (d - h0 >= rules.min_base)
    lag = max(d - rules.slope_lag, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        stage = {
            "above_sma150": close > inp.sma150[:, d],
            "above_sma200": close > inp.sma200[:, d],
            "sma150_rising": inp.sma150[:, d] > inp.sma150[:, lag],
            "sma200_rising": inp.sma200[:, d] > inp.sma200[:, lag],
        }
        stage2 = np.logical_and.reduce(list(stage.values()))
        advance = np.where(has_base, base_high / inp.advance_low[rows, h0] - 1.0, np.nan)
    candidate = has_base & stage2 & (advance >= rules.min_advance)

    count = np.zeros(n, dtype=np.int64)
    hi_col = np.full((n, MAX_STORED), -1, dtype=np.int64)
    lo_col = np.full((n, MAX_STORED), -1, dtype=np.int64)
    hi = np.full((n, MAX_STORED), np.nan)
    lo = np.full((n, MAX_STORED), np.nan)
    cand = np.flatnonzero(candidate)
    if len(cand):
        n_seg, s_hi_col, s_hi, s_lo_col, s_lo = _swings(inp, cand, h0[cand], d, rules)
        count[cand], hi_col[cand], hi[cand], lo_col[cand], lo[cand] = _contractions(
            n_seg, s_hi_col, s_hi, s_lo_col, s_lo, rules)
    kept = np.minimum(count, MAX_STORED)
    slots = np.arange(MAX_STORED)[None, :]
    real = slots < kept[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = np.where(real, 1.0 - lo / hi, np.nan)
        ratios = depth[:, 1:] / depth[:, :-1]
    last = np.maximum(kept - 1, 0)
    last_depth = np.where(count > 0, depth[rows, last], np.nan)
    pivot = np.where(count > 0, hi[rows, last], np.nan)
    # The trade's initial stop: the last contraction's low, or MAX_LOSS below the pivot when
    # that is closer (features/labels.py caps the risk of a fill the same way).
    stop = np.where(count > 0, np.fmax(lo[rows, last], pivot * (1.0 - MAX_LOSS)), np.nan)
    pair_ok = np.isfinite(ratios)
    deepest_before = np.maximum.accumulate(np.where(real, depth, -np.inf), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_ratio = np.where(pair_ok.any(axis=1),
                              np.nansum(np.where(pair_ok, ratios, 0), axis=1)
                              / np.maximum(pair_ok.sum(axis=1), 1), np.nan)
        # Each contraction against the deepest one before it (a tight one always passes).
        vs_deepest = np.where(real[:, 1:], np.where(
            depth[:, 1:] <= rules.tight, 0.0, depth[:, 1:] / deepest_before[:, :-1]), np.nan)
        max_ratio = np.where(pair_ok.any(axis=1),
                             np.nanmax(np.where(np.isfinite(vs_deepest), vs_deepest, -np.inf),
                                       axis=1), np.nan)
        last_ratio = np.where(count > 1, vs_deepest[rows, np.maximum(last - 1, 0)], np.nan)
        max_depth = np.where(count > 0, np.nanmax(np.where(real, depth, -np.inf), axis=1),
                             np.nan)
        # ATR now against its mean over the first contraction (from the base high to the
        # second contraction's high, or to d).
        first_end = np.where(kept > 1, hi_col[:, 1], d)
        first_atr = _span_mean(inp.atr_cum, inp.atr_cnt, rows, h0, np.maximum(first_end, h0))
        atr_ratio = np.where(count > 0, inp.atr_pct[:, d] / first_atr, np.nan)

    # Volume: each contraction's mean over its sessions vs the 50-day average at its end. The
    # last one ends the session before d: today's volume is the breakout's, not the base's.
    vol_ratio = np.full((n, MAX_STORED), np.nan)
    for j in range(MAX_STORED):
        have = np.flatnonzero(real[:, j])
        if not len(have):
            break
        a_col = hi_col[have, j]
        nxt = np.where(j + 1 < kept[have], hi_col[have, min(j + 1, MAX_STORED - 1)],
                       np.minimum(np.maximum(d - 1, a_col + 1), d))
        with np.errstate(invalid="ignore", divide="ignore"):
            vol_ratio[have, j] = (_span_mean(inp.vol_cum, inp.vol_cnt, have, a_col, nxt)
                                  / inp.vol_avg[have, nxt])
    dryup = np.where(count > 0, vol_ratio[rows, last], np.nan)

    with np.errstate(invalid="ignore", divide="ignore"):
        extended = close > pivot * (1 + rules.max_extension)
        breakout = (close > pivot) & ~extended & (
            inp.volume[:, d] >= rules.breakout_volume * inp.vol_avg[:, d])
        ceiling_ok = np.all(~real | (hi >= base_high[:, None] * (1 - rules.ceiling)), axis=1)
        checks = [
            (NO_DATA, has_data),
            (NO_BASE, has_base),
            (NOT_STAGE2, stage2),
            (NO_ADVANCE, advance >= rules.min_advance),
            (TOO_FEW, count >= rules.min_contractions),
            (TOO_MANY, count <= rules.max_contractions),
            (FIRST_TOO_DEEP, depth[:, 0] <= rules.max_first_depth),
            (NOT_TIGHTENING, (last_ratio <= rules.max_ratio)
             & (max_ratio <= rules.max_ratio + rules.ratio_tolerance)),
            (UNDER_CEILING, ceiling_ok),
            (LAST_TOO_DEEP, last_depth <= rules.max_last_depth),
            (NO_VOL_CONTRACTION, atr_ratio <= rules.max_atr_ratio),
            (NO_DRYUP, dryup <= rules.max_dryup),
            (EXTENDED, ~extended),
        ]
    code = np.full(n, OK, dtype=np.int8)
    for c, ok in reversed(checks):  # the first failing rule wins
        code[~ok] = c
    return VcpDay(
        d=d, code=code, detected=code == OK, base_col=np.where(has_base, h0, -1),
        base_high=np.where(has_base, base_high, np.nan), advance=advance, count=count,
        hi_col=hi_col, hi=hi, lo_col=lo_col, lo=lo, depth=depth, vol_ratio=vol_ratio,
        mean_ratio=mean_ratio, max_ratio=max_ratio, last_depth=last_depth, max_depth=max_depth,
        dryup=dryup, atr_ratio=atr_ratio, pivot=pivot, stop=stop, close=close, breakout=breakout,
        extended=extended, stage2_detail=stage, rules=rules,
    )


def detect(high, low, close, volume, d: int | None = None, rules: VcpRules = RULES) -> VcpDay:
    """The detector on [n, T] arrays at column ``d`` (default: the last)."""
    high, low, close, volume = (np.atleast_2d(np.asarray(x, dtype=np.float64))
                                for x in (high, low, close, volume))
    inp = prepare_inputs(high, low, ind.ffill(close, 10), volume, rules)
    return vcp_day(inp, high.shape[1] - 1 if d is None else d, rules)
