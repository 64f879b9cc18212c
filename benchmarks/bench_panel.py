"""Benchmark: load_panel(latest, 400) on the market store; optionally the demo build itself.

    python benchmarks/bench_panel.py [--runs 5] [--build]

Prints the median wall time of each; `--build` times `data demo` for 11,000 stocks into a
temp folder (3 runs) so the store in use is not touched.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from market.store import MarketStore  # noqa: E402
from vcp.settings import startup_settings  # noqa: E402

SETTINGS = startup_settings()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lookback", type=int, default=400)
    parser.add_argument("--build", action="store_true", help="also time `data demo` (3 runs)")
    args = parser.parse_args()

    if args.build:
        times = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "vcp", "data", "demo", "--db", f"{tmp}/m.duckdb"],
                    check=True, capture_output=True,
                )
                times.append(time.perf_counter() - start)
        print(f"data demo (11,000 stocks): median {statistics.median(times):.1f} s "
              f"over {len(times)} runs {[round(t, 1) for t in times]}")

    store = MarketStore(SETTINGS.market_db_path)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        panel = store.load_panel(None, args.lookback)
        times.append(time.perf_counter() - start)
        n, t = panel.close.shape
        # Free before the next run, as a real caller would: on a VM the first touch of
        # fresh pages is what costs (the first run shows it).
        del panel
    print(f"load_panel {n:,} stocks x {t} days: median {statistics.median(times):.3f} s "
          f"over {args.runs} runs (first {times[0]:.3f}, min {min(times):.3f}, "
          f"max {max(times):.3f})")


if __name__ == "__main__":
    main()
