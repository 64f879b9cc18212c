"""Rate limiting: the token bucket on its own (fake clock), then through a real server."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from serving.ratelimit import RateLimitMiddleware
from tests.serverutil import running_server
from vcp.settings import load_settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def call(mw, path="/api/v1/predict", key=None, client="10.0.0.1"):
    scope = {"type": "http", "method": "POST", "path": path, "headers": [],
             "client": (client, 5555)}
    if key:
        scope["state"] = {"api_key": key}
    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(mw(scope, None, send))
    start = sent[0]
    headers = dict(start.get("headers", []))
    body = json.loads(sent[1]["body"]) if sent[1]["body"] else None
    return start["status"], headers, body


def test_burst_then_refill_at_the_rate():
    clock = FakeClock()
    mw = RateLimitMiddleware(_ok_app, rate=10, burst=20, workers=1, clock=clock)
    statuses = [call(mw)[0] for _ in range(25)]
    assert statuses == [200] * 20 + [429] * 5
    status, headers, body = call(mw)
    assert status == 429 and headers[b"retry-after"] == b"1"
    assert headers[b"content-type"] == b"application/json"
    assert "rate limit exceeded" in body["error"] and "10 requests/s" in body["error"]
    clock.now += 0.5  # 5 tokens back
    assert [call(mw)[0] for _ in range(6)] == [200] * 5 + [429]


def test_clients_are_keys_or_addresses_and_independent():
    clock = FakeClock()
    mw = RateLimitMiddleware(_ok_app, rate=1, burst=2, workers=1, clock=clock)
    assert [call(mw, key="a")[0] for _ in range(3)] == [200, 200, 429]
    assert call(mw, key="b")[0] == 200  # another key has its own bucket
    assert [call(mw, client="10.0.0.2")[0] for _ in range(3)] == [200, 200, 429]
    assert call(mw, client="10.0.0.3")[0] == 200


def test_only_the_api_is_limited():
    mw = RateLimitMiddleware(_ok_app, rate=1, burst=1, workers=1, clock=FakeClock())
    assert call(mw)[0] == 200 and call(mw)[0] == 429
    for path in ("/livez", "/readyz", "/metrics", "/docs.json", "/"):
        assert call(mw, path=path)[0] == 200


def test_workers_divide_rate_and_burst():
    mw = RateLimitMiddleware(_ok_app, rate=100, burst=200, workers=4, clock=FakeClock())
    assert (mw.rate, mw.burst) == (25, 50)
    assert [call(mw)[0] for _ in range(51)] == [200] * 50 + [429]
    # Each of 4 workers lets 50 through: 200 in all, the configured burst.


def test_settings_give_the_totals_and_0_disables(monkeypatch):
    monkeypatch.setenv("VCP_RATE_LIMIT", "50")
    monkeypatch.delenv("VCP_RATE_BURST", raising=False)
    monkeypatch.setenv("VCP_API_WORKERS", "2")
    s = load_settings()
    mw = RateLimitMiddleware(_ok_app, s.rate_limit, s.rate_burst_total, s.api_workers)
    assert (mw.total_rate, mw.total_burst, mw.rate, mw.burst) == (50, 100, 25, 50)
    off = RateLimitMiddleware(_ok_app, 0, 0, clock=FakeClock())
    assert all(call(off)[0] == 200 for _ in range(500))


def test_idle_buckets_are_dropped(monkeypatch):
    import serving.ratelimit as rl

    monkeypatch.setattr(rl, "MAX_CLIENTS", 10)
    clock = FakeClock()
    mw = RateLimitMiddleware(_ok_app, rate=1, burst=1, workers=1, clock=clock)
    for i in range(10):
        call(mw, client=f"10.1.0.{i}")
    clock.now += 5  # all refilled: idle
    call(mw, client="10.2.0.1")
    assert len(mw.buckets) == 1


def test_real_server_429_beyond_the_limit_200_within(small_store, quick_model):
    """Two API workers: each enforces half the rate and half the burst (10 / 2 = 5)."""
    env = {"VCP_RATE_LIMIT": "2", "VCP_RATE_BURST": "10", "VCP_API_KEYS": "key-a,key-b,key-c",
           "VCP_API_WORKERS": "2"}
    with running_server(small_store.path, env) as proc:
        url = proc.url
        # One keep-alive connection stays on one worker: its share of the burst, then 429.
        with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": "key-a"}) as client:
            a = [client.get("/api/v1/health") for _ in range(8)]
        codes = [r.status_code for r in a]
        assert codes[:5] == [200] * 5, codes  # within the limit
        assert 429 in codes[5:], codes  # beyond it
        limited = next(r for r in a if r.status_code == 429)
        assert int(limited.headers["retry-after"]) >= 1
        assert "rate limit" in limited.json()["error"]
        # A new connection per request spreads over both workers: never more than the total.
        started = time.monotonic()
        spread = [httpx.get(f"{url}/api/v1/health", headers={"X-API-Key": "key-c"}, timeout=30)
                  for _ in range(25)]
        allowed = sum(r.status_code == 200 for r in spread)
        assert {r.status_code for r in spread} <= {200, 429}
        assert 5 <= allowed <= 10 + 2 * (time.monotonic() - started) + 1, allowed
        # Another key is not affected; nor are the probes and the Prometheus endpoint.
        assert httpx.get(f"{url}/api/v1/health", headers={"X-API-Key": "key-b"},
                         timeout=30).status_code == 200
        for path in ("/livez", "/readyz", "/metrics"):
            assert httpx.get(f"{url}{path}", timeout=30).status_code == 200, path
        # Unauthenticated requests are refused by auth (401), before any bucket.
        assert httpx.get(f"{url}/api/v1/health", timeout=30).status_code == 401
