"""Integration tests: a real `bentoml serve` process, real HTTP, a real store and model."""

from __future__ import annotations

import httpx
import pytest

from features import FEATURES
from tests.serverutil import running_server


@pytest.fixture(scope="module")
def server(small_store, quick_model):
    with running_server(small_store.path) as proc:
        yield proc.url


@pytest.fixture(scope="module")
def stock(small_store):
    """A dual-listed stock that can be scored on the latest date."""
    from serving.market_data import features_from_panel

    latest = features_from_panel(small_store.load_panel(None, 400))
    master = small_store.master()
    for i, isin in enumerate(latest.row_of):
        s = master.by_isin(isin)
        if s.nse_symbol and latest.result.reasons[i] is None:
            return s
    raise AssertionError("no scoreable dual-listed stock")


def post(url, path, body, **kw):
    return httpx.post(f"{url}/api/v1/{path}", json=body, timeout=30, **kw)


def test_predict_by_either_identifier(server, stock, quick_model):
    by_code = post(server, "predict", {"bse_code": stock.bse_code})
    by_symbol = post(server, "predict", {"nse_symbol": stock.nse_symbol.lower()})
    assert by_code.status_code == 200, by_code.text
    a, b = by_code.json(), by_symbol.json()
    assert a["isin"] == b["isin"] == stock.isin
    assert a["probability"] == b["probability"]
    assert 0.0 <= a["probability"] <= 1.0
    assert a["confidence"] in {"HIGH", "MEDIUM", "LOW"}
    assert a["model_version"] == quick_model[0]
    assert a["data_source"] == "simulated"
    assert set(a["pattern"]) >= {"vcp_detected", "contractions", "pivot_price", "trend_template"}
    assert len(a["pattern"]["trend_template"]) == 8
    assert a["features"] is None and a["explanation"] is None
    assert float(by_code.headers["x-process-time"]) >= 0


def test_features_and_explanation_on_request(server, stock):
    r = post(server, "predict", {"bse_code": stock.bse_code, "include_features": True,
                                 "include_explanation": True})
    body = r.json()
    assert list(body["features"]) == FEATURES
    top = body["explanation"]["top"]
    assert 1 <= len(top) <= 8 and all(t["feature"] in FEATURES for t in top)
    assert abs(top[0]["contribution"]) >= abs(top[-1]["contribution"])


def test_earlier_date_and_default_date(server, stock, small_store):
    latest = small_store.date_range()[1]
    cal = small_store.calendar()
    earlier = str(cal[-30])
    r1 = post(server, "predict", {"bse_code": stock.bse_code})
    r2 = post(server, "predict", {"bse_code": stock.bse_code, "prediction_date": earlier})
    assert r1.json()["as_of_date"] == str(latest)
    assert r2.status_code in (200, 422), r2.text
    if r2.status_code == 200:
        assert r2.json()["as_of_date"] == earlier


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"bse_code": "999999"}, 404, "999999"),
        ({"nse_symbol": "NOSUCHSTOCK"}, 404, "NOSUCHSTOCK"),
        ({}, 422, "bse_code or nse_symbol"),
        ({"bse_code": "700001", "prediction_date": "1999-01-01"}, 422, "available"),
        ({"bse_code": "700001", "prediction_date": "2030-01-01"}, 422, "available"),
        ({"bse_code": "700001", "prediction_date": "not-a-date"}, 422, "prediction_date"),
        ({"bse_code": "700001", "model_version": "nosuchversion"}, 404, "nosuchversion"),
    ],
)
def test_predict_errors_are_json_with_a_message(server, body, status, text):
    r = post(server, "predict", body)
    assert r.status_code == status, r.text
    assert text in r.json()["error"]


def test_conflicting_identifiers_are_422(server, small_store, stock):
    other = next(c for c in small_store.master().frame["bse_code"] if c != stock.bse_code)
    r = post(server, "predict", {"bse_code": other, "nse_symbol": stock.nse_symbol})
    assert r.status_code == 422
    assert "different stocks" in r.json()["error"]


def test_malformed_bodies_never_500(server):
    for raw in (b"{not json", b"[]", b'"text"', b'{"bse_code": 12'):
        r = httpx.post(f"{server}/api/v1/predict", content=raw,
                       headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code in (400, 422), (raw, r.status_code, r.text)
        assert "error" in r.json()


def test_batch_predict_keeps_going_past_bad_stocks(server, stock):
    r = post(server, "batch_predict", {"stocks": [
        {"bse_code": stock.bse_code}, {"bse_code": "999999"}, {"nse_symbol": stock.nse_symbol}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["isin"] for x in body["results"]] == [stock.isin, stock.isin]
    assert body["errors"] == [{"index": 1, "bse_code": "999999", "nse_symbol": None,
                               "status": 404, "error": "unknown BSE code '999999'"}]


def test_batch_limits(server, stock):
    assert post(server, "batch_predict", {"stocks": []}).status_code == 422
    r = post(server, "batch_predict", {"stocks": [{"bse_code": stock.bse_code}] * 101})
    assert r.status_code == 422 and "100" in r.json()["error"]
    ok = post(server, "batch_predict", {"stocks": [{"bse_code": stock.bse_code}] * 100})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 100


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
    text = httpx.get(f"{server}/api/v1/metrics", timeout=10).text
    for name in ("vcp_predictions_total", "vcp_model_registry_events_total",
                 "vcp_active_model_info", "vcp_feature_seconds"):
        assert name in text
    assert httpx.get(f"{server}/metrics", timeout=10).status_code == 200


def test_openapi_and_swagger_stay(server):
    spec = httpx.get(f"{server}/docs.json", timeout=10).json()
    for path in ("/api/v1/predict", "/api/v1/batch_predict", "/api/v1/health",
                 "/api/v1/models", "/api/v1/models/reload", "/api/v1/metrics"):
        assert path in spec["paths"], path
    assert "examples" in str(spec["components"]["schemas"]["PredictRequest"])
    assert httpx.get(f"{server}/", timeout=10).status_code == 200


def test_score_features_route_for_the_batch_client(server, small_store, quick_model):
    import bentoml
    import numpy as np

    from serving.market_data import features_from_panel

    latest = features_from_panel(small_store.load_panel(None, 400))
    rows = [{"features": [None if np.isnan(v) else float(v) for v in latest.result.values[i]]}
            for i in np.flatnonzero(latest.result.scoreable)[:5]]
    with bentoml.SyncHTTPClient(server) as client:
        out = client.score_features(rows=rows)
    assert len(out) == 5
    assert all(r["model_version"] == quick_model[0] and 0 <= r["probability"] <= 1 for r in out)
