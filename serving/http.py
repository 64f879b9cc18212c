"""ASGI middleware of the API service: API keys, the X-Process-Time header and JSON-only
bodies on BentoML's native routes (the documentation pages: serving/docs.py)."""

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
