"""Headless load test with pass/fail thresholds (`make loadtest`).

Starts `bentoml serve service:VcpApi` on a free port (unless --url is given), waits for /readyz,
runs Locust headless for a fixed duration, writes loadtests/results/run_*.csv and report.html,
prints the figures and exits 1 when a threshold is breached:

* p95 of `predict` above --max-p95-ms (default 50 ms);
* the failure ratio of all requests above --max-error-rate (default 0: no failures at all).

The server runs with VCP_RATE_LIMIT raised (default 100000 requests/s) so the limiter is still on
the request path but does not refuse the load (one client address makes every request); pass
--rate-limit to test with another value. Nothing of the project is imported (HTTP only).
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited early (code {proc.returncode}); see "
                             f"{RESULTS / 'server.log'}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server not ready after {timeout:.0f} s")


def start_server(port: int, rate_limit: str) -> subprocess.Popen:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "VCP_RATE_LIMIT": rate_limit,
           "VCP_RATE_BURST": str(2 * float(rate_limit))}
    log = open(RESULTS / "server.log", "w")  # noqa: SIM115 (closed with the process)
    bentoml = Path(sys.executable).parent / "bentoml"
    return subprocess.Popen(
        [str(bentoml), "serve", "service:VcpApi", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def read_stats(prefix: Path) -> dict[str, dict[str, float]]:
    rows = {}
    with open(f"{prefix}_stats.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": float(row["Requests/s"]),
                "p50": float(row["50%"] or 0),
                "p95": float(row["95%"] or 0),
                "p99": float(row["99%"] or 0),
                "max": float(row["Max Response Time"] or 0),
            }
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="test a running server instead of starting one")
    p.add_argument("--users", type=int, default=int(os.environ.get("LOADTEST_USERS", 8)))
    p.add_argument("--duration", default=os.environ.get("LOADTEST_DURATION", "30s"))
    p.add_argument("--max-p95-ms", type=float,
                   default=float(os.environ.get("LOADTEST_MAX_P95_MS", 50)))
    p.add_argument("--max-error-rate", type=float,
                   default=float(os.environ.get("LOADTEST_MAX_ERROR_RATE", 0)))
    p.add_argument("--rate-limit", default=os.environ.get("LOADTEST_RATE_LIMIT", "100000"))
    p.add_argument("--ready-timeout", type=float, default=300)
    args = p.parse_args(argv)

    RESULTS.mkdir(parents=True, exist_ok=True)
    proc = None
    url = args.url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        print(f"starting the server on {url} (log: {RESULTS / 'server.log'})", flush=True)
        proc = start_server(port, args.rate_limit)
    try:
        wait_ready(url.rstrip("/"), proc, args.ready_timeout)
        print(f"ready; Locust: {args.users} users for {args.duration}", flush=True)
        locust = Path(sys.executable).parent / "locust"
        prefix = RESULTS / "run"
        cmd = [str(locust), "-f", str(HERE / "locustfile.py"), "--headless",
               "-u", str(args.users), "-r", str(args.users), "-t", args.duration,
               "--host", url, "--csv", str(prefix), "--html", str(RESULTS / "report.html"),
               "--only-summary", "--stop-timeout", "10", "--exit-code-on-error", "0"]
        out = subprocess.run(cmd, cwd=ROOT)
        if out.returncode != 0:
            print(f"FAIL: locust exited with code {out.returncode}")
            return 1
        stats = read_stats(prefix)
    finally:
        if proc is not None:
            stop_server(proc)

    print(f"\n{'name':<15}{'requests':>9}{'fail':>6}{'rps':>9}{'p50':>7}{'p95':>7}{'p99':>7}"
          f"{'max':>8}  (ms)")
    for name, s in stats.items():
        print(f"{name:<15}{s['requests']:>9}{s['failures']:>6}{s['rps']:>9.1f}{s['p50']:>7.0f}"
              f"{s['p95']:>7.0f}{s['p99']:>7.0f}{s['max']:>8.0f}")
    total = stats.get("Aggregated", {"requests": 0, "failures": 0})
    problems = []
    if "predict" not in stats or stats["predict"]["requests"] == 0:
        problems.append("no predict requests were made")
    elif stats["predict"]["p95"] > args.max_p95_ms:
        problems.append(f"predict p95 {stats['predict']['p95']:.0f} ms > {args.max_p95_ms:g} ms")
    error_rate = total["failures"] / total["requests"] if total["requests"] else 1.0
    if error_rate > args.max_error_rate:
        problems.append(f"error rate {error_rate:.4%} > {args.max_error_rate:.4%} "
                        f"({total['failures']} of {total['requests']}; see "
                        f"{RESULTS / 'run_failures.csv'})")
    failures = Path(f"{RESULTS / 'run'}_failures.csv")
    if total["failures"] and failures.exists():
        with open(failures, newline="") as fh:
            for row in list(csv.DictReader(fh))[:5]:
                print(f"failure x{row['Occurrences']}: {row['Method']} {row['Name']}: "
                      f"{row['Error'][:300]}")
    print(f"\nresults: {RESULTS}/run_stats.csv, report.html")
    if problems:
        print("FAIL: " + "; ".join(problems))
        return 1
    print(f"PASS: predict p95 {stats['predict']['p95']:.0f} ms <= {args.max_p95_ms:g} ms, "
          f"error rate {error_rate:.2%} <= {args.max_error_rate:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
