"""Benchmark and honesty checks of the simulated demo market.

    python benchmarks/bench_simulator.py [--build] [--runs 3] [--store PATH]

`--build` times `data demo` (11,000 stocks) into a temp folder, each run under
`/usr/bin/time -v` for its peak RSS. Then, on the store (default: the configured one, which
must be simulated), it prints:

* the fingerprint: ROC-AUC of a gradient-boosted classifier on generic statistics (std/ATR,
  range, kurtosis, volume autocorrelation, gap std) telling stock-days inside planted
  structures from the rest, on held-out stocks (0.5 = no tell);
* daily-return volatility after breakouts over before the base, successes and failures;
* the oracle's ceiling: per-day precision@10 and ROC-AUC among live planted setups over the
  last 20% of sessions (the simulator's true probability of each breakout trade);
* the stylized facts in the README's comparison table.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from market.sim.checks import (  # noqa: E402
    SimData,
    fingerprint_auc,
    oracle_ceiling,
    post_breakout_vol,
    stylized_facts,
)
from market.store import MarketStore  # noqa: E402
from vcp.settings import startup_settings  # noqa: E402


def _build(runs: int) -> None:
    times, rss = [], []
    timer = shutil.which("time") or "/usr/bin/time"
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "vcp", "data", "demo", "--db", f"{tmp}/m.duckdb"]
            if Path(timer).exists():
                cmd = [timer, "-v", *cmd]
            start = time.perf_counter()
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
            if m:
                rss.append(int(m.group(1)) / 1024**2)
    print(f"data demo (11,000 stocks): median {statistics.median(times):.1f} s over {runs} runs "
          f"{[round(t, 1) for t in times]}")
    if rss:
        print(f"  peak RSS: median {statistics.median(rss):.2f} GB {[round(r, 2) for r in rss]}")


def trend_template_share(store: MarketStore, dates: int = 10) -> tuple[float, float, float]:
    """Share of scoreable stocks passing all 8 Trend Template criteria, on `dates` sessions
    spread over the last 60% of the store: (median, min, max)."""
    from features import FEATURES, compute_features_at
    from features.vector import HISTORY_WINDOW

    cal = store.calendar()
    tt = FEATURES.index("trend_template_count")
    shares = []
    for i in np.linspace(int(len(cal) * 0.4), len(cal) - 1, dates).astype(int):
        panel = store.load_panel(cal[i].astype(object), HISTORY_WINDOW)
        res = compute_features_at(panel.open, panel.high, panel.low, panel.close, panel.volume)
        shares.append(float(np.mean(res.values[res.scoreable, tt] == 8)))
    return float(np.median(shares)), min(shares), max(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", action="store_true", help="time `data demo` first")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()
    if args.build:
        _build(args.runs)
    store = MarketStore(args.store or startup_settings().market_db_path())
    if store.get_meta().get("source") != "simulated":
        sys.exit(f"{store.path} is not a simulated store: these checks need its planted side table")
    start = time.perf_counter()
    data = SimData.load(store)
    n, t = data.panel.close.shape
    print(f"store {store.path}: {n:,} stocks x {t} sessions, "
          f"{len(data.episodes):,} planted structures ({time.perf_counter() - start:.1f} s)")
    fp = fingerprint_auc(data)
    print(f"fingerprint ROC-AUC (generic statistics, held-out stocks): {fp['roc_auc']:.4f} "
          f"on {fp['rows']:,.0f} stock-days, {fp['structure_share']:.1%} inside structures")
    pv = post_breakout_vol(data)
    print(f"volatility after breakout / before base (median): successes {pv['success']:.3f} "
          f"(n={pv['n_success']:.0f}), failures {pv['failure']:.3f} (n={pv['n_failure']:.0f})")
    oc = oracle_ceiling(data)
    print(f"oracle ceiling, last 20% of sessions: precision@10 {oc['precision_at_10']:.3f}, "
          f"ROC-AUC {oc['roc_auc']:.4f} ({oc['rows']:,.0f} live setup-days over "
          f"{oc['days']:.0f} days, {oc['mean_live_per_day']:.1f} a day, "
          f"base rate {oc['base_rate']:.3f})")
    facts = stylized_facts(data.panel)
    print("stylized facts (medians across stocks):")
    for key, value in facts.items():
        print(f"  {key}: {value:.4f}")
    med, lo, hi = trend_template_share(store)
    print(f"  share passing all 8 Trend Template criteria on a day: median {med:.3f} "
          f"(range {lo:.3f}-{hi:.3f} over 10 sessions)")


if __name__ == "__main__":
    main()
