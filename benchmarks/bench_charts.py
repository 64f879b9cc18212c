"""Benchmark the setup chart (inference/charts.py): render time of one PNG.

Usage:
    python benchmarks/bench_charts.py [--runs 20]

Renders constructed setups (tests/setups.py: 400 sessions, a 3- and a 4-contraction base with
their setup dicts, and the same bars without a setup) at full size (1000 x 600) and as report
thumbnails (520 x 320), in this process after one warm-up render, and prints the median, the
90th percentile and the PNG size of each. Target: a full chart in <= 300 ms on two cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.charts import FULL, THUMBNAIL, render_setup_chart  # noqa: E402
from tests.setups import synthetic_vcp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    three = synthetic_vcp(seed=0)
    four = synthetic_vcp(seed=3, depths=(0.32, 0.18, 0.09, 0.04), breakout=False)
    cases = {
        "3 contractions": (three[0], three[1], None),
        "4 contractions": (four[0], four[1], None),
        "no setup": (three[0], None, "last contraction 14% deep, more than 12% allowed"),
    }
    t0 = time.perf_counter()
    render_setup_chart(*three[0].arrays(), three[1], None, "warm-up", True)
    print(f"first render in this process (imports done, font cache warm-up): "
          f"{(time.perf_counter() - t0) * 1000:.0f} ms; {args.runs} runs each")
    for size in (FULL, THUMBNAIL):
        for name, (bars, setup, why_not) in cases.items():
            times, png = [], b""
            for _ in range(args.runs):
                t = time.perf_counter()
                png = render_setup_chart(*bars.arrays(), setup, why_not, "RAUTGO (simulated)",
                                         True, width_px=size.width_px,
                                         height_px=size.height_px)
                times.append((time.perf_counter() - t) * 1000)
            p90 = statistics.quantiles(times, n=10)[-1]
            print(f"{size.width_px}x{size.height_px} {name:15s} median "
                  f"{statistics.median(times):6.1f} ms  p90 {p90:6.1f} ms  "
                  f"PNG {len(png) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
