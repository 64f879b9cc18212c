"""Benchmark features: one date (the HISTORY_WINDOW-session panel) and all dates (full history).

Usage:
    python benchmarks/bench_features.py             # demo market store (synthetic if missing)
    python benchmarks/bench_features.py --synthetic [--stocks 11000 --days 780]

Prints the median wall time of 3 runs for each path and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from features import compute_features_all, compute_features_at  # noqa: E402
from features.vector import HISTORY_WINDOW  # noqa: E402

FIELDS = ("open", "high", "low", "close", "volume")


def synthetic_panel(n: int, t: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Random-walk OHLCV with ~3% missing bars and some late listings."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, (n, t)), axis=1))
    open_ = close * np.exp(rng.normal(0.0, 0.006, (n, t)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.01, (n, t))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.01, (n, t))))
    volume = rng.lognormal(11.0, 1.0, (n, t))
    missing = rng.random((n, t)) < 0.03
    listing = rng.integers(0, t // 2, n) * (rng.random(n) < 0.2)
    missing |= np.arange(t)[None, :] < listing[:, None]
    out = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    for a in out.values():
        a[missing] = np.nan
    return out


def store_panels():
    """(features-window panel, full panel) from the demo store, or None if there is no store."""
    try:
        from market.store import MarketStore
        from vcp.settings import load_settings
    except ImportError:
        return None
    path = load_settings().market_db_path
    if not Path(path).exists():
        return None
    store = MarketStore(path)
    one = store.load_panel(as_of=None, lookback=HISTORY_WINDOW)
    full = store.load_panel(as_of=None, lookback=100000)
    return ({f: getattr(one, f) for f in FIELDS}, {f: getattr(full, f) for f in FIELDS})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def timed(fn, runs: int) -> tuple[float, object]:
    """Median wall time of ``runs`` calls (each run's time is printed) and the last result."""
    times, out = [], None
    for _ in range(runs):
        out = None  # drop the previous result so peak RSS reflects one run
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    print("           runs: " + ", ".join(f"{x:.3f}" for x in times) + " s")
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true", help="random panel instead of the store")
    ap.add_argument("--stocks", type=int, default=11000)
    ap.add_argument("--days", type=int, default=780)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = ap.parse_args()

    panels = None if args.synthetic else store_panels()
    if panels is None:
        if not args.synthetic:
            print("market store not found: using a synthetic panel (--synthetic)")
        full = synthetic_panel(args.stocks, args.days)
        one = {f: a[:, -HISTORY_WINDOW:] for f, a in full.items()}
        source = f"synthetic {args.stocks} x {args.days}"
    else:
        one, full = panels
        source = "market store"
    n, t = full["close"].shape
    print(f"source: {source}; one-date panel {one['close'].shape}, full panel {(n, t)}")

    sec, res = timed(lambda: compute_features_at(*(one[f] for f in FIELDS)), args.runs)
    scoreable = int(res.scoreable.sum())
    detected = int(res.vcp.detected.sum())
    print(f"one date : median {sec:.3f} s  ({scoreable} scoreable, {detected} VCP detected)")
    print(f"           peak RSS so far {peak_rss_mb():.0f} MB")

    dtype = np.float32 if args.dtype == "float32" else np.float64
    sec, res = timed(
        lambda: compute_features_all(*(full[f] for f in FIELDS), dtype=dtype), args.runs
    )
    print(f"all dates: median {sec:.3f} s  ({t} dates, {res.values.nbytes / 2**20:.0f} MB output)")
    print(f"           peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
