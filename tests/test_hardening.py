"""Issue 17 end to end, on real servers: what an attacker or an unlucky operator could do to
the service, each finding reproduced and now answered (before/after figures: README, and
`benchmarks/bench_hardening.py` on the full market).

Bounds here are behaviour bounds, loose enough for a loaded 2-core machine; the figures each
test measures are printed (`pytest -s`)."""

from __future__ import annotations

import concurrent.futures as cf
import shutil
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from tests.serverutil import api_worker_rss_mb, running_server
from training_artifacts import model_store

ORIGIN = "https://app.example"
USER, ADMIN, METRICS = {"X-API-Key": "k1"}, {"X-API-Key": "a1"}, "m1"
KEYED = {"VCP_API_KEYS": "k1", "VCP_ADMIN_KEYS": "a1", "VCP_CORS_ORIGINS": ORIGIN,
         "VCP_METRICS_KEY": METRICS, "VCP_RATE_LIMIT": "100000",
         "VCP_AUTH_FAILURES_PER_MINUTE": "10", "VCP_HEADER_TIMEOUT_SECONDS": "2",
         "VCP_DATE_CACHE_MB": "5"}


@pytest.fixture(scope="module")
def bad_folders(quick_model):
    """An empty version folder and one whose model.yaml is garbage, present before the server
    starts (either used to stop it from starting)."""
    root = model_store.versions_dir()
    (root / "zzzempty").mkdir()
    (root / "zzzgarbage").mkdir()
    (root / "zzzgarbage" / "model.yaml").write_text("::: [")
    yield ["zzzempty", "zzzgarbage"]
    shutil.rmtree(root / "zzzempty")
    shutil.rmtree(root / "zzzgarbage")


@pytest.fixture(scope="module")
def server(small_store, quick_model, bad_folders):
    model_store.write_active(quick_model[0])
    with running_server(small_store.path, KEYED) as proc:
        yield proc


def predict(client: httpx.Client, url: str, code: str, **extra) -> httpx.Response:
    return client.post(f"{url}/api/v1/predict", json={"bse_code": code, **extra}, headers=USER,
                       timeout=60)


def series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def _timed_predicts(url: str, code: str, until: threading.Event) -> list[float]:
    """Latest-date predicts one after another until `until` is set: their latencies (ms)."""
    out = []
    with httpx.Client() as client:
        while not until.is_set():
            started = time.perf_counter()
            assert predict(client, url, code).status_code == 200
            out.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
    return out


# -- 3. a version folder the store cannot read ---------------------------------------------------
def test_the_service_starts_and_serves_with_unreadable_version_folders(server, stock,
                                                                       quick_model,
                                                                       bad_folders):
    url = server.url
    with httpx.Client() as client:
        assert predict(client, url, stock.bse_code).json()["model_version"] == quick_model[0]
        health = client.get(f"{url}/api/v1/health", headers=USER).json()
        assert health["status"] == "degraded"
        for folder in bad_folders:
            assert (f"model_store_unreadable_version: {folder} (skipped; see `models list`)"
                    in health["reasons"])
        listing = client.get(f"{url}/api/v1/models", headers=USER).json()
        assert [u["version"] for u in listing["unreadable"]] == bad_folders
        assert quick_model[0] in {m["version"] for m in listing["models"]}
        r = client.post(f"{url}/api/v1/models/reload", json={"version": "zzzempty"},
                        headers=ADMIN, timeout=60)
        assert r.status_code == 422 and "cannot be read from the store" in r.json()["error"]
        assert model_store.read_active() == quick_model[0]


# -- 1. /metrics ---------------------------------------------------------------------------------
def test_made_up_paths_cannot_blow_up_metrics_and_a_key_guards_them(server):
    url = server.url
    bearer = {"Authorization": f"Bearer {METRICS}"}
    refused = httpx.get(f"{url}/metrics", timeout=30)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert "metrics key" in refused.json()["error"]
    assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"},
                     timeout=30).status_code == 401
    before = series(httpx.get(f"{url}/metrics", headers=bearer, timeout=30).text)
    started = time.perf_counter()

    def junk(offset: int) -> None:
        with httpx.Client() as client:
            for i in range(offset, 9000, 16):
                path = ("/junk/{}", "/api/v1/junk{}", "/static_content/{}.js")[i % 3]
                client.get(url + path.format(i), timeout=30)

    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(junk, range(16)))
    spent = time.perf_counter() - started
    text = httpx.get(f"{url}/metrics", headers=bearer, timeout=30).text
    after = series(text)
    print(f"\n/metrics: {before} series -> {after} after 9,000 made-up paths ({spent:.1f} s)")
    assert after < 2000 and after - before < 100
    assert 'endpoint="<unmatched>"' in text
    # The API's own copy takes the metrics key as well as the API keys.
    for headers in (bearer, USER):
        assert httpx.get(f"{url}/api/v1/metrics", headers=headers,
                         timeout=30).status_code == 200


