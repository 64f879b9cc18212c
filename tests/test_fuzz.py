"""Schemathesis against the service's own OpenAPI spec on a real server, and the doc paths.

Every operation (BentoML's score_features included), every check schemathesis has (`--checks
all`: status codes, content types, headers and schemas of the answers, schema-valid data
accepted and invalid data refused, the key enforced, undocumented methods refused...), with
API keys configured and sent. At most FUZZ_EXAMPLES generated cases per operation (50 here;
`make fuzz-full` runs 200), a fixed seed. tests/schemathesis.toml says which statuses
schema-valid requests may get (422 for a request the API cannot serve, e.g. a date outside the
store).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.serverutil import ROOT, running_server

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = ROOT / "tests" / "schemathesis.toml"
EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "50")
ADMIN_KEY = "fuzz-admin"


@pytest.fixture(scope="module")
def server(small_store, quick_model):
    # The fuzzer's burst of requests is not what the rate limit is about, and its wrong-key
    # probes (ignored_auth) would trip the brake on wrong keys: both off here. A date waits
    # for its computation slot as long as it takes (the 503 is not what is fuzzed).
    env = {"VCP_RATE_LIMIT": "100000", "VCP_API_KEYS": "fuzz-user",
           "VCP_ADMIN_KEYS": ADMIN_KEY, "VCP_AUTH_FAILURES_PER_MINUTE": "0",
           "VCP_DATE_WAIT_SECONDS": "120"}
    with running_server(small_store.path, env) as proc:
        yield proc.url


def schemathesis(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
           "--url", url, "--header", f"X-API-Key: {ADMIN_KEY}", "--max-examples", EXAMPLES,
           "--seed", "1", "--generation-database", "none", "--workers", "2", "--no-color",
           "--request-timeout", "60", *args]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800)


def test_every_operation_passes_every_check(server, tmp_path):
    spec = httpx.get(f"{server}/openapi.json", timeout=10).json()
    operations = sum(len(item) for item in spec["paths"].values())
    out = schemathesis(server, tmp_path, "--checks", "all")
    report = out.stdout[-8000:]
    assert out.returncode == 0, report
    assert f"Tested: {operations}" in out.stdout, report
    print("\n" + "\n".join(line for line in out.stdout.splitlines()
                             if "generated" in line or " passed in " in line))


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
    key = {"X-API-Key": ADMIN_KEY}
    # A body that is not UTF-8: FastAPI's own 400 now carries {"error": ...} like the rest.
    r = httpx.post(f"{server}/api/v1/predict", content=b"\xff\xfe\x00{",
                   headers={**key, "Content-Type": "application/json"}, timeout=10)
    assert r.status_code in (400, 422) and "error" in r.json(), r.text
    # A JSON body declared as multipart: 415, where BentoML's parser answered 500.
    r = httpx.post(f"{server}/api/v1/score_features", content=b'{"rows": []}',
                   headers={**key, "Content-Type": "multipart/form-data"}, timeout=10)
    assert r.status_code == 415 and "error" in r.json(), r.text
    # A feature beyond float32 (xgboost's input type): refused, where it failed the micro-batch.
    row = {"features": [1.0] * 24 + [1.7e308]}
    r = httpx.post(f"{server}/api/v1/score_features", json={"rows": [row]}, headers=key,
                   timeout=10)
    assert r.status_code == 400, r.text
    # A model version no BentoML tag can hold: 422, where the store raised (500).
    r = httpx.post(f"{server}/api/v1/predict", json={"bse_code": "700001",
                                                      "model_version": "0" * 79},
                   headers=key, timeout=10)
    assert r.status_code == 422 and "model_version" in r.json()["error"], r.text
    # Found with every check on (issue 17): 0 is not false, true is not a number, an empty
    # batch is refused by the schema's own minItems, and undocumented methods are 405 JSON.
    r = httpx.post(f"{server}/api/v1/predict", json={"bse_code": "700001",
                                                      "include_explanation": 0},
                   headers=key, timeout=10)
    assert r.status_code == 422, r.text
    r = httpx.post(f"{server}/api/v1/score_features",
                   json={"rows": [{"features": [True] * 25}]}, headers=key, timeout=10)
    assert r.status_code == 400, r.text
    r = httpx.delete(f"{server}/api/v1/score_features", headers=key, timeout=10)
    assert r.status_code == 405 and r.headers["content-type"] == "application/json"
