"""The API's documentation: the OpenAPI document's title, version, description and tags, and
the pages that render it, all served offline.

* `/openapi.json` and `/docs.json`: BentoML's generated spec (its routes, the mounted FastAPI
  app's routes and schemas) with this project's `info` and tags in place of BentoML's
  template (`bentoml_workarounds.OPENAPI_TEMPLATE`), built once per worker.
* `/` and `/docs`: Swagger UI on the assets BentoML ships (`/static_content`).
* `/redoc`: ReDoc's standalone bundle, from the PyPI package fastapi-standalone-docs (MIT; it
  ships ReDoc 2.5 with its license file and the sidebar logo the bundle would otherwise fetch
  from a CDN); only its files are used.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import tomllib
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

from serving import bentoml_workarounds as fixes

log = logging.getLogger("vcp.docs")

ROOT = Path(__file__).resolve().parent.parent
API_TITLE = "VCP breakout API"

# The breakout trade whose win the probability is about (the label's parameters).
TRADE = {"valid_sessions": 10, "max_gap": 0.05, "stop_floor": 0.92, "target": 1.20,
         "horizon": 60}

TAGS = [
    {"name": "prediction",
     "description": "Score stocks: for a stock with a VCP setup, the calibrated probability "
                    "that its breakout trade wins; for the others, why there is no setup."},
    {"name": "charts",
     "description": "Setup charts as PNG: daily candles, volume, the 50/150/200-day "
                    "averages, each contraction with its depth, the pivot and the stop."},
    {"name": "models",
     "description": "Model versions in the store: list them, promote one and switch every "
                    "worker to it."},
    {"name": "operations",
     "description": "Health, readiness and Prometheus metrics for operators."},
]


# Summaries of the operations BentoML declares itself (it gives them none).
SUMMARIES = {
    "/healthz": "Liveness (alias of /livez)",
    "/livez": "Liveness probe: the process answers",
    "/readyz": "Readiness probe: market data loaded and the model runner ready",
    "/metrics": "Prometheus metrics of every worker",
    "/api/v1/score_features": "Score precomputed feature rows (the batch's --url mode)",
}


@cache
def project_version() -> str:
    """The project's version, from pyproject.toml (packed into the Bento beside the code)."""
    try:
        with open(ROOT / "pyproject.toml", "rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        log.warning("cannot read the project version from pyproject.toml: %s", exc)
        return "unknown"


def description() -> str:
    t = TRADE
    return f"""\
Finds **Volatility Contraction Pattern** (VCP, Minervini) breakout setups among the NSE and BSE
equities and scores each setup's breakout trade.

> **The demo data is SIMULATED.** The embedded default market is made up: 11,000 invented
> stocks (names end in "(simulated)", BSE codes 7xxxxx, ISINs `INEZ…`). Every answer says which
> data it comes from in `data_source` (`simulated` or `real`).

## What the probability means

For a stock that shows a VCP setup on the as-of session, `probability` is the model's
**calibrated probability that this trade wins**:

1. A buy-stop at the setup's **pivot**, valid for {t['valid_sessions']} sessions. It fills at
   the higher of the session's open and the pivot; it does not fill on a session that opens
   more than {t['max_gap']:.0%} above the pivot.
2. The **stop** is the higher of the last contraction's low and the fill × {t['stop_floor']};
   the **target** is the fill × {t['target']:.2f}.
3. A gap through the stop or the target exits at the open; a session that touches both counts
   as the stop; otherwise the trade is closed at the close {t['horizon']} sessions after the
   fill. A win is an exit at the target.

Calibrated: among held-out setups scored about 0.40, about 40% of these trades won.
A stock **without a setup** gets `probability: null`, `confidence: "NONE"` and `why_not`, the
first criterion it failed.

## Confidence levels

`HIGH`, `MEDIUM` and `LOW` are probability thresholds stored in each model's metadata. They are
set at training from out-of-sample results so that the setups at or above each level reached
a stated precision (share of winning trades, in absolute terms), not from fixed constants; the
daily batch's report prints them.

## Authentication

When the server has API keys (`VCP_API_KEYS`), every `/api/v1/*` call needs the header
`X-API-Key: <key>`: without it the answer is 401. `POST /api/v1/models/reload` needs an admin
key (`VCP_ADMIN_KEYS`; 403 otherwise). With no keys configured the API is open (the server
logs a warning). Each key is rate limited (429 with `Retry-After`), and so is an address that
sends wrong keys again and again. These pages, `/livez` and `/readyz` need no key; `/metrics`
needs `Authorization: Bearer <key>` when the server has a metrics key (`VCP_METRICS_KEY`).

## Stocks, dates and errors

Name a stock by `isin`, `bse_code` (6 digits) or `nse_symbol`. `prediction_date` defaults to
the newest session; a weekend or holiday maps to the session before it (`note` says so).
Errors are `{{"error": "..."}}`: 404 unknown stock or model version, 413 a body larger than the
route accepts, 422 a request the API cannot serve, 429 too many requests, 503 retry later
(after `Retry-After` seconds). Each operation lists the statuses it can answer.

Interactive: [/docs](/docs) · reference: [/redoc](/redoc) · this document:
[/openapi.json](/openapi.json)
"""


def document_info() -> dict[str, Any]:
    return {"title": API_TITLE, "version": project_version(), "description": description()}


# -- pages -------------------------------------------------------------------------------------
SWAGGER_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VCP breakout API - Swagger UI</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static_content/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static_content/swagger-ui-bundle.js"></script>
<script src="/static_content/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "BaseLayout",
  validatorUrl: null});
