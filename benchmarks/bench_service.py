"""Benchmark the HTTP service on the default store and active model (not a test).

    python benchmarks/bench_service.py [--url URL] [--baseline] [--concurrency 8] [--seconds 20]
                                       [--runs 3] [--batches 100]

Without --url it starts `bentoml serve service:VcpApi` with default settings (the per-client
rate limit off, since every simulated client shares one address) and measures the time to a
200 on /readyz, then waits until the servers it started are idle (the service warms the recent
sessions in the background; at most 60 s; 10 s for a service at --url) and loads each line
for 2 s to warm it. Then, per run, single predicts at the given concurrency for the given time
(requests/s, p50/p95/p99, non-2xx), twice:

  setups  bodies naming the stocks that are setups at the latest session (candidates inside
          the universe's floors): the only stocks the model scores (from the latest session's
          table in each API worker, see inference/latest_scores.py);
  mixed   bodies naming random stocks whose features can be computed (mostly no setup: those
          are answered without the model);

and 100-stock batch_predicts one at a time (p50/p95). Prints each run and the medians.

With --baseline it also starts benchmarks/baselines/bare_service.py (a plain BentoML service,
two workers, no middleware, no market data, access log off as the service's: POST /predict
with a feature vector answers the raw xgboost output of the same active model, on a
BENTOML_HOME of its own whose model store is the service's), and loads it first in each run,
at the same
concurrency and duration, with the feature vectors of the same setups. Each run then prints
the ratio of the service's setups req/s (and mixed req/s) to the bare endpoint's, and the end
their medians. The service and the baseline run side by side on the same cores (the idle one
costs little); the bare endpoint always starts here, also with --url.

The single-predict load comes from `wrk` when it is installed (`apt-get install wrk`; a C
client leaves more of the two cores to the server), else from an aiohttp client here (for
both services; the figures are then lower and not comparable with wrk's). A line whose rate
times mean latency exceeds its connections (Little's law) is flagged "latencies suspect":
its percentiles cannot all be real (wrk's, on the bare endpoint).

The servers started here are stopped at the end, also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from market.store import MarketStore  # noqa: E402
from vcp.settings import startup_settings  # noqa: E402

SETTINGS = startup_settings()
SERVICE = "service:VcpApi"
BARE_SERVICE = "benchmarks.baselines.bare_service:BareBooster"
PREDICT = "/api/v1/predict"
BARE_PREDICT = "/predict"


@dataclass
class Workload:
    """Request bodies (JSON text) from the latest session of the store."""

    mixed: list[str]  # random stocks whose features can be computed (as `bse_code`)
    setups: list[str]  # the setups, by `bse_code` (`isin` when a stock has none)
    bare: list[str]  # the same setups' feature vectors, for the bare endpoint
    mixed_codes: list[str]  # the mixed stocks' BSE codes, for batch_predict


def workload(limit: int = 2000) -> Workload:
    from inference.snapshot import features_from_panel

    store = MarketStore(SETTINGS.market_db_path)
    latest = features_from_panel(store.load_panel(None, 400), SETTINGS.floors)
    master = store.master()
    isins = sorted(latest.row_of, key=latest.row_of.__getitem__)  # row order
    codes = [master.by_isin(isin).bse_code
             for isin, reason in zip(isins, latest.result.reasons, strict=True)
             if reason is None]
    codes = [c for c in codes if c is not None]
    random.Random(0).shuffle(codes)
    codes = codes[:limit]
    setups, bare = [], []
    for row in latest.candidates():
        stock = master.by_isin(isins[row])
        ref = {"bse_code": stock.bse_code} if stock.bse_code else {"isin": stock.isin}
        setups.append(json.dumps(ref))
        bare.append(json.dumps({"features": latest.features_list(row)}))
    if not setups:
        raise SystemExit(f"no setup at the latest session ({latest.as_of}) of the store: "
                         "nothing the model would score")
    print(f"latest session {latest.as_of}: {len(setups)} setups, {len(codes)} mixed stocks")
    return Workload(mixed=[json.dumps({"bse_code": c}) for c in codes], setups=setups,
                    bare=bare, mixed_codes=codes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(proc: subprocess.Popen) -> list[psutil.Process]:
    """A server started here and its workers (each in a process group of its own)."""
    try:
        root = psutil.Process(proc.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop(proc: subprocess.Popen) -> None:
    """End a server started here: SIGTERM (BentoML stops its workers), then SIGKILL to any of
    its processes still there after 30 s."""
    processes = tree(proc)
    if proc.poll() is None:
        proc.terminate()
    _, alive = psutil.wait_procs(processes, timeout=30)
    for leftover in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()
    psutil.wait_procs(alive, timeout=10)
    proc.wait(timeout=10)


def wait_quiet(procs: list[subprocess.Popen], limit: float = 60) -> float:
    """Wait (at most `limit` s) until the servers started here use under a tenth of a core
    together over a second: the service warms the recent sessions in the background after
    /readyz. The seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        processes = [p for proc in procs for p in tree(proc)]
        before = {}
        for p in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                before[p] = sum(p.cpu_times()[:2])
        time.sleep(1)
        used = 0.0
        for p, cpu in before.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                used += sum(p.cpu_times()[:2]) - cpu
        if used < 0.1:
            break
    return time.perf_counter() - started


