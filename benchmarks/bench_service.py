"""Benchmark the HTTP service on the default store and active model (not a test).

    python benchmarks/bench_service.py [--url URL] [--concurrency 8] [--seconds 20] [--runs 3]

Without --url it starts `bentoml serve service:VcpApi` with default settings (the per-client
rate limit off, since every simulated client shares one address) and measures the time to a
200 on /readyz. Then, per run: single predicts at the given concurrency for the given time
(requests/s, p50/p95/p99, non-2xx), and 100-stock batch_predicts one at a time (p95).
Prints each run and the medians.

The single-predict load comes from `wrk` when it is installed (`apt-get install wrk`; a C
client leaves more of the two cores to the server), else from an aiohttp client here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from market.store import MarketStore  # noqa: E402
from vcp.settings import startup_settings  # noqa: E402

SETTINGS = startup_settings()


def scoreable_codes(limit: int = 2000) -> list[str]:
    from inference.snapshot import features_from_panel

    store = MarketStore(SETTINGS.market_db_path)
    latest = features_from_panel(store.load_panel(None, 400))
    master = store.master()
    codes = [master.by_isin(isin).bse_code
             for isin, reason in zip(latest.row_of, latest.result.reasons, strict=True)
             if reason is None]
    random.Random(0).shuffle(codes)
    return codes[:limit]


def start_server() -> tuple[subprocess.Popen, str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VCP_RATE_LIMIT": "0"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "service:VcpApi", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.perf_counter() - started > 120:
            raise SystemExit("server did not start")
        time.sleep(0.05)
    return proc, url, time.perf_counter() - started


async def predict_load(url: str, codes: list[str], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    non_2xx = 0
    deadline = time.perf_counter() + seconds

    async def worker(k: int, session: aiohttp.ClientSession) -> None:
        nonlocal non_2xx
        i = k
        while time.perf_counter() < deadline:
            body = {"bse_code": codes[i % len(codes)]}
            t0 = time.perf_counter()
            async with session.post(f"{url}/api/v1/predict", json=body) as r:
                await r.read()
                if not 200 <= r.status < 300:
                    non_2xx += 1
            latencies.append(time.perf_counter() - t0)
            i += concurrency

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(k, session) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {"requests": len(lat), "rps": len(lat) / elapsed, "non_2xx": non_2xx,
            "p50": np.percentile(lat, 50), "p95": np.percentile(lat, 95),
            "p99": np.percentile(lat, 99)}


WRK_SCRIPT = """
codes = {%s}
counter = 0
request = function()
  counter = counter + 1
  local body = '{"bse_code": "' .. codes[(counter %% #codes) + 1] .. '"}'
  return wrk.format("POST", "/api/v1/predict", {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%f %%f %%f %%f %%d\\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
end
"""


def predict_load_wrk(url: str, codes: list[str], concurrency: int, seconds: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT % ",".join(f'"{c}"' for c in codes))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{concurrency}", f"-d{int(seconds)}s", "-s", fh.name, url],
        capture_output=True, text=True, check=True,
    ).stdout
    os.unlink(fh.name)
    n, dur, p50, p95, p99, bad = re.search(r"RESULT (\S+) (\S+) (\S+) (\S+) (\S+) (\S+)",
                                           out).groups()
    return {"requests": int(n), "rps": int(n) / float(dur), "non_2xx": int(bad),
            "p50": float(p50), "p95": float(p95), "p99": float(p99)}


async def batch_load(url: str, codes: list[str], count: int) -> dict:
    latencies, non_2xx = [], 0
    async with aiohttp.ClientSession() as session:
        for j in range(count):
            chunk = codes[(j * 100) % len(codes):][:100]
            body = {"stocks": [{"bse_code": c} for c in chunk]}
            t0 = time.perf_counter()
            async with session.post(f"{url}/api/v1/batch_predict", json=body) as r:
                await r.read()
                non_2xx += not 200 <= r.status < 300
            latencies.append(time.perf_counter() - t0)
    lat = np.array(latencies) * 1000
    return {"p50": np.percentile(lat, 50), "p95": np.percentile(lat, 95), "non_2xx": non_2xx}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    codes = scoreable_codes()
    proc = None
    url = args.url
    if url is None:
        proc, url, startup = start_server()
        print(f"start-up to /readyz 200: {startup:.1f} s")
    try:
        use_wrk = shutil.which("wrk") is not None
        print("load generator:", "wrk" if use_wrk else "aiohttp (install wrk for less skew)")

        def load(seconds: float) -> dict:
            if use_wrk:
                return predict_load_wrk(url, codes, args.concurrency, seconds)
            return asyncio.run(predict_load(url, codes, args.concurrency, seconds))

        time.sleep(10)  # let the background warm-up of recent sessions finish
        load(3)
        singles, batches = [], []
        for run in range(args.runs):
            s = load(args.seconds)
            b = asyncio.run(batch_load(url, codes, args.batches))
            singles.append(s)
            batches.append(b)
            print(f"run {run + 1}: predict c={args.concurrency} {s['rps']:.0f} req/s "
                  f"p50 {s['p50']:.1f} p95 {s['p95']:.1f} p99 {s['p99']:.1f} ms "
                  f"non-2xx {s['non_2xx']}/{s['requests']}; "
                  f"batch_predict(100) p50 {b['p50']:.1f} p95 {b['p95']:.1f} ms "
                  f"non-2xx {b['non_2xx']}")

        def med(rows, key):
            return statistics.median(r[key] for r in rows)

        print(f"median of {args.runs}: predict {med(singles, 'rps'):.0f} req/s, "
              f"p50 {med(singles, 'p50'):.1f} / p95 {med(singles, 'p95'):.1f} / "
              f"p99 {med(singles, 'p99'):.1f} ms, non-2xx {sum(r['non_2xx'] for r in singles)}; "
              f"batch_predict(100) p95 {med(batches, 'p95'):.1f} ms")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
