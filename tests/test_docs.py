"""The API documentation (serving/docs.py) in process: the OpenAPI document the service serves
(BentoML's generated spec of the real service, rewritten), Swagger UI and ReDoc pages and
ReDoc's bundle. The browser test (test_browser.py) renders them from a real server."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving import docs

ROOT = Path(__file__).resolve().parent.parent
TAG_NAMES = [t["name"] for t in docs.TAGS]


class FakeBento:
    """Answers /docs.json with the given document (BentoML's), counting the calls; 404
    elsewhere."""

    def __init__(self, spec: dict[str, Any], status: int = 200):
        self.body = json.dumps(spec).encode()
        self.status = status
        self.calls = 0

    async def __call__(self, scope, receive, send):
        if scope["path"] == "/docs.json":
            self.calls += 1
            await send({"type": "http.response.start", "status": self.status,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": self.body[:100],
                        "more_body": True})
            await send({"type": "http.response.body", "body": self.body[100:]})
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"upstream"})


@pytest.fixture(scope="module")
def bentoml_spec() -> dict[str, Any]:
    import service

    return service.api_service.openapi_spec.asdict()


@pytest.fixture
def upstream(bentoml_spec):
    return FakeBento(bentoml_spec)


@pytest.fixture
def client(upstream):
    return TestClient(docs.DocsMiddleware(upstream))


def test_the_document_says_what_the_api_is(client, upstream):
    spec = client.get("/openapi.json").json()
    assert client.get("/docs.json").json() == spec
    assert upstream.calls == 1  # built once per worker
    info = spec["info"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert info["title"] == "VCP breakout API" and info["version"] == version
    assert set(info) == {"title", "version", "description"}  # no BentoML contact
    text = " ".join(info["description"].split())
    for needed in ("SIMULATED", "buy-stop", "pivot", "valid for 10 sessions", "5%",
                   "fill × 0.92", "fill × 1.20", "60 sessions", "probability: null",
                   "why_not", "calibrated", "X-API-Key", "VCP_API_KEYS", "admin key",
                   "metadata", "out-of-sample"):
        assert needed in text, needed
    assert "BentoML" not in json.dumps(info) and "shields.io" not in text


def test_every_operation_has_one_of_the_four_tags_and_a_summary(client):
    spec = client.get("/openapi.json").json()
    used = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert len(op["tags"]) == 1 and op["tags"][0] in TAG_NAMES, (method, path)
            assert op["summary"], (method, path)
            assert "<code>" not in op.get("description", "")
            used.append(op["tags"][0])
    assert [t["name"] for t in spec["tags"]] == [n for n in TAG_NAMES if n in used]
    assert all(t["description"] for t in spec["tags"])
    by_path = {p: next(iter(ops.values()))["tags"][0] for p, ops in spec["paths"].items()}
    assert by_path["/api/v1/predict"] == by_path["/api/v1/score_features"] == "prediction"
    assert by_path["/api/v1/models/reload"] == "models"
    assert by_path["/readyz"] == by_path["/api/v1/health"] == "operations"


def test_every_reference_resolves(client):
    spec = client.get("/openapi.json").json()

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    found = set(refs(spec))
    assert found, "the document uses references"
    # Only what the routes use: none of BentoML's task-API schemas; no "." server.
    assert {f"#/components/schemas/{name}" for name in spec["components"]["schemas"]} == found
    assert "TaskStatusResponse" not in spec["components"]["schemas"]
    assert "servers" not in spec
    for ref in found:
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]  # KeyError: an unresolved reference


def test_swagger_ui_at_root_and_docs_offline(client):
    for path in ("/", "/docs", "/docs/"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in page.text and "/static_content/swagger-ui-bundle.js" in page.text
        assert "https://" not in page.text and "googletagmanager" not in page.text
    assert client.head("/docs").content == b""


def test_redoc_page_and_its_bundle_from_the_package(client):
    page = client.get("/redoc")
    assert page.status_code == 200 and "/redoc/redoc.standalone.js" in page.text
    assert 'spec-url="/openapi.json"' in page.text and "https://" not in page.text
    js = client.get("/redoc/redoc.standalone.js")
    assert js.status_code == 200 and js.headers["content-type"] == "application/javascript"
    assert len(js.content) > 500_000 and b"Redoc" in js.content[:2000]
    assert b"cdn.redoc.ly" not in js.content  # the package points the logo at the page
    assert client.get("/redoc/logo-mini.svg").content.lstrip().startswith(b"<svg")
    lic = client.get("/redoc/redoc.standalone.js.LICENSE.txt")
    assert lic.status_code == 200 and b"MIT" in lic.content


def test_other_paths_and_methods_pass_through(client, bentoml_spec):
    assert client.get("/livez").text == "upstream"
    assert client.post("/docs").text == "upstream"
    failing = TestClient(docs.DocsMiddleware(FakeBento(bentoml_spec, status=500)))
    assert failing.get("/openapi.json").status_code == 500


def test_the_fastapi_app_has_no_docs_of_its_own():
    from serving.api import build_app

    app = build_app(lambda: None)  # type: ignore[arg-type, return-value]
    assert app.docs_url is None and app.redoc_url is None and app.openapi_url is None
    assert app.title == docs.API_TITLE and app.version == docs.project_version()