def bare_home(stack: contextlib.ExitStack) -> dict[str, str]:
    """The bare endpoint's environment: a BENTOML_HOME of its own whose model store is the
    service's (a symlink), and the service's active version named. Two `bentoml serve` on one
    BENTOML_HOME share its Prometheus folder, which each empties at start: the service's
    metrics would vanish."""
    from inference.registry import ModelRegistry  # after startup_settings (BENTOML_HOME)

    home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bare-bentoml-")))
    (home / "models").symlink_to(SETTINGS.model_store_dir / "models")
    return {"BENTOML_HOME": str(home),
            "VCP_BARE_MODEL": ModelRegistry.active_version()}


def start_server(target: str, env: dict[str, str],
                 procs: list[subprocess.Popen]) -> tuple[str, float]:
    """Start `bentoml serve target` on a free port (appended to `procs`, for the caller to
    stop) and wait for a 200 on /readyz: its URL and the seconds that took."""
    import httpx

    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", target, "--port", str(port)],
        cwd=ROOT, env={**os.environ, "BENTOML_DO_NOT_TRACK": "true", **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return url, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.perf_counter() - started > 120:
            raise SystemExit(f"{target} did not start (exited, or no /readyz 200 in 120 s); its "
                             f"output is discarded: `python -m bentoml serve {target}` shows why")
        time.sleep(0.05)


async def predict_load(url: str, path: str, bodies: list[str], concurrency: int,
                       seconds: float) -> dict:
    latencies: list[float] = []
    non_2xx = 0
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    async def worker(k: int, session: aiohttp.ClientSession) -> None:
        nonlocal non_2xx
        i = k
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with session.post(f"{url}{path}", data=bodies[i % len(bodies)],
                                    headers=headers) as r:
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
            "p99": np.percentile(lat, 99), "mean": lat.mean()}


# Lua long brackets hold the JSON bodies as they are (none contains "]==]").
WRK_SCRIPT = """
bodies = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "%s", {["Content-Type"] = "application/json"},
                    bodies[(counter %% #bodies) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%f %%f %%f %%f %%d %%f\\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout, latency.mean / 1000))
end
"""


