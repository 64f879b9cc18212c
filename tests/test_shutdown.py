"""Graceful shutdown: SIGTERM while a slow request is in flight; the request still gets its 200."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.serverutil import running_server


def test_sigterm_lets_the_request_in_flight_finish(small_store, quick_model, earlier_setup):
    stock, day, _ = earlier_setup
    # An older date is computed on demand (panel read + features), then a setup scored and
    # explained 100 times: long enough to be in flight when the signal lands.
    body = {"stocks": [{"bse_code": stock.bse_code}] * 100, "prediction_date": str(day),
            "include_explanation": True}
    with running_server(small_store.path, {"VCP_RATE_LIMIT": "0"}) as proc:
        result: dict = {}

        def slow_request():
            started = time.monotonic()
            try:
                r = httpx.post(f"{proc.url}/api/v1/batch_predict", json=body, timeout=60)
                result["status"], result["body"] = r.status_code, r.json()
            except httpx.HTTPError as exc:
                result["error"] = repr(exc)
            result["seconds"] = time.monotonic() - started

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.3)  # the request is being served
        assert worker.is_alive(), f"the request was not slow enough to test with: {result}"
        proc.send_signal(signal.SIGTERM)
        worker.join(timeout=60)
        proc.wait(timeout=60)
    assert result.get("status") == 200, result
    assert len(result["body"]["results"]) + len(result["body"]["errors"]) == 100
    assert result["body"]["results"], result["body"]["errors"][:3]
    # After the drain, the server is gone: new connections are refused.
    assert proc.returncode is not None