# -- 2. request bodies -------------------------------------------------------------------------
def test_a_51_mb_body_is_413_at_once_and_predict_goes_on(server, stock):
    url = server.url
    body = b'{"stocks":[' + b'{"bse_code":"1"},' * 2_999_999 + b'{"bse_code":"1"}]}'
    assert len(body) > 51_000_000
    result: dict = {}

    def big() -> None:
        started = time.perf_counter()
        r = httpx.post(f"{url}/api/v1/batch_predict", content=body, timeout=60,
                       headers={**USER, "Content-Type": "application/json"})
        result.update(status=r.status_code, error=r.json()["error"],
                      seconds=time.perf_counter() - started)

    with httpx.Client() as client:
        assert predict(client, url, stock.bse_code).status_code == 200  # warm
        done = threading.Event()
        timer = cf.ThreadPoolExecutor(1).submit(_timed_predicts, url, stock.bse_code, done)
        time.sleep(0.2)
        big()
        time.sleep(0.3)
        done.set()
        latencies = timer.result()
    print(f"\n51 MB body: {result['status']} in {result['seconds'] * 1000:.0f} ms; concurrent "
          f"predicts: n={len(latencies)} max {max(latencies):.0f} ms")
    assert result["status"] == 413
    assert result["error"].startswith("request body too large: 51,000,0")
    assert result["seconds"] < 5  # the target is 1 s; before: 7-9 s for a 422
    assert max(latencies) < 1000  # target 100 ms; before: 8.4 s