def predict_load_wrk(url: str, path: str, bodies: list[str], concurrency: int,
                     seconds: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT % (",".join(f"[==[{b}]==]" for b in bodies), path))
    try:
        out = subprocess.run(
            ["wrk", f"-t{min(2, concurrency)}", f"-c{concurrency}",
             f"-d{max(1, round(seconds))}s", "-s", fh.name, url],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(fh.name)
    n, dur, p50, p95, p99, bad, mean = re.search(r"RESULT" + r" (\S+)" * 7, out).groups()
    return {"requests": int(n), "rps": int(n) / float(dur), "non_2xx": int(bad),
            "p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(mean)}


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


def check_setup_scored(url: str, body: str) -> None:
    """The setups line measures the model's path only if a setup gets a probability."""
    import httpx

    r = httpx.post(f"{url}{PREDICT}", content=body,
                   headers={"Content-Type": "application/json"}, timeout=30)
    if r.status_code != 200 or r.json().get("probability") is None:
        print(f"warning: setup {body} answered {r.status_code} without a probability: "
              "the setups line may not run the model")


def line(name: str, s: dict, concurrency: int) -> str:
    text = (f"{name:<7} c={concurrency} {s['rps']:6.0f} req/s  p50 {s['p50']:5.1f} "
            f"p95 {s['p95']:5.1f} p99 {s['p99']:5.1f} ms  non-2xx {s['non_2xx']}/{s['requests']}")
    # Little's law: requests in flight = rate x mean latency, at most the connections. More
    # means the latencies are not all real (seen with wrk on the bare endpoint).
    in_flight = s["rps"] * s["mean"] / 1000
    if in_flight > 1.2 * concurrency:
        text += f"  [latencies suspect: rate x mean latency = {in_flight:.1f} in flight]"
    return text


def ratio(ours: dict, bare: dict) -> float:
    return ours["rps"] / bare["rps"] if bare["rps"] else float("nan")


def on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # through the `finally` that stops the servers


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service (default: start one here)")
    parser.add_argument("--baseline", action="store_true",
                        help="also start and load the bare model endpoint (2 workers)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    work = workload()
    procs: list[subprocess.Popen] = []
    stack = contextlib.ExitStack()
    try:
        url = args.url
        if url is None:
            url, startup = start_server(SERVICE, {"VCP_RATE_LIMIT": "0"}, procs)
            print(f"start-up to /readyz 200: {startup:.1f} s")
        bare_url = None
        if args.baseline:
            bare_url, bare_startup = start_server(BARE_SERVICE, bare_home(stack), procs)
            print(f"bare endpoint start-up to /readyz 200: {bare_startup:.1f} s")
        use_wrk = shutil.which("wrk") is not None
        print("load generator:", "wrk" if use_wrk else "aiohttp (install wrk for less skew)")

        def load(base: str, path: str, bodies: list[str], seconds: float) -> dict:
            if use_wrk:
                return predict_load_wrk(base, path, bodies, args.concurrency, seconds)
            return asyncio.run(predict_load(base, path, bodies, args.concurrency, seconds))

        # Let the background warm-up of recent sessions finish: watched on a server started
        # here, a fixed wait for one at --url.
        if args.url is not None:
            time.sleep(10)
        if procs:
            print(f"servers idle after {wait_quiet(procs):.0f} s")
        check_setup_scored(url, work.setups[0])
        if bare_url is not None:
            load(bare_url, BARE_PREDICT, work.bare, 2)
        load(url, PREDICT, work.setups, 2)
        load(url, PREDICT, work.mixed, 2)
        rounds: list[dict[str, dict]] = []
        for run in range(args.runs):
            r: dict[str, dict] = {}
            print(f"run {run + 1}:")
            if bare_url is not None:
                r["bare"] = load(bare_url, BARE_PREDICT, work.bare, args.seconds)
                print("  " + line("bare", r["bare"], args.concurrency))
            for name, bodies in (("setups", work.setups), ("mixed", work.mixed)):
                r[name] = load(url, PREDICT, bodies, args.seconds)
                extra = (f"  ours/bare {ratio(r[name], r['bare']):.2f}"
                         if bare_url is not None else "")
                print("  " + line(name, r[name], args.concurrency) + extra)
            b = r["batch"] = asyncio.run(batch_load(url, work.mixed_codes, args.batches))
            print(f"  batch_predict(100) x{args.batches}: p50 {b['p50']:.1f} "
                  f"p95 {b['p95']:.1f} ms non-2xx {b['non_2xx']}")
            rounds.append(r)

        def med(name: str, key: str) -> float:
            return statistics.median(r[name][key] for r in rounds)

        print(f"median of {args.runs}:")
        for name in ("bare", "setups", "mixed") if bare_url else ("setups", "mixed"):
            extra = ""
            if bare_url is not None and name != "bare":
                ratios = [ratio(r[name], r["bare"]) for r in rounds]
                extra = f"  ours/bare {statistics.median(ratios):.2f} (median of the runs' ratios)"
            print(f"  {name:<7} {med(name, 'rps'):6.0f} req/s  p50 {med(name, 'p50'):5.1f} "
                  f"p95 {med(name, 'p95'):5.1f} p99 {med(name, 'p99'):5.1f} ms  "
                  f"non-2xx {sum(r[name]['non_2xx'] for r in rounds)}{extra}")
        print(f"  batch_predict(100) p95 {med('batch', 'p95'):.1f} ms, "
              f"non-2xx {sum(r['batch']['non_2xx'] for r in rounds)}")
    finally:
        for proc in reversed(procs):
            try:
                stop(proc)
            except Exception as exc:  # still stop the others
                print(f"could not stop server pid {proc.pid}: {exc!r}", file=sys.stderr)
        stack.close()  # the bare endpoint's home, once it has stopped


if __name__ == "__main__":
    main()
