"""ASGI middleware of the API service: JSON error bodies, HEAD, request body limits, API keys
(and the optional metrics key) with a brake on wrong keys, the X-Process-Time header, the
OpenAPI spec's post-processing and JSON-only bodies on BentoML's native routes (the
documentation pages: serving/docs.py).

The order (outermost first) is service.py's: HeadAsGet, JsonErrors, CORS, Docs, SpecTransform,
BodyLimit, ApiKey, ProcessTime, RateLimit, JsonBody.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from serving.ratelimit import Buckets, retry_after

log = logging.getLogger("vcp.auth")

ADMIN_PATHS = ("/api/v1/models/reload",)
PROTECTED_PREFIX = "/api/v1/"
METRICS_PATHS = ("/metrics", "/api/v1/metrics")


def _matches(candidate: bytes, keys: list[bytes]) -> bool:
    # Compare against every key, always, so timing reveals neither which nor how many matched.
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key)
    return found


def _header(scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", []) if k == name), None)


async def _send_json(send, status: int, body: dict, extra_headers=()) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(payload)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class ApiKeyMiddleware:
    """X-API-Key on /api/v1/* when keys are configured (VCP_API_KEYS, VCP_ADMIN_KEYS);
    reload needs an admin key. With no keys the API is open (warned once).

    `metrics_key` (VCP_METRICS_KEY) guards /metrics: a scraper sends it as
    `Authorization: Bearer KEY` (Prometheus' `authorization` option) or as X-API-Key;
    /api/v1/metrics takes it as well as the API keys.

    Wrong keys are braked per client address: `failures_per_minute` wrong keys (a burst of as
    many, refilled evenly over a minute, per API worker); beyond that every request of that
    address that carries a key is answered 429 with Retry-After, unchecked, until the budget
    refills, so keys cannot be guessed at request speed. A missing key is not a guess.
    """

    def __init__(self, app, keys: Iterable[str] = (), admin_keys: Iterable[str] = (),
                 metrics_key: str | None = None, failures_per_minute: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.admin_keys = [k.encode() for k in admin_keys]
        self.metrics_keys = [metrics_key.encode()] if metrics_key else []
        self.failures = (Buckets(failures_per_minute / 60, failures_per_minute, clock)
                         if failures_per_minute > 0 else None)
        if not self.keys and not self.admin_keys:
            log.warning("no API keys configured (VCP_API_KEYS/VCP_ADMIN_KEYS): the API is open")

    def _given(self, scope, path: str) -> bytes | None:
        given = _header(scope, b"x-api-key")
        if given is None and path in METRICS_PATHS:
            auth = _header(scope, b"authorization") or b""
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                given = token.strip()
        return given

    def _allowed(self, path: str) -> list[bytes] | None:
        """The keys that open `path` (None: no key needed)."""
        if path == "/metrics":
            return self.metrics_keys or None
        if not path.startswith(PROTECTED_PREFIX):
            return None
        if path in ADMIN_PATHS:
            return self.admin_keys if (self.keys or self.admin_keys) else None
        keys = self.keys + self.admin_keys
        if path in METRICS_PATHS:
            keys = keys + self.metrics_keys
        return keys or None

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        allowed = self._allowed(path) if scope["type"] == "http" else None
        if allowed is None:
            return await self.app(scope, receive, send)
        given = self._given(scope, path)
        if given is None:
            what = ("the metrics key (Authorization: Bearer KEY)" if path == "/metrics"
                    else "X-API-Key header")
            return await _send_json(send, 401, {"error": f"missing {what}"},
                                    [(b"www-authenticate", b"Bearer")] if path == "/metrics"
                                    else ())
        client = scope.get("client")
        address = client[0] if client else "unknown"
        if self.failures is not None:
            wait = self.failures.wait(address)
            if wait:
                seconds = retry_after(wait)
                return await _send_json(send, 429, {"error": (
                    f"too many wrong API keys from {address}; retry after {seconds} s")},
                    [(b"retry-after", str(seconds).encode())])
        if not _matches(given, allowed):
            if self.failures is not None:
                self.failures.take(address)
            if path in ADMIN_PATHS and _matches(given, self.keys):
                return await _send_json(send, 403, {"error": "this route needs an admin key"})
            return await _send_json(send, 401, {"error": "invalid API key"})
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


class JsonErrorsMiddleware:
    """Every error answer is JSON `{"error": ...}`: BentoML's own 404 and 405 (and any other
    plain-text error, e.g. a refused CORS preflight) are rewritten here, keeping their status
    and headers such as Allow."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def send_json_errors(message):
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
                if message["status"] >= 400 and not ctype.endswith(b"json"):
                    held["start"] = message
                    return
            elif message["type"] == "http.response.body" and "start" in held:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                start = held.pop("start")
                text = b"".join(chunks).decode("utf-8", "replace").strip()
                body = json.dumps({"error": self._message(scope, start["status"], text)})
                keep = [(k, v) for k, v in start.get("headers", [])
                        if k not in (b"content-type", b"content-length")]
                payload = body.encode()
                await send({**start, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()), *keep]})
                await send({"type": "http.response.body", "body": payload})
                return
            await send(message)

        await self.app(scope, receive, send_json_errors)

    @staticmethod
    def _message(scope, status: int, text: str) -> str:
        method, path = scope.get("method", ""), scope.get("path", "")
        if status == 404:
            return f"no such route: {path}; see /docs for the API"
        if status == 405:
            return f"method {method} is not allowed on {path}"
        return text or f"HTTP {status}"


class HeadAsGetMiddleware:
    """HEAD works wherever GET does: the request goes on as GET and the body is dropped (the
    headers, Content-Length included, are the GET's)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            return await self.app(scope, receive, send)

        async def send_headers_only(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)


class BodyTooLarge(Exception):
    """A request body without a Content-Length grew past its limit while being read."""


class BodyLimitMiddleware:
    """Request bodies are bounded per route (`limits`: path -> bytes; others `default`) and a
    larger one is answered 413 before anything reads it: at once from Content-Length, or as
    soon as a chunked body passes the limit. The limits are small enough that parsing the
    largest accepted body takes milliseconds, so a big body never holds up other requests."""

    def __init__(self, app, default: int, limits: Mapping[str, int] | None = None):
        self.app = app
        self.default = default
        self.limits = dict(limits or {})

    def limit_of(self, path: str) -> int:
        return min(self.limits.get(path, self.default), self.default)

    async def _refuse(self, send, path: str, limit: int, size: int | None) -> None:
        what = f"{size:,} bytes" if size is not None else "more"
        await _send_json(send, 413, {"error": (
            f"request body too large: {what}; {path} accepts at most {limit:,} bytes")},
            [(b"connection", b"close")])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        limit = self.limit_of(path)
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _send_json(send, 400, {"error": "invalid Content-Length header"})
            if size > limit:
                return await self._refuse(send, path, limit, size)
            return await self.app(scope, receive, send)
        if _header(scope, b"transfer-encoding") is None:
            return await self.app(scope, receive, send)
        seen = 0
        state = {"over": False, "started": False}

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    state["over"] = True
                    raise BodyTooLarge()
            return message

        async def send_unless_over(message):
            if state["over"]:
                return  # whatever the app made of the interrupted body: the 413 goes instead
            state["started"] = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counting_receive, send_unless_over)
        if state["over"] and not state["started"]:
            await self._refuse(send, path, limit, None)


class SpecTransformMiddleware:
    """Post-processes the OpenAPI document BentoML generates (GET /docs.json, which
    serving.docs.DocsMiddleware builds /openapi.json from): each transform takes the spec dict
    and returns it, in order. Other modules add theirs to the list service.py passes."""

    def __init__(self, app, transforms: Iterable[Callable[[dict], dict]] = (),
                 path: str = "/docs.json"):
        self.app = app
        self.transforms = list(transforms)
        self.path = path

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope.get("path") != self.path
                or scope.get("method") not in ("GET", "HEAD") or not self.transforms):
            return await self.app(scope, receive, send)
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def send_transformed(message):
            if message["type"] == "http.response.start":
                if message["status"] != 200:
                    return await send(message)
                held["start"] = message
                return None
            if "start" not in held:
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return None
            spec = json.loads(b"".join(chunks))
            for transform in self.transforms:
                spec = transform(spec)
            payload = json.dumps(spec).encode()
            start = held.pop("start")
            keep = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            await send({**start, "headers": [*keep,
                                             (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            return None

        await self.app(scope, receive, send_transformed)