def test_every_list_input_has_a_count_limit_answered_4xx(server, stock):
    url = server.url
    row = {"features": [0.5] * 25}
    over = httpx.post(f"{url}/api/v1/score_features", json={"rows": [row] * 513}, headers=USER,
                      timeout=60)
    assert over.status_code == 400, over.text
    assert over.json()["detail"][0]["type"] == "too_long"
    huge = httpx.post(f"{url}/api/v1/score_features", json={"rows": [row] * 100_000},
                      headers=USER, timeout=60)
    assert huge.status_code == 413, huge.text  # was 503 "overloaded"
    assert httpx.post(f"{url}/api/v1/score_features", json={"rows": [row] * 512},
                      headers=USER, timeout=60).status_code == 200
    stocks = [{"bse_code": stock.bse_code}] * 101
    r = httpx.post(f"{url}/api/v1/batch_predict", json={"stocks": stocks}, headers=USER,
                   timeout=60)
    assert r.status_code == 422 and "at most 100 items" in r.json()["error"]

    def chunks():  # no Content-Length: the limit applies as the body arrives
        yield b'{"bse_code": "' + b"7" * 40_000

    r = httpx.post(f"{url}/api/v1/predict", content=chunks(),
                   headers={**USER, "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "too large" in r.json()["error"]


def test_a_refused_score_features_body_is_logged_without_a_traceback(server):
    r = httpx.post(f"{server.url}/api/v1/score_features", json={"rows": [{"features": [1]}]},
                   headers=USER, timeout=30)
    assert r.status_code == 400 and isinstance(r.json()["detail"], list)
    time.sleep(0.5)
    log = server.log_path.read_text()
    assert "Traceback" not in log
    assert not [line for line in log.splitlines() if "[ERROR]" in line and "score_" in line]
    assert "[INFO] [entry_service:vcp_api:1] refused input on /api/v1/score_features [POST]: " \
           "1 validation error(s)" in log


# -- 5. CORS with keys -------------------------------------------------------------------------
def test_cors_preflight_is_answered_before_the_key_check(server, stock):
    url = server.url
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-api-key"}
    ok = httpx.options(f"{url}/api/v1/predict", headers={"Origin": ORIGIN, **preflight},
                       timeout=30)
    assert ok.status_code == 200, ok.text  # was 401
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
    call = httpx.post(f"{url}/api/v1/predict", json={"bse_code": stock.bse_code},
                      headers={**USER, "Origin": ORIGIN}, timeout=30)
    assert call.status_code == 200 and call.headers["access-control-allow-origin"] == ORIGIN
    # The key is still needed; the browser can read why it was refused.
    keyless = httpx.post(f"{url}/api/v1/predict", json={"bse_code": stock.bse_code},
                         headers={"Origin": ORIGIN}, timeout=30)
    assert keyless.status_code == 401
    assert keyless.headers["access-control-allow-origin"] == ORIGIN
    evil = "https://evil.example"
    other = httpx.post(f"{url}/api/v1/predict", json={"bse_code": stock.bse_code},
                       headers={**USER, "Origin": evil}, timeout=30)
    assert "access-control-allow-origin" not in other.headers
    refused = httpx.options(f"{url}/api/v1/predict", headers={"Origin": evil, **preflight},
                            timeout=30)
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    assert refused.json()["error"] == "Disallowed CORS origin"


# -- 6. historical dates -----------------------------------------------------------------------
def test_40_concurrent_dates_leave_latest_date_predicts_fast(server, stock, small_store):
    url = server.url
    cal = small_store.calendar()
    dates = [str(d) for d in cal[-250:-50:5]][:40]
    assert len(dates) == 40
    rss_before = api_worker_rss_mb(server)
    done = threading.Event()
    timer = cf.ThreadPoolExecutor(1).submit(_timed_predicts, url, stock.bse_code, done)
    time.sleep(0.3)

    def one(day: str) -> httpx.Response:
        with httpx.Client() as client:
            return predict(client, url, stock.bse_code, prediction_date=day)

    peak = rss_before
    with cf.ThreadPoolExecutor(40) as pool:
        futures = [pool.submit(one, d) for d in dates]
        while not all(f.done() for f in futures):
            peak = max(peak, api_worker_rss_mb(server))
            time.sleep(0.05)
    answers = [f.result() for f in futures]
    done.set()
    latencies = timer.result()
    statuses = [r.status_code for r in answers]
    p99 = float(np.percentile(latencies, 99))
    metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS}"},
                        timeout=30).text
    cached = next(float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith("vcp_date_cache_bytes"))
    print(f"\n40 dates: {dict(zip(*np.unique(statuses, return_counts=True), strict=True))}; "
          f"latest-date predicts n={len(latencies)} p50 {np.percentile(latencies, 50):.0f} "
          f"p99 {p99:.0f} ms; API RSS {rss_before:.0f} -> peak {peak:.0f} MB; date cache "
          f"{cached / 2**20:.2f} MB")
    assert set(statuses) <= {200, 422, 503}
    for r in answers:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "2" and "retry" in r.json()["error"]
    assert statuses.count(200) + statuses.count(422) >= 1
    assert p99 < 500  # target 100 ms; before: 1.77 s
    assert 0 < cached <= 5 * 2**20  # VCP_DATE_CACHE_MB=5: a date or two of the test store
    assert peak - rss_before < 300


# -- 9. the rest -------------------------------------------------------------------------------
def test_head_works_where_get_does_and_every_error_is_json(server):
    url = server.url
    get = httpx.get(f"{url}/api/v1/health", headers=USER, timeout=30)
    head = httpx.head(f"{url}/api/v1/health", headers=USER, timeout=30)
    assert head.status_code == 200 and head.content == b""  # was 405
    assert head.headers["content-type"] == get.headers["content-type"]
    for path in ("/livez", "/readyz", "/openapi.json", "/docs"):
        assert httpx.head(f"{url}{path}", timeout=30).status_code == 200, path
    missing = httpx.get(f"{url}/nope", timeout=30)
    assert missing.status_code == 404 and missing.json() == {
        "error": "no such route: /nope; see /docs for the API"}
    wrong = httpx.get(f"{url}/api/v1/score_features", headers=USER, timeout=30)
    assert wrong.status_code == 405 and wrong.json()["error"] == (
        "method GET is not allowed on /api/v1/score_features")
    assert "POST" in wrong.headers["allow"]
    assert httpx.put(f"{url}/api/v1/predict", headers=USER,
                     timeout=30).headers["content-type"] == "application/json"


