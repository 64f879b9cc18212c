"""End to end: a real `bentoml serve` process, real HTTP, a real store and model. The routes'
error cases, the date policy and the registry are covered in process (test_api_inprocess.py);
here each path goes through BentoML: the API service, the runner service and back."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import numpy as np
import pytest

from features import FEATURES
from tests.oracle import expected_scores
from tests.serverutil import running_server


@pytest.fixture(scope="module")
def server(small_store, quick_model):
    with running_server(small_store.path) as proc:
        yield proc.url


def post(url, path, body, **kw):
    return httpx.post(f"{url}/api/v1/{path}", json=body, timeout=30, **kw)


def test_predict_by_each_identifier(server, stock, oracle, quick_model, small_store):
    started = time.perf_counter()
    by_code = post(server, "predict", {"bse_code": stock.bse_code})
    round_trip = time.perf_counter() - started
    by_symbol = post(server, "predict", {"nse_symbol": stock.nse_symbol.lower()})
    by_isin = post(server, "predict", {"isin": stock.isin})
    assert [r.status_code for r in (by_code, by_symbol, by_isin)] == [200] * 3, by_code.text
    p, conf = expected_scores(quick_model[0], oracle.values[[oracle.row(stock.isin)]])
    for r in (by_code, by_symbol, by_isin):
        a = r.json()
        assert a["isin"] == stock.isin
        assert a["probability"] == pytest.approx(p[0], abs=1e-6)
        assert a["confidence"] == conf[0]
        assert a["model_version"] == quick_model[0]
        assert a["as_of_date"] == str(small_store.date_range()[1]) and a["note"] is None
    a = by_code.json()
    assert a["data_source"] == "simulated"
    assert len(a["trend_template"]) == 8
    assert a["trend_template_count"] == sum(a["trend_template"].values())
    assert (a["pattern"] is None) == (a["why_not"] is not None)
    assert a["features"] is None and a["explanation"] is None
    assert 0 < float(by_code.headers["x-process-time"]) < round_trip


def test_features_and_explanation_on_request(server, stock, oracle):
    r = post(server, "predict", {"bse_code": stock.bse_code, "include_features": True,
                                 "include_explanation": True})
    body = r.json()
    assert list(body["features"]) == FEATURES
    row = oracle.values[oracle.row(stock.isin)]
    assert [body["features"][f] for f in FEATURES] == pytest.approx(
        [None if np.isnan(v) else v for v in row])
    top = body["explanation"]["top"]
    assert len(top) == 8 and all(t["feature"] in FEATURES for t in top)
    assert abs(top[0]["contribution"]) >= abs(top[-1]["contribution"])


def test_an_earlier_session_and_a_weekend(server, stock, earlier_setup, small_store,
                                          quick_model):
    cal = [d.astype(object) for d in small_store.calendar()]
    then_stock, earlier, then = earlier_setup
    r = post(server, "predict", {"bse_code": then_stock.bse_code,
                                 "prediction_date": str(earlier)})
    assert r.status_code == 200, r.text
    p, _ = expected_scores(quick_model[0], then.values[[then.row(then_stock.isin)]])
    assert r.json()["as_of_date"] == str(earlier)
    assert r.json()["probability"] == pytest.approx(p[0], abs=1e-6)
    friday = next(d for d in cal[-40:-1] if d.weekday() == 4)
    sunday = friday + dt.timedelta(days=2)
    w = post(server, "predict", {"bse_code": stock.bse_code, "prediction_date": str(sunday)})
    assert w.status_code == 200 and w.json()["as_of_date"] == str(friday)
    assert w.json()["note"].startswith(f"{sunday} is not a trading session")


def test_errors_through_bentoml_are_json(server, stock):
    r = post(server, "predict", {"bse_code": "999999"})
    assert r.status_code == 404 and r.json() == {"error": "unknown BSE code '999999'"}
    r = post(server, "predict", {"bse_code": "700001", "ticker": "X"})
    assert r.status_code == 422 and "unknown field(s): ticker" in r.json()["error"]
    r = post(server, "predict", {"bse_code": stock.bse_code, "model_version": "nosuchversion"})
    assert r.status_code == 404 and "'nosuchversion' not found" in r.json()["error"]
    r = httpx.post(f"{server}/api/v1/predict", content=b"{not json",
                   headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code in (400, 422) and r.json()["error"]


def test_batch_predict_through_the_runners_micro_batches(server, stock):
    r = post(server, "batch_predict", {"stocks": [
        {"bse_code": stock.bse_code}, {"bse_code": "999999"}, {"isin": stock.isin}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["isin"] for x in body["results"]] == [stock.isin, stock.isin]
    assert body["errors"] == [{"index": 1, "isin": None, "bse_code": "999999",
                               "nse_symbol": None, "status": 404,
                               "error": "unknown BSE code '999999'"}]
    ok = post(server, "batch_predict", {"stocks": [{"bse_code": stock.bse_code}] * 100})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 100
    assert len({x["probability"] for x in ok.json()["results"]}) == 1


def test_health_models_and_metrics(server, quick_model, stock):
    assert post(server, "predict", {"bse_code": stock.bse_code}).status_code == 200
    health = httpx.get(f"{server}/api/v1/health", timeout=10).json()
    assert health["status"] == "ok", health
    assert health["active_model"] == quick_model[0]
    assert health["universe_size"] == 400 and health["requests"] >= 1
    assert health["data_source"] == "simulated"
    models = httpx.get(f"{server}/api/v1/models", timeout=10).json()
    assert models["active"] == quick_model[0]
    mine = next(m for m in models["models"] if m["version"] == quick_model[0])
    assert mine["active"] and mine["cached"]
    # Counted in the API worker, read back through the multiprocess registry.
    text = httpx.get(f"{server}/api/v1/metrics", timeout=10).text
    served = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith("vcp_predictions_total{"))
    assert served >= 1
    for name in ("vcp_model_registry_events_total", "vcp_active_model_info",
                 "vcp_feature_seconds"):
        assert name in text
    assert "vcp_predictions_total" in httpx.get(f"{server}/metrics", timeout=10).text


def test_chart_through_bentoml(server, stock):
    r = httpx.get(f"{server}/api/v1/chart", params={"bse_code": stock.bse_code}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    bad = httpx.get(f"{server}/api/v1/chart", params={"bse_code": "999999"}, timeout=30)
    assert bad.status_code == 404 and bad.json() == {"error": "unknown BSE code '999999'"}


def test_openapi_and_swagger_stay(server):
    spec = httpx.get(f"{server}/docs.json", timeout=10).json()
    for path in ("/api/v1/predict", "/api/v1/batch_predict", "/api/v1/health",
                 "/api/v1/models", "/api/v1/models/reload", "/api/v1/metrics",
                 "/api/v1/chart"):
        assert path in spec["paths"], path
    assert "examples" in str(spec["components"]["schemas"]["PredictRequest"])
    assert "isin" in spec["components"]["schemas"]["PredictRequest"]["properties"]
    assert httpx.get(f"{server}/", timeout=10).status_code == 200


def test_score_features_route_for_the_batch_client(server, oracle, quick_model):
    import bentoml

    rows_idx = np.flatnonzero(oracle.scoreable)[:5]
    rows = [{"features": [None if np.isnan(v) else float(v) for v in oracle.values[i]]}
            for i in rows_idx]
    with bentoml.SyncHTTPClient(server) as client:
        out = client.score_features(rows=rows)
    p, conf = expected_scores(quick_model[0], oracle.values[rows_idx])
    assert [r["model_version"] for r in out] == [quick_model[0]] * 5
    assert [r["probability"] for r in out] == pytest.approx(p, abs=1e-6)
    assert [r["confidence"] for r in out] == list(conf)
