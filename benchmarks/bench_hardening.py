"""Figures for the hardening findings (issue 17) against real servers (not a test).

    python benchmarks/bench_hardening.py [--only metrics,body,dates,...]

Starts `bentoml serve service:VcpApi` on the store and model of the environment
(VCP_DATA_DIR / VCP_MARKET_DB, BENTOML_HOME), with API keys k1 (user) and a1 (admin) and a
CORS origin for most probes, and without keys for the forwarded-address probe, and prints one
line per figure. The probes:

* metrics  - series on /metrics before and after 9,000 requests to made-up paths; the scrape's
             time and a predict's latency during it;
* body     - a 51 MB batch_predict body: status and time, and the slowest concurrent predict;
             100,000 rows on score_features;
* dates    - 40 distinct uncached dates at once while predicts on the latest date run: their
             p50/p99/max, the dates' statuses and the API worker's memory (RSS) before/after;
* store    - the market store deleted while serving: an uncached date's status, health;
* auth     - CORS preflight with keys; 15,000 wrong-key requests (statuses); rotating
             X-Forwarded-For without keys (statuses); a slow header (seconds the connection
             stays open); HEAD on health; BentoML's 404/405 content types; strictness probes.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from market.store import MarketStore  # noqa: E402
from tests.serverutil import api_worker_rss_mb, running_server  # noqa: E402
from vcp.settings import startup_settings  # noqa: E402

SETTINGS = startup_settings()
KEYED = {"VCP_API_KEYS": "k1", "VCP_ADMIN_KEYS": "a1", "VCP_RATE_LIMIT": "100000",
         "VCP_CORS_ORIGINS": "https://app.example"}
USER = {"X-API-Key": "k1"}


SOURCE = ROOT  # the checkout served (--source: e.g. an export of main, for "before")


@contextmanager
def server(env: dict[str, str], market_db: Path | None = None) -> Iterator[subprocess.Popen]:
    with running_server(market_db or SETTINGS.market_db_path, env, timeout=180,
                        source=SOURCE) as proc:
        yield proc


def predict_ms(http: httpx.Client, url: str, code: str, headers=None, **extra) -> tuple[int, float]:
    t = time.perf_counter()
    r = http.post(f"{url}/api/v1/predict", json={"bse_code": code, **extra},
                  headers=headers or {}, timeout=120)
    return r.status_code, (time.perf_counter() - t) * 1000


def predicts_while(busy: threading.Thread, url: str, code: str) -> list[float]:
    """Start `busy`, and send predicts (latest date) one after another until it ends: their
    latencies (ms)."""
    lat = []
    with httpx.Client() as http:
        predict_ms(http, url, code, USER)  # warm the connection
        busy.start()
        while busy.is_alive():
            lat.append(predict_ms(http, url, code, USER)[1])
            time.sleep(0.02)
    busy.join()
    return lat


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1) if s else float("nan")


def series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def scoreable_code() -> str:
    from inference.snapshot import features_from_panel

    store = MarketStore(SETTINGS.market_db_path)
    latest = features_from_panel(store.load_panel(None, 400))
    master = store.master()
    isin = next(i for i, r in zip(latest.row_of, latest.result.reasons, strict=True) if r is None)
    return master.by_isin(isin).bse_code


def probe_metrics(url: str, code: str) -> None:
    before = httpx.get(f"{url}/metrics", headers=USER, timeout=60)
    started = time.perf_counter()

    def junk(i: int) -> None:
        with httpx.Client() as http:
            for j in range(i, 9000, 16):
                http.get(f"{url}/junk/{j}", timeout=30)

    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(junk, range(16)))
    spent = time.perf_counter() - started
    result: dict = {}

    def scrape() -> None:
        t = time.perf_counter()
        r = httpx.get(f"{url}/metrics", headers=USER, timeout=120)
        result["scrape_s"] = time.perf_counter() - t
        result["text"] = r.text

    lat = predicts_while(threading.Thread(target=scrape), url, code)
    print(f"metrics: series {series(before.text):,} ({len(before.content) / 1e3:.0f} KB) -> "
          f"{series(result['text']):,} ({len(result['text']) / 1e3:.0f} KB) after 9,000 junk "
          f"paths in {spent:.1f} s; scrape {result['scrape_s']:.2f} s; predict during the "
          f"scrape max {max(lat):.0f} ms (n={len(lat)})")


def probe_body(url: str, code: str) -> None:
    item = b'{"bse_code":"1"},'
    n = 3_000_000
    body = b'{"stocks":[' + item * (n - 1) + b'{"bse_code":"1"}]}'
    result: dict = {}

    def big() -> None:
        t = time.perf_counter()
        try:
            r = httpx.post(f"{url}/api/v1/batch_predict", content=body, timeout=120,
                           headers={**USER, "Content-Type": "application/json"})
            result["status"] = r.status_code
        except httpx.HTTPError as exc:
            result["status"] = type(exc).__name__
        result["s"] = time.perf_counter() - t

    lat = predicts_while(threading.Thread(target=big), url, code)
    print(f"body: {len(body) / 1e6:.0f} MB batch_predict -> {result['status']} in "
          f"{result['s']:.2f} s; concurrent predict max {max(lat):.0f} ms, "
          f"p50 {pct(lat, 0.5)} ms (n={len(lat)})")
    rows = [{"features": [0.0] * 25}] * 100_000
    t = time.perf_counter()
    try:
        r = httpx.post(f"{url}/api/v1/score_features", json={"rows": rows}, headers=USER,
                       timeout=120)
        status = r.status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    print(f"body: score_features 100,000 rows -> {status} in {time.perf_counter() - t:.2f} s")
    junk = {"bse_code": code, "note": "x" * 50_000_000}
    try:
        r = httpx.post(f"{url}/api/v1/predict", json=junk, headers=USER, timeout=120)
        status = r.status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    print(f"body: predict with a 50 MB junk field -> {status}")


def probe_dates(proc: subprocess.Popen, url: str, code: str) -> None:
    cal = MarketStore(SETTINGS.market_db_path).calendar()
    dates = [str(d) for d in cal[-300:-60:6][:40]]
    rss_before = round(api_worker_rss_mb(proc), 1)
    statuses: Counter = Counter()
    date_ms: list[float] = []

    def one(d: str) -> None:
        with httpx.Client() as http:
            s, ms = predict_ms(http, url, code, USER, prediction_date=d)
            statuses[s] += 1
            date_ms.append(ms)

    lat: list[float] = []
    peak = [rss_before]
    with cf.ThreadPoolExecutor(40) as pool:
        futures = [pool.submit(one, d) for d in dates]
        with httpx.Client() as http:
            while not all(f.done() for f in futures):
                lat.append(predict_ms(http, url, code, USER)[1])
                peak[0] = max(peak[0], round(api_worker_rss_mb(proc), 1))
                time.sleep(0.01)
    print(f"dates: 40 uncached dates -> {dict(statuses)}, slowest {max(date_ms) / 1e3:.1f} s; "
          f"latest-date predict during: n={len(lat)} p50 {pct(lat, 0.5)} p99 {pct(lat, 0.99)} "
          f"max {max(lat):.0f} ms; API RSS {rss_before} -> peak {peak[0]} -> "
          f"{round(api_worker_rss_mb(proc), 1)} MB")


def probe_auth(url: str, code: str) -> None:
    pre = httpx.options(f"{url}/api/v1/predict", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-api-key"}, timeout=10)
    with_key = httpx.post(f"{url}/api/v1/predict", json={"bse_code": code},
                          headers={**USER, "Origin": "https://app.example"}, timeout=10)
    other = httpx.post(f"{url}/api/v1/predict", json={"bse_code": code},
                       headers={**USER, "Origin": "https://evil.example"}, timeout=10)
    print(f"cors: preflight {pre.status_code} allow-origin="
          f"{pre.headers.get('access-control-allow-origin')}; predict from the allowed origin "
          f"{with_key.status_code} allow-origin="
          f"{with_key.headers.get('access-control-allow-origin')}; from another origin "
          f"allow-origin={other.headers.get('access-control-allow-origin')}")
    print(f"head: HEAD /api/v1/health -> "
          f"{httpx.head(f'{url}/api/v1/health', headers=USER, timeout=10).status_code}")
    for method, path in (("GET", "/nope"), ("GET", "/api/v1/score_features"),
                         ("DELETE", "/api/v1/predict")):
        r = httpx.request(method, f"{url}{path}", headers=USER, timeout=10)
        print(f"errors: {method} {path} -> {r.status_code} {r.headers.get('content-type')}")
    for body in ({"bse_code": code, "include_explanation": 0},
                 {"bse_code": code, "include_features": "true"}):
        r = httpx.post(f"{url}/api/v1/predict", json=body, headers=USER, timeout=10)
        print(f"strict: predict {body} -> {r.status_code}")
    r = httpx.post(f"{url}/api/v1/score_features", json={"rows": [{"features": [True] * 25}]},
                   headers=USER, timeout=10)
    print(f"strict: score_features features [true]*25 -> {r.status_code}")
    r = httpx.post(f"{url}/api/v1/batch_predict", json={"stocks": []}, headers=USER, timeout=10)
    print(f"strict: batch_predict stocks [] -> {r.status_code}")
    statuses: Counter = Counter()
    started = time.perf_counter()

    def wrong(i: int) -> None:  # from 127.0.0.2, so the probes above are not braked
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as http:
            for j in range(i, 15_000, 16):
                statuses[http.get(f"{url}/api/v1/health", headers={"X-API-Key": f"bad{j}"},
                                  timeout=30).status_code] += 1

    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(wrong, range(16)))
    print(f"auth: 15,000 wrong keys in {time.perf_counter() - started:.1f} s -> "
          f"{dict(statuses)}")


def probe_slow_header(url: str, wait: float = 40) -> None:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    s.settimeout(1)
    closed = None
    while time.monotonic() - started < wait:
        try:
            s.sendall(b"X-a: b\r\n")
            if s.recv(1024) == b"":
                closed = time.monotonic() - started
                break
        except TimeoutError:
            continue
        except OSError:
            closed = time.monotonic() - started
            break
    s.close()
    print("slowloris: unfinished headers "
          + (f"closed after {closed:.1f} s" if closed else f"still open after {wait:.0f} s"))


def probe_xff(url: str, code: str) -> None:
    statuses: Counter = Counter()
    with httpx.Client() as http:
        for i in range(100):
            r = http.post(f"{url}/api/v1/predict", json={"bse_code": code}, timeout=30,
                          headers={"X-Forwarded-For": f"10.{i // 250}.{i % 250}.1"})
            statuses[r.status_code] += 1
    print(f"xff: 100 requests with rotating X-Forwarded-For (limit 5/s, burst 10) -> "
          f"{dict(statuses)}")


def probe_store(code: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-store-"))
    copy = folder / "market.duckdb"
    shutil.copy(SETTINGS.market_db_path, copy)
    cal = MarketStore(copy).calendar()
    with server(KEYED, market_db=copy) as proc:
        url = proc.url
        copy.unlink()
        out = []
        with httpx.Client() as http:
            for d in (cal[-100], cal[-101]):
                try:
                    r = http.post(f"{url}/api/v1/predict", timeout=60, headers=USER,
                                  json={"bse_code": code, "prediction_date": str(d)})
                    out.append(f"{r.status_code} {r.text[:120]}")
                except httpx.HTTPError as exc:
                    out.append(type(exc).__name__)
            latest = http.post(f"{url}/api/v1/predict", json={"bse_code": code},
                               headers=USER, timeout=60).status_code
            health = http.get(f"{url}/api/v1/health", headers=USER, timeout=60).json()
        print(f"store: deleted while serving: other dates -> {out}; latest date -> {latest}; "
              f"health {health['status']} {health['reasons']}")
    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="metrics,body,dates,auth,slow,xff,store")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="the checkout to serve (e.g. `git archive main` unpacked)")
    args = parser.parse_args()
    global SOURCE
    SOURCE = args.source
    only = set(args.only.split(","))
    code = scoreable_code()
    if only & {"metrics", "body", "dates", "auth", "slow"}:
        with server(KEYED) as proc:
            url = proc.url
            if "dates" in only:
                time.sleep(20)  # let the warm-up of recent sessions finish
                probe_dates(proc, url, code)
            if "metrics" in only:
                probe_metrics(url, code)
            if "body" in only:
                probe_body(url, code)
            if "auth" in only:
                probe_auth(url, code)
            if "slow" in only:
                probe_slow_header(url)
    if "xff" in only:
        with server({"VCP_API_KEYS": "", "VCP_ADMIN_KEYS": "", "VCP_RATE_LIMIT": "5",
                     "VCP_RATE_BURST": "10"}) as proc:
            probe_xff(proc.url, code)
    if "store" in only:
        probe_store(code)


if __name__ == "__main__":
    main()
