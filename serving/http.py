"""ASGI middleware of the API service: API keys and the X-Process-Time header."""

from __future__ import annotations

import hmac
import json
import logging
import os
import time

log = logging.getLogger("vcp.auth")

ADMIN_PATHS = ("/api/v1/models/reload",)
PROTECTED_PREFIX = "/api/v1/"


def _keys(env: str) -> list[bytes]:
    return [k.strip().encode() for k in os.environ.get(env, "").split(",") if k.strip()]


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
    """X-API-Key on /api/v1/* when keys are configured (VCP_API_KEYS, VCP_ADMIN_KEYS,
    comma-separated); reload needs an admin key. With no keys the API is open (warned once)."""

    def __init__(self, app):
        self.app = app
        self.keys = _keys("VCP_API_KEYS")
        self.admin_keys = _keys("VCP_ADMIN_KEYS")
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
