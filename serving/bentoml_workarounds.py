"""Every workaround for a BentoML fault, each written for one BentoML version (WRITTEN_FOR,
pinned in requirements.txt) and shown by a test in tests/test_bentoml_workarounds.py.

* TIMEOUT_TIMERS: TimeoutMiddleware arms a timer (the 60 s traffic timeout) per request and
  never cancels it; under load the garbage collector stalled on their contexts. Patches a
  private class, so it is skipped on another version.
* RUNNER_SESSION: the dependency client recycles its HTTP session every 100 requests / 300 s
  and closes the old one under requests still in flight (a 500 under load): one session for
  the life of the worker, through the public `runner_connection` service config.
* RUNNER_RETRY: the dependency client does not retry a pooled keep-alive connection the
  runner closed just as it was reused: retried here, on the public `to_async` proxy.
* SHUTDOWN_DRAIN: `bentoml serve` stops every worker at once on SIGTERM, so the runner's
  socket went while API requests in flight still needed it: an ASGI middleware holds the
  runner's SIGTERM until it is idle (public `add_asgi_middleware`).
* JSON_OUTPUT: a root-model output derives its media type from its JSON schema on every
  response (about 15% of the runner's time): declared with the public `ContentType`.
* OPENAPI_TEMPLATE: the generated OpenAPI document carries BentoML's template, not the
  service's: title = the service name, version "None" outside a Bento, the default readme
  (badges from the network, "This is a Machine Learning Service created with BentoML") as the
  description, "BentoML Team" as the contact, and BentoML's own tags; and `/` is BentoML's
  page (a Google Tag Manager script, a GitHub corner). No setting changes them (the
  `description` service option and a Bento's readme reach only the description; BentoML
  issues 2975 and 4669 ask for one). The document is rewritten on its way out by
  `replace_template_info` (serving/docs.py's middleware, the public `add_asgi_middleware`),
  which also serves the pages.
* METRICS_ROUTE_LABELS: the traffic metrics middleware labels every series with the raw
  request path, so made-up paths add series without bound (9,000 junk paths took /metrics from
  1,861 to 61,861 series and a scrape to 11 s). No option changes the label: the middleware is
  handed the route template instead (`serving.metrics.RouteLabels`) and the app behind it the
  real path. Patches a private class, so it is skipped on another version.
* HEADER_TIMEOUT: uvicorn, which BentoML runs with no say over its protocol, never times out
  a request whose headers are unfinished (slowloris: one connection per slot, held forever);
  `timeout_keep_alive` only covers the idle time between requests. The h11 protocol class is
  replaced by a subclass that closes a connection whose request headers are not complete
  within `header_timeout` seconds (408). Patches uvicorn's protocol choice: written for one
  uvicorn version and skipped on another.
* FORWARDED_FOR: uvicorn believes X-Forwarded-For from 127.0.0.1 by default, so a local
  client could pose as any address (and get a new rate-limit bucket per request). BentoML
  passes no `forwarded_allow_ips`: uvicorn's documented FORWARDED_ALLOW_IPS variable is set to
  the configured proxies (VCP_TRUSTED_PROXIES; none by default).
* VALIDATION_LOG: a BentoML-native route logs a full ERROR traceback for every request its
  input model refuses (a 400, the client's mistake): a logging filter on BentoML's logger
  turns those into one INFO line (the public logging API).

On another version each public-API workaround stays (it is valid there) and `apply()` warns,
naming it: the tests then show whether its fault remains.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import aiohttp
import bentoml
from bentoml.validators import ContentType

log = logging.getLogger("vcp.bentoml")
drain_log = logging.getLogger("vcp.shutdown")

WRITTEN_FOR = "1.4.40"
UVICORN_WRITTEN_FOR = "0.54.0"  # the uvicorn the HEADER_TIMEOUT subclass was written for


@dataclass(frozen=True)
class Workaround:
    name: str
    fault: str
    patches_private_code: bool = False  # then skipped on another version
    written_for: str = WRITTEN_FOR
    package: str = "bentoml"  # whose version `written_for` is


TIMEOUT_TIMERS = Workaround("TIMEOUT_TIMERS", "TimeoutMiddleware never cancels its timer",
                            patches_private_code=True)
RUNNER_SESSION = Workaround("RUNNER_SESSION", "session closed under requests in flight")
RUNNER_RETRY = Workaround("RUNNER_RETRY", "no retry of a keep-alive connection closed on reuse")
SHUTDOWN_DRAIN = Workaround("SHUTDOWN_DRAIN", "runner stops under API requests in flight")
JSON_OUTPUT_TYPE = Workaround("JSON_OUTPUT", "output media type derived per response")
METRICS_ROUTE_LABELS = Workaround("METRICS_ROUTE_LABELS", "metrics labelled by the raw path",
                                  patches_private_code=True)
HEADER_TIMEOUT = Workaround("HEADER_TIMEOUT", "unfinished request headers never time out",
                            patches_private_code=True, written_for=UVICORN_WRITTEN_FOR,
                            package="uvicorn")
FORWARDED_FOR = Workaround("FORWARDED_FOR", "X-Forwarded-For believed from 127.0.0.1")
VALIDATION_LOG = Workaround("VALIDATION_LOG", "a traceback logged for every refused input")
OPENAPI_TEMPLATE = Workaround("OPENAPI_TEMPLATE", "OpenAPI info and index page are BentoML's "
                              "template, with no setting")
WORKAROUNDS = (TIMEOUT_TIMERS, RUNNER_SESSION, RUNNER_RETRY, SHUTDOWN_DRAIN, JSON_OUTPUT_TYPE,
               OPENAPI_TEMPLATE, METRICS_ROUTE_LABELS, HEADER_TIMEOUT, FORWARDED_FOR,
               VALIDATION_LOG)


def installed_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def apply(installed: str | None = None, *, uvicorn: str | None = None,
          metrics_routes: Iterable[str] = (), header_timeout: float = 10.0,
          trusted_proxies: Iterable[str] = ()) -> list[str]:
    """Check each workaround against the installed BentoML (`installed`) and uvicorn (a
    warning for each written for another version) and patch private code only on its own
    version. `metrics_routes`: the route templates metrics are labelled with besides
    BentoML's own; `header_timeout`: seconds a request's headers may take;
    `trusted_proxies`: the addresses whose X-Forwarded-For is believed. Returns the names
    of the workarounds in force."""
    versions = {"bentoml": installed or bentoml.__version__,
                "uvicorn": uvicorn or installed_version("uvicorn")}
    in_force = []
    for w in WORKAROUNDS:
        version = versions[w.package]
        if version != w.written_for:
            log.warning("%s %s is installed; workaround %s was written for %s (%s) and is "
                        "%s: run tests/test_bentoml_workarounds.py to see whether the fault "
                        "remains", w.package, version, w.name, w.written_for, w.fault,
                        "off" if w.patches_private_code else "kept")
            if w.patches_private_code:
                continue
        in_force.append(w.name)
    if TIMEOUT_TIMERS.name in in_force:
        _cancel_timeout_timers()
    if METRICS_ROUTE_LABELS.name in in_force:
        _label_metrics_by_route(metrics_routes)
    if HEADER_TIMEOUT.name in in_force:
        _time_out_headers(header_timeout)
    trust_forwarded_for(trusted_proxies)
    quiet_validation_errors()
    return in_force


# -- JSON_OUTPUT: declare the media type, so it is not derived from the schema per response.
JSON_OUTPUT = ContentType("application/json")

# -- OPENAPI_TEMPLATE ---------------------------------------------------------------------------
# The tags BentoML 1.4.40 gives its own operations (its native APIs and its infrastructure
# endpoints), and the project's tag each becomes.
BENTOML_TAG_NAMES = {"Service APIs": "prediction", "Infrastructure": "operations"}
# What 1.4.40 writes into `info`; checked so a new BentoML that changes it is noticed.
TEMPLATE_CONTACT = "BentoML Team"
TEMPLATE_TEXT = "created with BentoML"


def replace_template_info(spec: dict[str, Any], info: dict[str, Any],
                          tags: list[dict[str, Any]], tag_names: dict[str, str],
                          summaries: dict[str, str] | None = None) -> dict[str, Any]:
    """BentoML's generated document with the service's `info` and tags: BentoML's tags renamed
    by `tag_names`, the top-level tags those of `tags` that some operation uses (in that
    order), a summary from `summaries` (by path) for each operation without one, BentoML's
    HTML `<code>` in descriptions as Markdown, no `servers: [{url: "."}]` (the default is the
    server itself), and no component schema that nothing references (BentoML's task API
    schemas). Warns when BentoML's info no longer looks like its 1.4.40 template."""
    spec = copy.deepcopy(spec)
    upstream = spec.get("info") or {}
    if ((upstream.get("contact") or {}).get("name") != TEMPLATE_CONTACT
            and TEMPLATE_TEXT not in str(upstream.get("description"))):
        log.warning("BentoML's OpenAPI info no longer looks like its %s template (%s): check "
                    "whether workaround %s is still needed", OPENAPI_TEMPLATE.written_for,
                    upstream.get("title"), OPENAPI_TEMPLATE.name)
    used: set[str] = set()
    for path, operations in (spec.get("paths") or {}).items():
        for op in operations.values():
            if not isinstance(op, dict):
                continue
            op["tags"] = [tag_names.get(t, t) for t in op.get("tags") or []]
            used.update(op["tags"])
            if not op.get("summary") and (summaries or {}).get(path):
                op["summary"] = (summaries or {})[path]
            if "<code>" in op.get("description", ""):
                op["description"] = re.sub(r"</?code>", "`", op["description"])
    out = {k: v for k, v in spec.items() if k != "servers"}
    out["info"] = dict(info)
    out["tags"] = [t for t in tags if t["name"] in used]
    schemas = (spec.get("components") or {}).get("schemas")
    if schemas:
        out["components"] = {**spec["components"], "schemas": {
            name: schema for name, schema in schemas.items()
            if name in _referenced_schemas(out)}}
    return out


