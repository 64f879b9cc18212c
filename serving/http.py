"""ASGI middleware of the API service: API keys, the X-Process-Time header and the
seed-compatible documentation paths (/docs, /redoc, /openapi.json)."""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Iterable

log = logging.getLogger("vcp.auth")

ADMIN_PATHS = ("/api/v1/models/reload",)
PROTECTED_PREFIX = "/api/v1/"


def _matches(candidate: bytes, keys: list[bytes]) -> bool:
    # Compare against every key, always, so timing reveals neither which nor how many matched.
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key)
    return found


async def _send_json(send, status: int, body: dict, extra_headers=()) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class ApiKeyMiddleware:
    """X-API-Key on /api/v1/* when keys are configured (VCP_API_KEYS, VCP_ADMIN_KEYS);
    reload needs an admin key. With no keys the API is open (warned once)."""

    def __init__(self, app, keys: Iterable[str] = (), admin_keys: Iterable[str] = ()):
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.admin_keys = [k.encode() for k in admin_keys]
        if not self.keys and not self.admin_keys:
            log.warning("no API keys configured (VCP_API_KEYS/VCP_ADMIN_KEYS): the API is open")

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if (scope["type"] != "http" or not path.startswith(PROTECTED_PREFIX)
                or not (self.keys or self.admin_keys)):
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope.get("headers", []) if k == b"x-api-key"), None)
        if given is None:
            return await _send_json(send, 401, {"error": "missing X-API-Key header"})
        if path in ADMIN_PATHS:
            if not _matches(given, self.admin_keys):
                return await _send_json(send, 403, {"error": "this route needs an admin key"})
        elif not _matches(given, self.keys + self.admin_keys):
            return await _send_json(send, 401, {"error": "invalid X-API-Key"})
        scope.setdefault("state", {})["api_key"] = given.decode(errors="replace")
        return await self.app(scope, receive, send)


class ProcessTimeMiddleware:
    """Adds X-Process-Time (seconds) to every response and feeds the health statistics."""

    def __init__(self, app, on_response=None):
        self.app = app
        self.on_response = on_response

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status_holder = {}

        async def send_with_time(message):
            if message["type"] == "http.response.start":
                elapsed = time.perf_counter() - started
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-process-time", f"{elapsed:.6f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_time)
        if self.on_response and scope.get("path", "").startswith(PROTECTED_PREFIX):
            self.on_response(time.perf_counter() - started, status_holder.get("status", 500))


# Swagger UI from the assets BentoML ships (served at /static_content): no CDN, works offline.
_SWAGGER_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VCP breakout scoring API - Swagger UI</title>
<link rel="stylesheet" href="/static_content/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static_content/swagger-ui-bundle.js"></script>
<script src="/static_content/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "BaseLayout"});
</script></body></html>
"""

# A small read-only reference page (the ReDoc bundle is not shipped offline): every operation
# with its summary, request schema and responses, rendered from /openapi.json.
_REDOC_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VCP breakout scoring API - reference</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}
h2{border-bottom:1px solid #ccc}code,pre{background:#f6f6f6}pre{padding:.5em;overflow:auto}
.m{font-weight:bold;text-transform:uppercase;margin-right:.5em}</style></head>
<body><div id="doc">Loading /openapi.json ...</div>
<script>
fetch("/openapi.json").then(r => r.json()).then(spec => {
  const esc = s => String(s ?? "").replace(/[&<>]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;"})[c]);
  let h = `<h1>${esc(spec.info.title)} ${esc(spec.info.version)}</h1>`;
  h += `<p>${esc(spec.info.description)}</p><p>Spec: <a href="/openapi.json">/openapi.json</a>`;
  h += ` - interactive: <a href="/docs">/docs</a></p>`;
  for (const [path, ops] of Object.entries(spec.paths || {})) {
    for (const [method, op] of Object.entries(ops)) {
      h += `<h2><span class="m">${esc(method)}</span><code>${esc(path)}</code></h2>`;
      h += `<p>${esc(op.summary || "")}</p><p>${esc(op.description || "")}</p>`;
      const body = op.requestBody && op.requestBody.content;
      if (body) h += `<h3>Request</h3><pre>${esc(JSON.stringify(body, null, 2))}</pre>`;
      h += `<h3>Responses</h3><ul>`;
      for (const [code, r] of Object.entries(op.responses || {}))
        h += `<li><b>${esc(code)}</b> ${esc(r.description)}</li>`;
      h += `</ul>`;
    }
  }
  const schemas = (spec.components || {}).schemas || {};
  h += `<h1>Schemas</h1>`;
  for (const [name, s] of Object.entries(schemas))
    h += `<h2 id="${esc(name)}">${esc(name)}</h2><pre>${esc(JSON.stringify(s, null, 2))}</pre>`;
  document.getElementById("doc").innerHTML = h;
});
</script></body></html>
"""


class DocsAliasMiddleware:
    """The seed's documentation paths beside BentoML's `/` and `/docs.json`: `/openapi.json`
    (the same spec: the request is passed on as /docs.json), `/docs` (Swagger UI on BentoML's
    bundled assets) and `/redoc` (a minimal reference page rendered from the spec)."""

    PAGES = {"/docs": _SWAGGER_HTML, "/redoc": _REDOC_HTML}

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path == "/openapi.json":
            scope = {**scope, "path": "/docs.json", "raw_path": b"/docs.json"}
            return await self.app(scope, receive, send)
        page = self.PAGES.get(path)
        if page is None:
            return await self.app(scope, receive, send)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(page)).encode())]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else page})


class JsonBodyMiddleware:
    """BentoML-native POST routes (score_features) take JSON only: another body type is
    answered 415 here, where BentoML's parser would fail with a 500 (e.g. a JSON body sent as
    multipart/form-data). Pickle is never accepted from outside (unpickling runs code)."""

    ACCEPTED = (b"application/json",)

    def __init__(self, app, paths=("/api/v1/score_features",)):
        self.app = app
        self.paths = tuple(paths)

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and scope.get("method") == "POST"
                and scope.get("path") in self.paths):
            ctype = next((v for k, v in scope.get("headers", []) if k == b"content-type"), b"")
            if ctype.split(b";")[0].strip().lower() not in self.ACCEPTED:
                return await _send_json(send, 415, {
                    "error": "send the body as application/json (Content-Type header)"})
        return await self.app(scope, receive, send)
