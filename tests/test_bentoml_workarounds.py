"""Each BentoML workaround beside the upstream fault it covers, on the BentoML version it was
written for (serving/bentoml_workarounds.py). On another version the fault tests are skipped
with the reason: re-check each fault there before moving the pin. The shutdown drain is shown
end to end by tests/test_shutdown.py (SIGTERM under a request in flight)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import aiohttp
import bentoml
import pytest

from inference.scoring import ScoreResult
from serving import bentoml_workarounds as fixes

ROOT = Path(__file__).resolve().parent.parent
on_written_version = pytest.mark.skipif(
    bentoml.__version__ != fixes.WRITTEN_FOR,
    reason=f"the faults were shown on BentoML {fixes.WRITTEN_FOR}, "
           f"{bentoml.__version__} is installed")


def test_the_pin_is_the_version_the_workarounds_were_written_for():
    pins = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.startswith("bentoml")]
    assert pins == [f"bentoml=={fixes.WRITTEN_FOR}"]


# -- TIMEOUT_TIMERS ----------------------------------------------------------------------------
def _timeout_middleware():
    from bentoml._internal.server.http import traffic

    return traffic


async def _ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _one_request(call, app=_ok_app, timeout: float = 60.0) -> tuple[int, int]:
    """Status of one request through TimeoutMiddleware.__call__ = `call`, and the timeout
    timers still pending on the loop once it has been answered."""

    async def main() -> tuple[int, int]:
        mw = _timeout_middleware().TimeoutMiddleware(app, timeout=timeout)
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b""}

        await call(mw, {"type": "http", "path": "/", "method": "GET"}, receive, send)
        loop = asyncio.get_running_loop()
        pending = [h for h in loop._scheduled  # type: ignore[attr-defined]
                   if not h.cancelled()
                   and getattr(h._callback, "__name__", "") == "_set_timer_out"]
        return sent[0]["status"], len(pending)

    return asyncio.run(main())


def _upstream_timeout_call():
    traffic = _timeout_middleware()
    return fixes.UPSTREAM.get("TimeoutMiddleware.__call__", traffic.TimeoutMiddleware.__call__)


@on_written_version
def test_timeout_timers_fault_and_fix():
    # Upstream: the request is answered, yet its 60 s timer (and its context) stays armed.
    assert _one_request(_upstream_timeout_call()) == (200, 1)
    # Fixed: no timer outlives its request.
    assert _one_request(fixes._timeout_call) == (200, 0)


def test_the_fixed_timeout_still_answers_504():
    async def slow_app(scope, receive, send):
        await asyncio.sleep(1)

    assert _one_request(fixes._timeout_call, slow_app, timeout=0.05) == (504, 0)


@pytest.fixture()
def patch_targets(monkeypatch):
    """What `apply()` patches, put back after the test: the timeout and metrics middleware,
    uvicorn's protocol class and the forwarded-address variable."""
    from bentoml._internal.server.http import instruments
    from uvicorn.protocols.http import auto

    traffic = _timeout_middleware()
    monkeypatch.setattr(traffic.TimeoutMiddleware, "__call__", _upstream_timeout_call())
    for cls in (instruments.RunnerTrafficMetricsMiddleware,
                instruments.HTTPTrafficMetricsMiddleware):
        monkeypatch.setattr(cls, "__call__", fixes.UPSTREAM.get(f"{cls.__name__}.__call__",
                                                                cls.__call__))
    monkeypatch.setattr(auto, "AutoHTTPProtocol",
                        fixes.UPSTREAM.get("uvicorn.AutoHTTPProtocol", auto.AutoHTTPProtocol))
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1")
    return traffic, instruments, auto


PRIVATE = {w.name for w in fixes.WORKAROUNDS if w.patches_private_code}
OF_BENTOML = {w.name for w in fixes.WORKAROUNDS if w.package == "bentoml"}


