"""Our Prometheus metrics, created through bentoml.metrics so that the values of every worker
process land in BentoML's multiprocess registry and appear on both /metrics and
/api/v1/metrics. Outside a BentoML server (the batch, tests) they are plain no-cost metrics.
"""

from __future__ import annotations

import functools
from typing import Any

import bentoml


@functools.cache
def _metrics() -> dict[str, Any]:
    m = bentoml.metrics
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
        "active_model": m.Gauge(
            name="vcp_active_model_info", documentation="Active model version (info, value 1)",
            labelnames=["model", "version"], multiprocess_mode="livemax"),
    }


def prediction(confidence: str) -> None:
    _metrics()["predictions"].labels(confidence=confidence).inc()


def feature_seconds(seconds: float) -> None:
    _metrics()["feature_seconds"].observe(seconds)


def registry_event(event: str, version: str) -> None:
    _metrics()["model_events"].labels(event=event).inc()
    if event == "switch":
        set_active_model(version)


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
    from bentoml._internal.configuration.containers import BentoMLContainer

    content = BentoMLContainer.metrics_client.get().generate_latest()
    return content.decode() if isinstance(content, bytes) else str(content)
