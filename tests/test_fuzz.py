"""Schemathesis against the service's own OpenAPI spec on a real server, and the doc paths.

Bounded: at most 50 generated cases per operation (plus the examples and coverage phases), a
fixed seed; the whole module takes well under a minute once the server is up.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.serverutil import running_server

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# BentoML's own route: its generated spec documents a 400 body whose `detail` is a string while
# its handler returns pydantic's list of errors. Fuzzed for 5xx only.
BENTOML_NATIVE = "/api/v1/score_features"
RESPONSE_CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
                   "response_headers_conformance,response_schema_conformance")


@pytest.fixture(scope="module")
def server(small_store, quick_model):
    # The fuzzer's burst of requests is not what the rate limit is about: raise it here.
    with running_server(small_store.path, {"VCP_RATE_LIMIT": "100000"}) as proc:
        yield proc.url


def schemathesis(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--url", url,
           "--max-examples", "50", "--seed", "1", "--generation-database", "none",
           "--workers", "2", "--no-color", "--request-timeout", "30", *args]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_no_server_error_and_responses_match_the_spec(server, tmp_path):
    out = schemathesis(server, tmp_path, "--checks", RESPONSE_CHECKS,
                       "--exclude-path", BENTOML_NATIVE)
    report = out.stdout[-6000:]
    assert out.returncode == 0, report
    assert "Tested:" in out.stdout, report


def test_bentoml_native_route_never_5xx(server, tmp_path):
    out = schemathesis(server, tmp_path, "--checks", "not_a_server_error",
                       "--include-path", BENTOML_NATIVE)
    assert out.returncode == 0, out.stdout[-6000:]


def test_seed_compatible_doc_paths(server):
    spec = httpx.get(f"{server}/docs.json", timeout=10).json()
    alias = httpx.get(f"{server}/openapi.json", timeout=10)
    assert alias.status_code == 200 and alias.json() == spec
    for path, marker in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "/openapi.json")):
        page = httpx.get(f"{server}{path}", timeout=10)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        assert marker in page.text
        assert "https://" not in page.text  # offline: no CDN
    # Swagger UI's assets come from BentoML's bundled static content.
    js = httpx.get(f"{server}/static_content/swagger-ui-bundle.js", timeout=10)
    assert js.status_code == 200 and len(js.content) > 100_000
    assert httpx.get(f"{server}/", timeout=10).status_code == 200


def test_found_by_fuzzing_now_json_errors(server):
    # A body that is not UTF-8: FastAPI's own 400 now carries {"error": ...} like the rest.
    r = httpx.post(f"{server}/api/v1/predict", content=b"\xff\xfe\x00{",
                   headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code in (400, 422) and "error" in r.json(), r.text
    # A JSON body declared as multipart: 415, where BentoML's parser answered 500.
    r = httpx.post(f"{server}/api/v1/score_features", content=b'{"rows": []}',
                   headers={"Content-Type": "multipart/form-data"}, timeout=10)
    assert r.status_code == 415 and "error" in r.json(), r.text
    # A feature beyond float32 (xgboost's input type): refused, where it failed the micro-batch.
    row = {"features": [1.0] * 24 + [1.7e308]}
    r = httpx.post(f"{server}/api/v1/score_features", json={"rows": [row]}, timeout=10)
    assert r.status_code == 400, r.text
    # A model version no BentoML tag can hold: 422, where the store raised (500).
    r = httpx.post(f"{server}/api/v1/predict", json={"bse_code": "700001",
                                                      "model_version": "0" * 79}, timeout=10)
    assert r.status_code == 422 and "model_version" in r.json()["error"], r.text