def _referenced_schemas(spec: dict[str, Any]) -> set[str]:
    """Names of the component schemas reachable from the paths through `$ref`s."""
    prefix = "#/components/schemas/"
    schemas = (spec.get("components") or {}).get("schemas") or {}
    found: set[str] = set()
    todo: list[Any] = [spec.get("paths")]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix):
                name = ref[len(prefix):]
                if name not in found:
                    found.add(name)
                    todo.append(schemas.get(name))
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found


# -- RUNNER_SESSION: one session for the life of the worker (`runner_connection` config).
RUNNER_CONNECTION: dict[str, Any] = {"max_requests": 2**31 - 1, "max_age": 1e12}


# -- TIMEOUT_TIMERS ----------------------------------------------------------------------------
async def _timeout_call(self, scope, receive, send):
    """BentoML 1.4.40's TimeoutMiddleware.__call__, plus `timer.cancel()` when the request
    ends, so no timer (holding the request's context) outlives its request."""
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    from starlette.responses import JSONResponse

    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message):
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except TimeoutError:
        if fut.cancel():
            resp = JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"},
                status_code=504,
            )
            await resp(scope, receive, send)
    else:
        await fut
    finally:
        timer.cancel()


# What each patch replaced, so a test can show the upstream fault beside the fix.
UPSTREAM: dict[str, Any] = {}


