"""Our Prometheus metrics. Inside `bentoml serve` every worker writes them to BentoML's
multiprocess directory (PROMETHEUS_MULTIPROC_DIR), so they appear on both /metrics and
/api/v1/metrics; outside a server (the batch, tests) they are plain in-process metrics.

prometheus_client is imported on first use, not at import: BentoML sets the multiprocess
directory in each worker after the service module is imported, and prometheus_client picks
its storage when it is first imported.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from typing import Any

# Paths every BentoML HTTP service answers, and the mounts below which any path is one label.
BENTOML_ROUTES = ("/", "/docs.json", "/schema.json", "/metrics", "/livez", "/readyz",
                  "/healthz")
BENTOML_MOUNTS = ("/static_content/", "/assets/")
UNMATCHED = "<unmatched>"


@functools.cache
def _metrics() -> dict[str, Any]:
    import prometheus_client as m

    return {
        "predictions": m.Counter(
            name="vcp_predictions_total", documentation="Predictions served, by confidence",
            labelnames=["confidence"]),
        "feature_seconds": m.Histogram(
            name="vcp_feature_seconds", documentation="Feature lookup/computation time",
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0)),
        "model_events": m.Counter(
            name="vcp_model_registry_events_total",
            documentation="Model registry events: load, load_failure, hit, miss, switch",
            labelnames=["event"]),
        "scored_setups": m.Counter(
            name="vcp_scored_setups_total",
            documentation="Setups scored for answers, by source: the latest session's table "
                          "in the API worker, or the model runner",
            labelnames=["source"]),
        "active_model": m.Gauge(
            name="vcp_active_model_info", documentation="Active model version (info, value 1)",
            labelnames=["model", "version"], multiprocess_mode="livemax"),
        "date_cache_bytes": m.Gauge(
            name="vcp_date_cache_bytes",
            documentation="Bytes held by the cached dates other than the latest "
                          "(all API workers; each bounded by VCP_DATE_CACHE_MB)",
            multiprocess_mode="livesum"),
        "date_cache_dates": m.Gauge(
            name="vcp_date_cache_dates", documentation="Dates in memory (all API workers)",
            multiprocess_mode="livesum"),
    }


def prediction(confidence: str) -> None:
    _metrics()["predictions"].labels(confidence=confidence).inc()


def feature_seconds(seconds: float) -> None:
    _metrics()["feature_seconds"].observe(seconds)


def score_source(source: str, count: int) -> None:
    _metrics()["scored_setups"].labels(source=source).inc(count)


def registry_event(event: str, version: str) -> None:
    _metrics()["model_events"].labels(event=event).inc()
    if event == "switch":
        set_active_model(version)


def date_cache(nbytes: int, dates: int) -> None:
    _metrics()["date_cache_bytes"].set(nbytes)
    _metrics()["date_cache_dates"].set(dates)


_last_active: list[str] = []


def set_active_model(version: str | None) -> None:
    gauge = _metrics()["active_model"]
    for old in _last_active:
        gauge.labels(model="vcp_breakout", version=old).set(0)
    _last_active.clear()
    if version:
        gauge.labels(model="vcp_breakout", version=version).set(1)
        _last_active.append(version)


def exposition() -> str:
    """Every worker's metrics (this process's alone outside a server), in the text format."""
    import prometheus_client
    from prometheus_client import multiprocess

    _metrics()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = prometheus_client.REGISTRY
    return prometheus_client.generate_latest(registry).decode()


class RouteLabels:
    """The `endpoint` label of a request path: the route template it matches
    (`/api/v1/predict`, `/models/{version}`), `<prefix>{path}` below a static mount, else the
    one label `<unmatched>`, so made-up paths cannot add metric series."""

    def __init__(self, templates: Iterable[str], mounts: Iterable[str] = BENTOML_MOUNTS):
        self.exact: set[str] = set()
        self.patterns: list[tuple[re.Pattern[str], str]] = []
        self.mounts = tuple(mounts)
        self.add(templates)

    def add(self, templates: Iterable[str]) -> None:
        for template in templates:
            if "{" not in template:
                self.exact.add(template)
                continue
            regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            self.patterns.append((re.compile(f"^{regex}$"), template))

    def __call__(self, path: str) -> str:
        if path in self.exact:
            return path
        for pattern, template in self.patterns:
            if pattern.match(path):
                return template
        for mount in self.mounts:
            if path.startswith(mount):
                return mount + "{path}"
        return UNMATCHED


def route_templates(app: Any, prefix: str) -> list[str]:
    """The path templates of a mounted ASGI app's routes (FastAPI/Starlette), under `prefix`."""
    return [prefix + route.path for route in getattr(app, "routes", ())
            if isinstance(getattr(route, "path", None), str)]