def test_on_another_version_the_patch_is_off_and_says_so(patch_targets, caplog):
    traffic, instruments, auto = patch_targets
    upstream = traffic.TimeoutMiddleware.__call__
    labelled = instruments.RunnerTrafficMetricsMiddleware.__call__
    protocol = auto.AutoHTTPProtocol
    with caplog.at_level(logging.WARNING, logger="vcp.bentoml"):
        in_force = fixes.apply(installed="1.9.0", uvicorn="0.99.0")
    assert traffic.TimeoutMiddleware.__call__ is upstream
    assert instruments.RunnerTrafficMetricsMiddleware.__call__ is labelled
    assert auto.AutoHTTPProtocol is protocol
    assert set(in_force) == {w.name for w in fixes.WORKAROUNDS} - PRIVATE
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == len(fixes.WORKAROUNDS)
    assert any("workaround TIMEOUT_TIMERS was written for 1.4.40" in m and "is off" in m
               for m in warned)
    assert any("uvicorn 0.99.0 is installed; workaround HEADER_TIMEOUT was written for "
               f"{fixes.UVICORN_WRITTEN_FOR}" in m and "is off" in m for m in warned)
    assert any("RUNNER_SESSION" in m and "is kept" in m for m in warned)


def test_on_its_own_version_everything_is_in_force_silently(patch_targets, caplog):
    traffic, instruments, auto = patch_targets
    with caplog.at_level(logging.WARNING, logger="vcp.bentoml"):
        in_force = fixes.apply(installed=fixes.WRITTEN_FOR, uvicorn=fixes.UVICORN_WRITTEN_FOR,
                               trusted_proxies=["10.0.0.0/8"])
    assert in_force == [w.name for w in fixes.WORKAROUNDS] and not caplog.records
    assert traffic.TimeoutMiddleware.__call__ is fixes._timeout_call
    assert auto.AutoHTTPProtocol.__name__ == "HeaderTimeoutProtocol"
    assert os.environ["FORWARDED_ALLOW_IPS"] == "10.0.0.0/8"


def test_no_trusted_proxy_means_nobody_is_believed(patch_targets):
    fixes.trust_forwarded_for([])
    from uvicorn.middleware.proxy_headers import _TrustedHosts

    hosts = _TrustedHosts(os.environ["FORWARDED_ALLOW_IPS"])
    assert "127.0.0.1" not in hosts and "10.1.2.3" not in hosts


# -- METRICS_ROUTE_LABELS ----------------------------------------------------------------------
def _endpoint_labels(call, namespace: str, paths: list[str]) -> tuple[set[str], list[str]]:
    """The `endpoint` labels the traffic-metrics middleware records for `paths` through
    `__call__` = `call`, and the paths the app behind it saw."""
    from bentoml._internal.server.http import instruments

    seen: list[str] = []

    async def app(scope, receive, send):
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = instruments.RunnerTrafficMetricsMiddleware(app, namespace=namespace)

    async def main():
        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            pass

        for path in paths:
            await call(mw, {"type": "http", "path": path, "method": "GET", "headers": []},
                       receive, send)

    asyncio.run(main())
    labels = {s.labels["endpoint"] for m in mw.metrics_request_total.collect()
              for s in m.samples if s.name.endswith("_total")}
    return labels, seen


@on_written_version
def test_metrics_route_labels_fault_and_fix(patch_targets):
    from bentoml._internal.server.http import instruments

    paths = [f"/junk/{i}" for i in range(50)] + ["/api/v1/predict", "/static_content/a.js"]
    upstream = instruments.RunnerTrafficMetricsMiddleware.__call__
    # Upstream: one series per made-up path.
    labels, _ = _endpoint_labels(upstream, "probe_upstream", paths)
    assert len(labels) == 52
    # Fixed: route templates; everything else is one label. The app still sees the real path.
    fixes._label_metrics_by_route(["/api/v1/predict"])
    labels, seen = _endpoint_labels(instruments.RunnerTrafficMetricsMiddleware.__call__,
                                    "probe_fixed", paths)
    assert labels == {"<unmatched>", "/api/v1/predict", "/static_content/{path}"}
    assert seen == paths