def _cancel_timeout_timers() -> None:
    from bentoml._internal.server.http import traffic

    UPSTREAM.setdefault("TimeoutMiddleware.__call__", traffic.TimeoutMiddleware.__call__)
    traffic.TimeoutMiddleware.__call__ = _timeout_call  # type: ignore[method-assign]


# -- METRICS_ROUTE_LABELS ----------------------------------------------------------------------
REAL_PATH = "vcp.real_path"  # scope key: the request's path while the label stands in for it


class _RealPath:
    """What the metrics middleware calls: the app, with the request's real path put back."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        real = scope.get(REAL_PATH)
        if real is not None:
            scope = {k: v for k, v in scope.items() if k != REAL_PATH}
            scope["path"] = real
        return await self.app(scope, receive, send)


def _labelled_call(original, labels):
    """BentoML 1.4.40's traffic-metrics `__call__`, handed the route template as the path
    (`labels(path)`); the app behind it gets the real path back (`_RealPath`)."""

    async def call(self, scope, receive, send):
        if scope.get("type") != "http":
            return await original(self, scope, receive, send)
        path = scope.get("path", "")
        label = labels(path)
        if label == path:
            return await original(self, scope, receive, send)
        if not isinstance(self.app, _RealPath):
            self.app = _RealPath(self.app)
        labelled = {**scope, "path": label, REAL_PATH: path}
        return await original(self, labelled, receive, send)

    return call


def _label_metrics_by_route(routes: Iterable[str]) -> None:
    from bentoml._internal.context import server_context
    from bentoml._internal.server.http import instruments

    from serving.metrics import BENTOML_ROUTES, RouteLabels

    labels = RouteLabels([*BENTOML_ROUTES, *routes])
    seen: dict[str, int] = {}

    def label_of(path: str) -> str:
        # The service's own API routes are known once the worker has loaded it.
        routes_now = list(server_context.service_routes or ())
        if seen.get("routes") != len(routes_now):
            labels.add(routes_now)
            seen["routes"] = len(routes_now)
        return labels(path)

    for cls in (instruments.RunnerTrafficMetricsMiddleware,
                instruments.HTTPTrafficMetricsMiddleware):
        key = f"{cls.__name__}.__call__"
        original = UPSTREAM.setdefault(key, cls.__call__)
        cls.__call__ = _labelled_call(original, label_of)  # type: ignore[method-assign]


# -- HEADER_TIMEOUT ----------------------------------------------------------------------------
def header_timeout_protocol(base: type, seconds: float) -> type:
    """uvicorn's h11 protocol class `base`, closing a connection (408) whose request headers
    are not complete `seconds` after the connection opened or the request's first byte."""
    import h11

    body = json.dumps({"error": f"request headers not complete within {seconds:g} s"}).encode()
    answer = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
              b"connection: close\r\ncontent-length: " + str(len(body)).encode()
              + b"\r\n\r\n" + body)

    class HeaderTimeoutProtocol(base):
        header_timeout = seconds
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self.header_timeout, self._late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()  # a request is starting (or still has no complete headers)
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _late(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info("closing a connection from %s: request headers not complete within "
                         "%g s", (self.client or ("?",))[0], self.header_timeout)
                self.transport.write(answer)
                self.transport.close()

    return HeaderTimeoutProtocol


def _time_out_headers(seconds: float) -> None:
    from uvicorn.protocols.http import auto, h11_impl

    upstream = UPSTREAM.setdefault("uvicorn.AutoHTTPProtocol", auto.AutoHTTPProtocol)
    if upstream is not h11_impl.H11Protocol:  # httptools is installed: not covered
        log.warning("uvicorn uses %s, not h11: request headers are not timed out",
                    upstream.__name__)
        return
    auto.AutoHTTPProtocol = header_timeout_protocol(upstream, seconds)


# -- FORWARDED_FOR -----------------------------------------------------------------------------
def trust_forwarded_for(proxies: Iterable[str]) -> None:
    """uvicorn believes X-Forwarded-For (and -Proto) only from these addresses (none: from
    nobody). Read by uvicorn when each worker starts, after this module is imported."""
    os.environ["FORWARDED_ALLOW_IPS"] = ",".join(proxies)


# -- VALIDATION_LOG ----------------------------------------------------------------------------
class _ValidationErrorLine(logging.Filter):
    """BentoML's `log_exception` for an input its model refused: one INFO line, no
    traceback (the client got a 400 with the details)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            # BentoML's record is "Exception on %s [%s]" with the path and the method.
            record.msg = "refused input on %s [%s]: %d validation error(s)"
            where = record.args if isinstance(record.args, tuple) and len(record.args) == 2 \
                else ("?", "?")
            record.args = (*where, exc.error_count())
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"


def quiet_validation_errors() -> None:
    logger = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, _ValidationErrorLine) for f in logger.filters):
        logger.addFilter(_ValidationErrorLine())


# -- RUNNER_RETRY ------------------------------------------------------------------------------
class RetryingRunnerClient:
    """Async calls to a dependency service through BentoML's proxy, retried on a connection
    error: every runner call is side-effect free (reload only re-reads the pointer)."""

    ATTEMPTS = 3

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy

    async def _call(self, name: str, *args: Any) -> Any:
        for attempt in range(self.ATTEMPTS):
            try:
                return await getattr(self.proxy.to_async, name)(*args)
            except aiohttp.ClientConnectionError:
                if attempt == self.ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))

    async def score(self, rows: Any) -> Any:
        return await self._call("score", rows)

    async def explain(self, row: Any) -> Any:
        return await self._call("explain", row)

    async def status(self) -> Any:
        return await self._call("status")

    async def reload(self) -> Any:
        return await self._call("reload")


# -- SHUTDOWN_DRAIN ----------------------------------------------------------------------------
class ShutdownDrainMiddleware:
    """Keeps a dependency service (the model runner) answering for a while after SIGTERM.

    The API workers stop accepting and finish the requests in flight, but those still call
    the runner, whose uvicorn would close its socket at once. With this middleware the
    runner's SIGTERM is held back until it has been quiet (no request in flight, none for
    `quiet` seconds) after at least `min_wait` seconds, or `max_wait` seconds passed; then
    uvicorn's own handler runs and the worker drains and exits as usual. Installed when the
    ASGI lifespan starts, that is after uvicorn has installed its signal handlers.
    """

    def __init__(self, app, min_wait: float, max_wait: float, quiet: float = 1.0):
        self.app = app
        self.min_wait = min_wait
        self.max_wait = max_wait
        self.quiet = quiet
        self.inflight = 0
        self.last_seen = time.monotonic()
        self._installed = False
        self._term_at: float | None = None

    def _install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._installed = True
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return

        def wait_then_exit(sig, frame, term_at: float) -> None:
            while True:
                now = time.monotonic()
                waited = now - term_at
                idle = self.inflight == 0 and now - self.last_seen >= self.quiet
                if waited >= self.max_wait or (waited >= self.min_wait and idle):
                    break
                time.sleep(0.05)
            drain_log.info("drained after %.1f s: stopping", time.monotonic() - term_at)
            previous(sig, frame)

        def on_term(sig, frame) -> None:
            if self._term_at is not None:
                return  # already draining
            self._term_at = time.monotonic()
            drain_log.info("SIGTERM: serving the API workers' requests while they drain")
            threading.Thread(target=wait_then_exit, args=(sig, frame, self._term_at),
                             daemon=True, name="vcp-drain").start()

        signal.signal(signal.SIGTERM, on_term)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            self._install()
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.inflight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
            self.last_seen = time.monotonic()