</script></body></html>
"""

REDOC_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VCP breakout API - reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>body{margin:0;padding:0}</style></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="/redoc/redoc.standalone.js"></script></body></html>
"""

# The package's bundle asks for its sidebar logo at <page path>/logo-mini.svg.
REDOC_FILES = {
    "/redoc/redoc.standalone.js": ("redoc.standalone.js", b"application/javascript"),
    "/redoc/redoc.standalone.js.LICENSE.txt": ("redoc.standalone.js.LICENSE.txt",
                                               b"text/plain; charset=utf-8"),
    "/redoc/logo-mini.svg": ("logo-mini.svg", b"image/svg+xml"),
}
REDOC_PACKAGE = "fastapi_standalone_docs"


def redoc_dir() -> Path | None:
    """The folder of the installed ReDoc bundle (without importing the package's code)."""
    spec = importlib.util.find_spec(REDOC_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static" / "redoc"
    return folder if folder.is_dir() else None


@cache
def _redoc_file(name: str) -> bytes | None:
    folder = redoc_dir()
    if folder is None or not (folder / name).is_file():
        log.error("ReDoc's bundle is missing (%s): install fastapi-standalone-docs "
                  "(requirements.txt)", name)
        return None
    return (folder / name).read_bytes()


# -- middleware --------------------------------------------------------------------------------
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _respond(send: Send, status: int, body: bytes, ctype: bytes, head: bool,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", ctype), (b"content-length", str(len(body)).encode()),
        *(extra or [])]})
    await send({"type": "http.response.body", "body": b"" if head else body})


class DocsMiddleware:
    """Serves the documentation in front of BentoML: `/`, `/docs` (Swagger UI), `/redoc`
    (ReDoc) and its files, and `/openapi.json` = `/docs.json` (BentoML's spec rewritten with
    this project's info and tags, built once from BentoML's own `/docs.json`)."""

    PAGES = {"/": SWAGGER_HTML, "/docs": SWAGGER_HTML, "/redoc": REDOC_HTML}
    SPEC_PATHS = ("/openapi.json", "/docs.json")

    def __init__(self, app):
        self.app = app
        self._spec: bytes | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        head = scope["method"] == "HEAD"
        if path in self.SPEC_PATHS:
            return await self._send_spec(scope, receive, send, head)
        page = self.PAGES.get(path.rstrip("/") or "/")
        if page is not None:
            return await _respond(send, 200, page, b"text/html; charset=utf-8", head)
        asset = REDOC_FILES.get(path.replace("//", "/"))
        if asset is not None:
            body = _redoc_file(asset[0])
            if body is None:
                return await _respond(send, 404, b"ReDoc's bundle is not installed "
                                      b"(fastapi-standalone-docs)", b"text/plain", head)
            return await _respond(send, 200, body, asset[1], head,
                                  [(b"cache-control", b"public, max-age=86400")])
        return await self.app(scope, receive, send)

    async def _send_spec(self, scope, receive, send, head: bool) -> None:
        if self._spec is None:
            status, upstream = await self._upstream_spec(scope, receive)
            if status != 200:
                return await _respond(send, status, upstream, b"application/json", head)
            spec = fixes.replace_template_info(json.loads(upstream), document_info(), TAGS,
                                               fixes.BENTOML_TAG_NAMES, SUMMARIES)
            self._spec = json.dumps(spec).encode()
        await _respond(send, 200, self._spec, b"application/json", head)

    async def _upstream_spec(self, scope, receive) -> tuple[int, bytes]:
        """BentoML's own answer to GET /docs.json."""
        inner = {**scope, "method": "GET", "path": "/docs.json", "raw_path": b"/docs.json"}
        status, chunks = 500, []

        async def capture(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(inner, receive, capture)
        return status, b"".join(chunks)