# -- HEADER_TIMEOUT ----------------------------------------------------------------------------
@contextmanager
def _uvicorn(protocol):
    """A uvicorn server in a thread with the given HTTP protocol class; yields its port."""
    import socket

    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, port=port, http=protocol, log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _open_for(port: int, give_up: float) -> tuple[float, bytes]:
    """Seconds a connection sending unfinished headers (a line every 0.2 s) stays open, up
    to `give_up`, and what the server sent before closing it."""
    import socket

    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    conn.settimeout(0.2)
    started = time.monotonic()
    got = b""
    try:
        while time.monotonic() - started < give_up:
            try:
                conn.sendall(b"X-Slow: 1\r\n")
                chunk = conn.recv(4096)
                if not chunk:
                    break
                got += chunk
            except TimeoutError:
                continue
            except OSError:
                break
        return time.monotonic() - started, got
    finally:
        conn.close()


@pytest.mark.skipif(fixes.installed_version("uvicorn") != fixes.UVICORN_WRITTEN_FOR,
                    reason="the fault was shown on uvicorn " + fixes.UVICORN_WRITTEN_FOR)
def test_header_timeout_fault_and_fix():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    # Upstream: unfinished headers keep the connection (a slot) open indefinitely.
    with _uvicorn(H11Protocol) as port:
        held, _ = _open_for(port, give_up=3)
    assert held >= 3
    # Fixed: closed with a 408 once the headers are late; whole requests are unaffected.
    with _uvicorn(fixes.header_timeout_protocol(H11Protocol, 1.0)) as port:
        held, got = _open_for(port, give_up=10)
        import httpx

        with httpx.Client() as client:  # keep-alive: a second request on the connection
            assert [client.get(f"http://127.0.0.1:{port}/").status_code
                    for _ in range(2)] == [200, 200]
    assert 0.9 <= held < 3, held
    assert got.startswith(b"HTTP/1.1 408 Request Timeout") and b"within 1 s" in got


# -- VALIDATION_LOG ----------------------------------------------------------------------------
def test_a_refused_input_is_one_info_line_not_a_traceback():
    import sys

    from pydantic import BaseModel, ValidationError

    class Rows(BaseModel):
        rows: list[int]

    try:
        Rows.model_validate({"rows": "x"})
    except ValidationError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(fixes.BENTOML_HTTP_LOGGER, logging.ERROR, __file__, 1,
                               "Exception on %s [%s]", ("/api/v1/score_features", "POST"),
                               exc_info)
    assert fixes._ValidationErrorLine().filter(record)
    assert (record.levelname, record.exc_info) == ("INFO", None)
    assert record.getMessage() == ("refused input on /api/v1/score_features [POST]: 1 "
                                   "validation error(s)")
    other = logging.LogRecord(fixes.BENTOML_HTTP_LOGGER, logging.ERROR, __file__, 1, "boom",
                              (), (RuntimeError, RuntimeError("x"), None))
    assert fixes._ValidationErrorLine().filter(other) and other.levelname == "ERROR"


# -- RUNNER_SESSION ----------------------------------------------------------------------------
async def _session_under_a_request_in_flight(**connection) -> tuple[bool, int | None]:
    """One slow request on the runner client's session while the worker sends 101 more:
    was that session closed under the request, and what did the request get?"""
    from _bentoml_impl.client.proxy2 import SessionManager

    started, release = asyncio.Event(), asyncio.Event()

    async def slow_runner(scope, receive, send):
        if scope["type"] != "http":
            return
        started.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    manager = SessionManager("http://runner", timeout=10, headers={}, app=slow_runner,
                             **connection)
    session = await manager.get_session()
    in_flight = asyncio.create_task(session.get("/score"))
    await started.wait()
    for _ in range(101):  # the worker's next requests each ask for the session
        await manager.get_session()
    closed = session.closed
    release.set()
    try:
        status: int | None = (await in_flight).status
    except (aiohttp.ClientError, RuntimeError):
        status = None
    await manager.close()
    return closed, status


@on_written_version
def test_runner_session_fault_and_fix():
    # Upstream defaults (100 requests / 300 s): the session goes under the request in flight.
    closed, status = asyncio.run(_session_under_a_request_in_flight())
    assert closed and status is None
    # With the runner_connection the runner service is declared with: it stays.
    closed, status = asyncio.run(_session_under_a_request_in_flight(**fixes.RUNNER_CONNECTION))
    assert not closed and status == 200


def test_the_runner_service_is_declared_with_the_fixes():
    import service

    assert service.ModelRunner.config["runner_connection"] == fixes.RUNNER_CONNECTION
    for svc in (service.ModelRunner, service.VcpApi):
        for name, method in svc.apis.items():
            assert method.output_spec.media_type == "application/json", name


