"""Benchmark: the VCP detector against the simulator's planted episodes, beside the detector of
before issue 11 and a PKScreener-style rule.

    python benchmarks/bench_detector.py [--store PATH] [--charts DIR] [--step 1]

On a simulated store, for every session from the 300th on (features need the history):

* recall: the share of planted VCP episodes flagged on at least one of the 5 sessions before
  their breakout (the first close above the pivot within 10 sessions of the base's end; the
  base's last 5 sessions when there was none);
* precision: the share of flagged stock-days inside a planted VCP base (from its start to 10
  sessions after its end);
* flags per day among stocks with no planted structure at all, as a share of them;
* setups per day (all stocks).

The PKScreener-style rule (PKScreener's `validateVCP`, as read in its source): the 4 latest
swing highs (a high above the 3 sessions either side, confirmed 3 sessions later) all within 3%
of the highest of them, the lows between them rising, the close within 20% of the 52-week high,
below the highest top and above the highest of those lows.

`--charts DIR` writes PNG charts of 12 random detections and 12 random planted episodes the
detector missed (candles, volume, shaded contractions, pivot and stop).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baselines import legacy_vcp  # noqa: E402
from features import indicators as ind  # noqa: E402
from features.vcp import prepare_inputs, vcp_day  # noqa: E402
from market.sim.checks import SimData  # noqa: E402
from market.store import MarketStore  # noqa: E402
from vcp.settings import startup_settings  # noqa: E402

FIRST_COL = 300
GOALS = {"recall": ">= 0.80", "precision": ">= 0.60", "free flags/day": "<= 0.5%"}


def new_detector(data: SimData, cols: np.ndarray) -> tuple[np.ndarray, dict[int, object]]:
    p = data.panel
    inp = prepare_inputs(p.high, p.low, ind.ffill(p.close, 10), p.volume)
    flags = np.zeros(p.close.shape, dtype=bool)
    days = {}
    for d in cols:
        day = vcp_day(inp, int(d))
        flags[:, d] = day.detected
        days[int(d)] = day
    return flags, days


def legacy_detector(data: SimData, cols: np.ndarray) -> np.ndarray:
    p = data.panel
    inp = legacy_vcp.prepare_vcp_inputs(p.high, p.low, ind.ffill(p.close, 10), p.volume)
    flags = np.zeros(p.close.shape, dtype=bool)
    for d in cols:
        flags[:, d] = legacy_vcp.vcp_at(inp, int(d)).detected
    return flags


def pkscreener_rule(data: SimData, cols: np.ndarray, order: int = 3, tops: int = 4,
                    flat: float = 0.03, near_high: float = 0.20) -> np.ndarray:
    """Flat tops and rising lows, vectorized over stocks and dates (no look-ahead)."""
    p = data.panel
    high = np.where(np.isnan(p.high), -np.inf, p.high)
    low = np.where(np.isnan(p.low), np.inf, p.low)
    close = ind.ffill(p.close, 10)
    n, t = high.shape
    from scipy.ndimage import maximum_filter1d

    around = maximum_filter1d(high, 2 * order + 1, axis=1, mode="constant", cval=-np.inf)
    is_top = np.isfinite(high) & (high >= around)
    count = np.cumsum(is_top, axis=1)  # tops up to each column
    max_tops = int(count[:, -1].max()) if t else 0
    pos = np.full((n, max_tops + 1), -1, dtype=np.int64)
    seg_low = np.full((n, max_tops + 1), np.nan)
    for i in range(n):  # positions of each stock's tops and the lowest low after each one
        where = np.flatnonzero(is_top[i])
        pos[i, :len(where)] = where
        if len(where) > 1:
            seg_low[i, :len(where) - 1] = np.minimum.reduceat(low[i], where)[:-1]
    high52 = ind.rolling_max(p.high, 252)
    flags = np.zeros((n, t), dtype=bool)
    rows = np.arange(n)
    for d in cols:
        c = count[:, d - order]  # tops confirmed by d
        ok = c >= tops
        k = np.maximum(c - tops, 0)
        idx = k[:, None] + np.arange(tops)[None, :]
        tp = pos[rows[:, None], idx]
        th = np.where(tp >= 0, high[rows[:, None], np.maximum(tp, 0)], np.nan)
        lows = seg_low[rows[:, None], idx[:, :-1]]
        top = np.nanmax(np.where(np.isfinite(th), th, -np.inf), axis=1)
        with np.errstate(invalid="ignore"):
            flags[:, d] = (ok & (tp[:, 0] >= d - 250)
                           & np.all(th >= top[:, None] * (1 - flat), axis=1)
                           & np.all(np.diff(lows, axis=1) > 0, axis=1)
                           & (close[:, d] >= (1 - near_high) * high52[:, d])
                           & (close[:, d] < top) & (close[:, d] > np.nanmax(lows, axis=1)))
    return flags


def score(data: SimData, flags: np.ndarray, cols: np.ndarray) -> dict[str, float]:
    eps = data.episodes
    n, t = flags.shape
    rows = data.row(eps["isin"])
    ready = data.col(eps["ready_date"])
    breakout = data.col(eps["breakout_date"])
    base = data.col(eps["base_start_date"])
    inside = np.zeros((n, t), dtype=bool)
    planted = np.zeros(n, dtype=bool)
    planted[rows] = True
    hits = []
    for k in range(len(eps)):
        if eps["kind"].iat[k] != "vcp" or ready[k] < 0:
            continue
        inside[rows[k], base[k]:min(ready[k] + 11, t)] = True
        if not FIRST_COL + 10 <= ready[k] < t - 1:
            continue
        end = breakout[k] - 1 if breakout[k] >= 0 else ready[k]
        hits.append(flags[rows[k], max(end - 4, 0):end + 1].any())
    f = flags[:, cols]
    listed = np.isfinite(data.panel.close[:, cols])
    free_share = f[~planted].sum(axis=0) / np.maximum(listed[~planted].sum(axis=0), 1)
    return {
        "recall": float(np.mean(hits)),
        "episodes": float(len(hits)),
        "precision": float(inside[:, cols][f].mean()) if f.any() else float("nan"),
        "free flags/day": float(free_share.mean()),
        "setups/day": float(f.sum(axis=0).mean()),
    }


def charts(data: SimData, flags: np.ndarray, days: dict, folder: Path, seed: int = 0) -> None:
    """PNG charts of 12 random detections and 12 random missed planted episodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    p = data.panel
    rows_, cols_ = np.nonzero(flags)
    picks = [("detected", int(rows_[j]), int(cols_[j]))
             for j in rng.choice(len(rows_), min(12, len(rows_)), replace=False)]
    eps = data.episodes
    er, ready, bo = data.row(eps["isin"]), data.col(eps["ready_date"]), data.col(
        eps["breakout_date"])
    missed = []
    for k in range(len(eps)):
        if eps["kind"].iat[k] == "vcp" and FIRST_COL + 10 <= ready[k] < p.close.shape[1] - 1:
            end = bo[k] - 1 if bo[k] >= 0 else ready[k]
            if not flags[er[k], end - 4:end + 1].any():
                missed.append(("missed", int(er[k]), int(end)))
    picks += [missed[j] for j in rng.choice(len(missed), min(12, len(missed)), replace=False)]
    for n, (what, i, d) in enumerate(picks):
        day = days.get(d)
        a = max(0, int(day.base_col[i]) - 30) if day is not None and day.base_col[i] >= 0 \
            else d - 150
        x = np.arange(a, d + 1)
        fig, (ax, axv) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
        up = p.close[i, x] >= p.open[i, x]
        ax.vlines(x, p.low[i, x], p.high[i, x], color="0.4", lw=0.7)
        ax.bar(x, np.abs(p.close[i, x] - p.open[i, x]), bottom=np.fmin(p.open[i, x],
               p.close[i, x]), color=np.where(up, "tab:green", "tab:red"), width=0.7)
        axv.bar(x, p.volume[i, x], color="0.5", width=0.7)
        title = f"{what}: {p.isins[i]} at {p.dates[d]}"
        if day is not None:
            for j in range(min(int(day.count[i]), 8)):
                h0, l0 = int(day.hi_col[i, j]), int(day.lo_col[i, j])
                if h0 >= 0 and l0 >= 0:
                    ax.axvspan(h0, l0, color="tab:blue", alpha=0.12)
                    ax.text(l0, day.lo[i, j], f"{100 * day.depth[i, j]:.0f}%", fontsize=8)
            if np.isfinite(day.pivot[i]):
                ax.axhline(day.pivot[i], color="tab:orange", lw=1, label="pivot")
                ax.axhline(day.stop[i], color="tab:red", lw=1, ls="--", label="stop")
            title += f" | {day.footprint(i) or ''} | {day.why_not(i) or 'setup'}"
        ax.set_title(title[:140], fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / f"{n:02d}_{what}_{p.isins[i]}_{p.dates[d]}.png", dpi=80)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--charts", type=Path, default=None)
    parser.add_argument("--step", type=int, default=1, help="evaluate every k-th session")
    args = parser.parse_args()
    store = MarketStore(args.store or startup_settings().market_db_path())
    if store.get_meta().get("source") != "simulated":
        sys.exit(f"{store.path} is not a simulated store: the benchmark needs planted episodes")
    data = SimData.load(store)
    n, t = data.panel.close.shape
    cols = np.arange(FIRST_COL, t, args.step)
    print(f"store {store.path}: {n:,} stocks x {t} sessions, evaluating {len(cols)} sessions")
    results = {}
    start = time.perf_counter()
    flags, days = new_detector(data, cols)
    seconds = time.perf_counter() - start
    results["detector (features/vcp.py)"] = score(data, flags, cols)
    print(f"  new detector: {1000 * seconds / len(cols):.0f} ms per session for {n:,} stocks")
    results["detector before issue 11"] = score(data, legacy_detector(data, cols), cols)
    results["PKScreener-style rule"] = score(data, pkscreener_rule(data, cols), cols)
    keys = ["recall", "precision", "free flags/day", "setups/day"]
    print(f"{'':30s}" + "".join(f"{k:>16s}" for k in keys))
    for name, r in results.items():
        cells = [f"{r[k]:.3f}" if k != "free flags/day" else f"{100 * r[k]:.2f}%" for k in keys]
        print(f"{name:30s}" + "".join(f"{c:>16s}" for c in cells))
    print(f"{'goal':30s}" + "".join(f"{GOALS.get(k, ''):>16s}" for k in keys))
    print(f"({results['detector (features/vcp.py)']['episodes']:.0f} planted VCP episodes)")
    if args.charts:
        charts(data, flags, days, args.charts)
        print(f"charts in {args.charts}")


if __name__ == "__main__":
    main()
