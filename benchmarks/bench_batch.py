"""Benchmark the daily batch end to end: `python -m vcp batch run` under `/usr/bin/time -v`.

Usage:
    python benchmarks/bench_batch.py [--runs 3] [--date YYYY-MM-DD] [--url URL]
    python benchmarks/bench_batch.py --compare-charts   # --charts 0 against --charts 25

Runs the CLI on the default store (the settings' market store, i.e. $VCP_MARKET_DB or
$VCP_DATA_DIR/market.duckdb) with the active model of $BENTOML_HOME, writing into a scratch
folder (so the real predictions.db and outputs are not touched), and prints the median wall
time and the peak RSS of the whole process (read, features, score, write), plus the batch's
own stage timings of the median run. Target: 11,000 stocks in <= 15 s, <= 2 GB.
`--compare-charts` alternates runs without charts in report_D.html and with the top 25 setups'
(and near-setups') charts, and prints both medians and the difference (target: <= 15 s more).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vcp.settings import startup_settings  # noqa: E402

SETTINGS = startup_settings()  # BENTOML_HOME beside the data folder, for the CLI it runs

STAGES = ("model", "read", "features", "score", "write")


def _wall_seconds(text: str) -> float:
    value = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
    parts = [float(p) for p in value.split(":")]
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


def _peak_rss_mb(text: str) -> float:
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024


def one_run(scratch: Path, extra: list[str]) -> dict:
    db = scratch / "predictions.db"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "vcp", "batch", "run",
           "--out", str(scratch / "outputs"), "--db", str(db), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    if proc.returncode != 0:
        sys.exit(f"batch run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    con = sqlite3.connect(db)
    cols = ", ".join(f"seconds_{s}" for s in STAGES)
    row = con.execute(f"SELECT n_scored, n_skipped, {cols} FROM batch_runs "
                      "ORDER BY rowid DESC LIMIT 1").fetchone()
    con.close()
    return {"wall": _wall_seconds(proc.stderr), "rss_mb": _peak_rss_mb(proc.stderr),
            "scored": row[0], "skipped": row[1], "stages": dict(zip(STAGES, row[2:], strict=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--date", help="Session to score (default: the latest).")
    parser.add_argument("--url", help="Score through a running deployment.")
    parser.add_argument("--compare-charts", action="store_true",
                        help="Alternate --charts 0 and --charts 25 and compare the medians.")
    args = parser.parse_args()
    if not Path("/usr/bin/time").exists():
        sys.exit("/usr/bin/time is needed (apt-get install time)")
    store = SETTINGS.market_db_path
    if not store.exists():
        sys.exit(f"no market store at {store}: run `python -m vcp data demo` first")
    extra = ["--market-db", str(store)]
    if args.date:
        extra += ["--date", args.date]
    if args.url:
        extra += ["--url", args.url]
    print(f"store {store}, model store {os.environ.get('BENTOML_HOME')}, "
          f"{os.cpu_count()} CPUs, {args.runs} runs")
    scratch = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    if args.compare_charts:
        try:
            compare_charts(scratch, extra, args.runs)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    try:
        runs = []
        for i in range(args.runs):
            r = one_run(scratch, extra)
            runs.append(r)
            stages = "  ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
            print(f"run {i + 1}: wall {r['wall']:.2f} s  peak RSS {r['rss_mb']:.0f} MB  "
                  f"scored {r['scored']:,} skipped {r['skipped']:,}  [{stages}]")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    walls = [r["wall"] for r in runs]
    median = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
    print(f"median wall time {statistics.median(walls):.2f} s "
          f"(min {min(walls):.2f}, max {max(walls):.2f}); "
          f"peak RSS {max(r['rss_mb'] for r in runs):.0f} MB; "
          f"stocks {median['scored'] + median['skipped']:,}")
    print("median run's stages (s): "
          + "  ".join(f"{k} {v:.2f}" for k, v in median["stages"].items()))


def compare_charts(scratch: Path, extra: list[str], n: int) -> None:
    walls: dict[int, list[float]] = {0: [], 25: []}
    for i in range(n):
        for charts in (0, 25):
            r = one_run(scratch, [*extra, "--charts", str(charts)])
            walls[charts].append(r["wall"])
            print(f"run {i + 1}, --charts {charts:2d}: wall {r['wall']:.2f} s  "
                  f"write stage {r['stages']['write']:.2f} s  peak RSS {r['rss_mb']:.0f} MB")
    without, with_charts = (statistics.median(walls[c]) for c in (0, 25))
    print(f"median wall time without charts {without:.2f} s, with 25 {with_charts:.2f} s: "
          f"{with_charts - without:+.2f} s")


if __name__ == "__main__":
    main()