# -- RUNNER_RETRY ------------------------------------------------------------------------------
class _FlakyProxy:
    def __init__(self, failures: int):
        self.failures, self.calls = failures, 0
        self.to_async = self

    async def status(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise aiohttp.ServerDisconnectedError()
        return {"active": "v1"}


def test_a_connection_closed_on_reuse_is_retried():
    proxy = _FlakyProxy(failures=2)
    assert asyncio.run(fixes.RetryingRunnerClient(proxy).status()) == {"active": "v1"}
    assert proxy.calls == 3
    always = _FlakyProxy(failures=99)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        asyncio.run(fixes.RetryingRunnerClient(always).status())
    assert always.calls == fixes.RetryingRunnerClient.ATTEMPTS


# -- JSON_OUTPUT -------------------------------------------------------------------------------
@on_written_version
def test_output_media_type_fault_and_fix(monkeypatch):
    @bentoml.service(name="vcp_probe")
    class Probe:
        @bentoml.api
        def plain(self) -> list[ScoreResult]:
            return []

        @bentoml.api
        def declared(self) -> Annotated[list[ScoreResult], fixes.JSON_OUTPUT]:
            return []

    builds = {}
    for name in ("plain", "declared"):
        spec = Probe.apis[name].output_spec
        original = spec.model_json_schema
        builds[name] = 0

        def counting(*args, _name=name, _original=original, **kwargs):
            builds[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(spec, "model_json_schema", counting)
        for _ in range(3):  # three responses
            assert spec.mime_type() == "application/json"
    # Upstream: the schema is rebuilt for every response; declared: never.
    assert builds == {"plain": 3, "declared": 0}


# -- OPENAPI_TEMPLATE --------------------------------------------------------------------------
@on_written_version
def test_openapi_template_fault_and_fix():
    import json

    import _bentoml_impl.server
    from fastapi.testclient import TestClient

    import service
    from serving.docs import DocsMiddleware

    # Upstream: the document and the index page are BentoML's template.
    upstream = service.api_service.openapi_spec.asdict()
    info = upstream["info"]
    assert (info["title"], info["version"]) == ("vcp_api", "None")
    assert info["contact"]["name"] == fixes.TEMPLATE_CONTACT
    assert "This is a Machine Learning Service created with BentoML" in info["description"]
    assert "img.shields.io" in info["description"]  # badges fetched from the network
    assert [t["name"] for t in upstream["tags"]] == list(fixes.BENTOML_TAG_NAMES)
    index = (Path(_bentoml_impl.server.__file__).parent / "main-openapi.html").read_text()
    assert "googletagmanager" in index and "github-corner" in index

    # Fixed: the document the service serves, and its own page at /.
    async def bento(scope, receive, send):
        body = json.dumps(upstream).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    client = TestClient(DocsMiddleware(bento))
    served = client.get("/openapi.json").json()
    assert served["info"]["title"] == "VCP breakout API" and "contact" not in served["info"]
    assert "BentoML" not in json.dumps(served["info"])
    assert not {t["name"] for t in served["tags"]} & set(fixes.BENTOML_TAG_NAMES)
    assert served["paths"].keys() == upstream["paths"].keys()
    assert {"PredictRequest", "PredictResponse", "ErrorResponse"} <= set(
        served["components"]["schemas"])
    assert "googletagmanager" not in client.get("/").text


def test_a_changed_template_is_noticed(caplog):
    spec = {"info": {"title": "x", "description": "a service"}, "paths": {
        "/a": {"get": {"tags": ["Infrastructure"]}}}}
    with caplog.at_level(logging.WARNING, logger="vcp.bentoml"):
        out = fixes.replace_template_info(spec, {"title": "t", "version": "1"},
                                          [{"name": "operations", "description": "d"}],
                                          fixes.BENTOML_TAG_NAMES)
    assert out["info"] == {"title": "t", "version": "1"}
    assert out["paths"]["/a"]["get"]["tags"] == ["operations"]
    assert any("OPENAPI_TEMPLATE" in r.getMessage() for r in caplog.records)
