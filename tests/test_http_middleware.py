"""The API service's middleware on its own (serving/http.py), with a fake clock where time
matters: keys and the metrics key, the brake on wrong keys, body limits, JSON errors, HEAD
and the spec's post-processing. Through a real server: tests/test_hardening.py."""

from __future__ import annotations

import asyncio
import json

from serving.http import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    HeadAsGetMiddleware,
    JsonErrorsMiddleware,
    SpecTransformMiddleware,
)
from serving.openapi_errors import document_errors_and_keys
from tests.test_ratelimit import FakeClock


async def _echo_app(scope, receive, send):
    """200 with the method and the body it read; 404 text for /missing (as Starlette)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/missing":
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": b"Not Found"})
        return
    payload = json.dumps({"method": scope["method"], "read": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def call(app, path="/api/v1/health", method="GET", headers=(), body=b"", chunks=None,
         client="10.0.0.1"):
    """Status, headers and body of one request through `app`."""
    parts = chunks if chunks is not None else [body]
    hdrs = list(headers)
    if chunks is None and body:
        hdrs.append((b"content-length", str(len(body)).encode()))
    elif chunks is not None:
        hdrs.append((b"transfer-encoding", b"chunked"))
    scope = {"type": "http", "method": method, "path": path, "headers": hdrs,
             "client": (client, 5000)}
    queue = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
             for i, p in enumerate(parts)]
    sent: list[dict] = []

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start.get("headers", [])), content


def key(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-api-key", value.encode())]


def test_keys_admin_and_the_metrics_key():
    mw = ApiKeyMiddleware(_echo_app, keys=["k1"], admin_keys=["a1"], metrics_key="m1")
    bearer = [(b"authorization", b"Bearer m1")]
    assert call(mw)[0] == 401
    assert call(mw, headers=key("k1"))[0] == 200
    assert call(mw, "/api/v1/models/reload", "POST", key("k1"))[0] == 403
    assert call(mw, "/api/v1/models/reload", "POST", key("a1"))[0] == 200
    assert call(mw, "/api/v1/models/reload", "POST", key("nope"))[0] == 401
    status, headers, body = call(mw, "/metrics")
    assert status == 401 and headers[b"www-authenticate"] == b"Bearer"
    assert call(mw, "/metrics", headers=bearer)[0] == 200
    assert call(mw, "/metrics", headers=key("m1"))[0] == 200
    assert call(mw, "/metrics", headers=key("k1"))[0] == 401  # an API key is not the scraper's
    assert call(mw, "/api/v1/metrics", headers=bearer)[0] == 200
    assert call(mw, "/api/v1/metrics", headers=key("k1"))[0] == 200
    assert call(mw, "/livez")[0] == 200 and call(mw, "/docs.json")[0] == 200
    open_api = ApiKeyMiddleware(_echo_app)
    assert call(open_api)[0] == 200 and call(open_api, "/metrics")[0] == 200
    metrics_only = ApiKeyMiddleware(_echo_app, metrics_key="m1")
    assert call(metrics_only)[0] == 200
    assert call(metrics_only, "/api/v1/metrics")[0] == 401


def test_wrong_keys_are_braked_per_address_and_the_budget_refills():
    clock = FakeClock()
    mw = ApiKeyMiddleware(_echo_app, keys=["k1"], failures_per_minute=6, clock=clock)
    assert [call(mw, headers=key(f"g{i}"))[0] for i in range(8)] == [401] * 6 + [429] * 2
    status, headers, body = call(mw, headers=key("k1"))
    assert status == 429 and headers[b"retry-after"] == b"10"  # one failure back per 10 s
    assert "too many wrong API keys from 10.0.0.1" in json.loads(body)["error"]
    assert call(mw, headers=key("k1"), client="10.0.0.2")[0] == 200  # another address
    assert call(mw, client="10.0.0.1")[0] == 401  # no key: not a guess, not braked
    clock.now += 10
    assert call(mw, headers=key("k1"))[0] == 200
    assert call(mw, headers=key("g9"))[0] == 401 and call(mw, headers=key("k1"))[0] == 429
    off = ApiKeyMiddleware(_echo_app, keys=["k1"], failures_per_minute=0)
    assert {call(off, headers=key(f"g{i}"))[0] for i in range(50)} == {401}


def test_bodies_beyond_their_route_limit_are_413_unread():
    mw = BodyLimitMiddleware(_echo_app, default=1000, limits={"/api/v1/predict": 100})
    status, headers, body = call(mw, "/api/v1/predict", "POST", body=b"x" * 101)
    assert status == 413 and headers[b"connection"] == b"close"
    assert json.loads(body)["error"] == ("request body too large: 101 bytes; "
                                         "/api/v1/predict accepts at most 100 bytes")
    assert call(mw, "/api/v1/predict", "POST", body=b"x" * 100)[0] == 200
    assert call(mw, "/api/v1/other", "POST", body=b"x" * 1000)[0] == 200
    assert call(mw, "/api/v1/other", "POST", body=b"x" * 1001)[0] == 413
    # Chunked, no Content-Length: refused as soon as the limit is passed.
    status, _, body = call(mw, "/api/v1/predict", "POST", chunks=[b"x" * 60] * 3)
    assert status == 413 and "more; /api/v1/predict accepts" in json.loads(body)["error"]
    assert call(mw, "/api/v1/predict", "POST", chunks=[b"x" * 50] * 2)[0] == 200
    assert call(mw, "/api/v1/predict", "POST",
                headers=[(b"content-length", b"many")])[0] == 400


def test_plain_text_errors_become_json_and_head_drops_the_body():
    app = HeadAsGetMiddleware(JsonErrorsMiddleware(_echo_app))
    status, headers, body = call(app, "/missing")
    assert status == 404 and headers[b"content-type"] == b"application/json"
    assert json.loads(body) == {"error": "no such route: /missing; see /docs for the API"}
    assert int(headers[b"content-length"]) == len(body)
    status, headers, body = call(app, "/api/v1/health", "HEAD")
    assert status == 200 and body == b"" and int(headers[b"content-length"]) > 0
    status, headers, body = call(app, "/missing", "HEAD")
    assert status == 404 and body == b""


def test_the_spec_transform_documents_statuses_and_keys():
    async def spec_app(scope, receive, send):
        payload = json.dumps({"paths": {
            "/api/v1/predict": {"post": {"requestBody": {}, "responses": {"200": {}}}},
            "/api/v1/health": {"get": {"responses": {"200": {}}}},
            "/api/v1/models/reload": {"post": {"requestBody": {}, "responses": {}}},
            "/api/v1/score_features": {"post": {"requestBody": {}, "responses": {
                "400": {"description": "BentoML's"}}}},
            "/metrics": {"get": {"responses": {"200": {}}}},
            "/readyz": {"get": {"responses": {"200": {}}}}}}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    def transform(**kw):
        return SpecTransformMiddleware(spec_app, transforms=[
            lambda spec: document_errors_and_keys(spec, **kw)])

    _, headers, body = call(transform(keys=True, metrics_key=True), "/docs.json")
    spec = json.loads(body)
    assert int(headers[b"content-length"]) == len(body)
    paths = spec["paths"]
    assert set(paths["/api/v1/predict"]["post"]["responses"]) == {
        "200", "401", "413", "429", "503"}
    assert set(paths["/api/v1/health"]["get"]["responses"]) == {"200", "401", "429"}
    assert "403" in paths["/api/v1/models/reload"]["post"]["responses"]
    score = paths["/api/v1/score_features"]["post"]
    assert {"400", "413", "415", "503"} <= set(score["responses"])
    assert score["responses"]["400"]["description"] != "BentoML's"
    assert score["requestBody"]["required"] is True
    assert paths["/metrics"]["get"]["security"] == [{"MetricsKey": []}]
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert spec["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
    _, _, body = call(transform(keys=False, metrics_key=False), "/docs.json")
    open_spec = json.loads(body)
    assert "security" not in open_spec["paths"]["/api/v1/predict"]["post"]
    assert "401" not in open_spec["paths"]["/api/v1/predict"]["post"]["responses"]
    assert "ApiKey" in open_spec["components"]["securitySchemes"]  # documented either way