def test_the_spec_documents_every_status_and_the_keys(server):
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header",
                                 "name": "X-API-Key"}
    assert schemes["MetricsKey"]["scheme"] == "bearer"
    paths = spec["paths"]
    predict_op = paths["/api/v1/predict"]["post"]
    assert predict_op["security"] == [{"ApiKey": []}]
    assert {"400", "401", "404", "413", "422", "429", "503"} <= set(predict_op["responses"])
    assert "Retry-After" in predict_op["responses"]["503"]["headers"]
    assert "403" in paths["/api/v1/models/reload"]["post"]["responses"]
    score = paths["/api/v1/score_features"]["post"]
    assert {"400", "401", "413", "415", "429", "503"} <= set(score["responses"])
    assert score["requestBody"]["required"] is True
    detail = score["responses"]["400"]["content"]["application/json"]["schema"]
    assert detail["properties"]["detail"]["type"] == "array"
    assert paths["/metrics"]["get"]["security"] == [{"MetricsKey": []}]
    assert {"ApiKey": []} in paths["/api/v1/metrics"]["get"]["security"]


def test_unfinished_headers_are_timed_out(server):
    host, port = server.url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)))
    conn.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\n")
    conn.settimeout(0.5)
    started, got = time.monotonic(), b""
    try:
        while time.monotonic() - started < 15:
            try:
                conn.sendall(b"X-Slow: 1\r\n")
                chunk = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    finally:
        conn.close()
    held = time.monotonic() - started
    print(f"\nunfinished headers: closed after {held:.1f} s (VCP_HEADER_TIMEOUT_SECONDS=2)")
    assert held < 8  # was: never
    assert got.startswith(b"HTTP/1.1 408")


def test_repeated_wrong_keys_from_one_address_are_braked(server, stock):
    url = server.url
    # From 127.0.0.2, so the other tests' address (127.0.0.1) is not braked.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    statuses = []
    with httpx.Client(transport=transport) as client:
        for i in range(40):
            # A fresh X-Forwarded-For each time: not believed (no trusted proxy).
            r = client.get(f"{url}/api/v1/health", timeout=30, headers={
                "X-API-Key": f"guess{i}", "X-Forwarded-For": f"10.9.{i}.1"})
            statuses.append(r.status_code)
        braked = client.get(f"{url}/api/v1/health", headers=USER, timeout=30)
    assert statuses[:10] == [401] * 10  # VCP_AUTH_FAILURES_PER_MINUTE=10
    assert set(statuses[10:]) == {429}, statuses
    assert braked.status_code == 429 and int(braked.headers["retry-after"]) >= 1
    assert "too many wrong API keys from 127.0.0.2" in braked.json()["error"]
    with httpx.Client() as client:  # another address is not affected
        assert predict(client, url, stock.bse_code).status_code == 200


def test_x_forwarded_for_does_not_escape_the_rate_limit(small_store, quick_model, stock):
    """No keys, so the limit is per address; rotating X-Forwarded-For used to get a fresh
    bucket per request (uvicorn believed it from 127.0.0.1)."""
    env = {"VCP_API_KEYS": "", "VCP_ADMIN_KEYS": "", "VCP_RATE_LIMIT": "2",
           "VCP_RATE_BURST": "5"}
    with running_server(small_store.path, env) as proc, httpx.Client() as client:
        statuses = [client.post(f"{proc.url}/api/v1/predict", timeout=30,
                                json={"bse_code": stock.bse_code},
                                headers={"X-Forwarded-For": f"10.0.{i}.1"}).status_code
                    for i in range(20)]
    assert statuses[:5] == [200] * 5
    assert statuses.count(429) >= 12, statuses


# -- 7. the market store gone while serving ----------------------------------------------------
def test_a_store_deleted_while_serving_is_503_and_health_degraded(small_store, quick_model,
                                                                  stock, tmp_path):
    copy = tmp_path / "market.duckdb"
    shutil.copy(small_store.path, copy)
    cal = small_store.calendar()
    with running_server(copy) as proc, httpx.Client() as client:
        url = proc.url
        copy.unlink()
        for day in (cal[-100], cal[-101]):  # one keep-alive connection: never reset
            r = client.post(f"{url}/api/v1/predict", timeout=30,
                            json={"bse_code": stock.bse_code, "prediction_date": str(day)})
            assert r.status_code == 503, r.text  # was 500, then a reset connection
            assert r.headers["retry-after"] == "5"
            assert r.json()["error"].startswith("the market store file is missing")
        assert client.post(f"{url}/api/v1/predict", json={"bse_code": stock.bse_code},
                           timeout=30).status_code == 200  # the latest session, in memory
        health = client.get(f"{url}/api/v1/health", timeout=30).json()
        assert health["status"] == "degraded"  # was "ok"
        assert any(r.startswith("market_store_unavailable: the market store file is missing")
                   for r in health["reasons"])
