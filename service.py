"""BentoML wiring: the API service (FastAPI routes under /api/v1) depends on the model runner
service, whose batchable `score` API merges concurrent requests into micro-batches.

Run: `bentoml serve service:VcpApi` (or `make serve`). Logic lives in `inference/` (what the
runner and the batch share) and `serving/` (HTTP); settings in `vcp/settings.py`.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
from typing import Annotated, Any, cast

import bentoml
from pydantic import Field
from starlette.middleware.cors import CORSMiddleware

from inference.registry import ModelRegistry
from inference.scoring import ScoreResult, ScoreRow, ScoringCore
from inference.snapshot import MarketSnapshot
from market.store import MarketStore
from serving import bentoml_workarounds as fixes
from serving import metrics
from serving.api import ApiBackend, build_app
from serving.docs import REDOC_FILES, DocsMiddleware
from serving.http import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    HeadAsGetMiddleware,
    JsonBodyMiddleware,
    JsonErrorsMiddleware,
    ProcessTimeMiddleware,
    SpecTransformMiddleware,
)
from serving.openapi_errors import document_errors_and_keys
from serving.ratelimit import RateLimitMiddleware
from serving.schemas import body_limits
from vcp.settings import startup_settings

log = logging.getLogger("vcp.service")

settings = startup_settings()
# A request waits at most this long for a market store a writer has locked (then 503).
STORE_LOCK_WAIT_SECONDS = 1.0


@bentoml.service(
    name="vcp_model_runner",
    workers=settings.runner_workers,
    traffic={"timeout": 30},
    runner_connection=fixes.RUNNER_CONNECTION,
    logging={"access": {"enabled": settings.access_log}},
)
class ModelRunner:
    """Holds the model registry; scores feature rows for the API service."""

    def __init__(self) -> None:
        self.core = ScoringCore(ModelRegistry(on_event=metrics.registry_event))
        self.core.registry.refresh(force=True)
        _freeze_heap()

    @bentoml.api(batchable=True, max_batch_size=settings.max_batch_size,
                 max_latency_ms=settings.max_latency_ms)
    def score(self, rows: list[ScoreRow]) -> Annotated[list[ScoreResult], fixes.JSON_OUTPUT]:
        return self.core.score(rows)

    @bentoml.api
    def explain(self, row: ScoreRow) -> Annotated[dict[str, Any], fixes.JSON_OUTPUT]:
        return self.core.explain(row)

    @bentoml.api
    def status(self) -> Annotated[dict[str, Any], fixes.JSON_OUTPUT]:
        return self.core.status()

    @bentoml.api
    def reload(self) -> Annotated[dict[str, Any], fixes.JSON_OUTPUT]:
        return self.core.reload()


def _freeze_heap() -> None:
    """Move the start-up objects (market data, model) out of the garbage collector's reach,
    so full collections under load do not rescan them."""
    gc.collect()
    gc.freeze()


api_app = build_app(lambda: bentoml.get_current_service().backend)
fixes.apply(metrics_routes=[*metrics.route_templates(api_app, "/api/v1"),
                            *DocsMiddleware.SPEC_PATHS, *DocsMiddleware.PAGES, *REDOC_FILES],
            header_timeout=settings.header_timeout_seconds,
            trusted_proxies=settings.trusted_proxies)
ScoreRows = Annotated[list[ScoreRow], Field(min_length=1, max_length=settings.max_batch_size)]


@bentoml.service(
    name="vcp_api",
    workers=settings.api_workers,
    traffic={"timeout": 60},
    logging={"access": {"enabled": settings.access_log}},
)
@bentoml.asgi_app(api_app, path="/api/v1")
class VcpApi:
    """VCP breakout scoring: /api/v1/predict, batch_predict, health, models, reload, metrics."""

    runner = bentoml.depends(ModelRunner)

    @bentoml.api(route="/api/v1/score_features")
    async def score_features(
        self, rows: ScoreRows
    ) -> Annotated[list[ScoreResult], fixes.JSON_OUTPUT]:
        """Score precomputed feature rows through the runner (the batch's --url mode): 1 to
        VCP_MAX_BATCH_SIZE rows (the runner's micro-batch) per call."""
        return await self.backend.runner.score(rows)

    def __init__(self) -> None:
        snapshot = MarketSnapshot(
            MarketStore(settings.market_db_path, lock_wait=STORE_LOCK_WAIT_SECONDS),
            cache_bytes=settings.date_cache_mb * 2**20, concurrency=settings.date_concurrency,
            floors=settings.floors)
        snapshot.load()
        self.backend = ApiBackend(snapshot, fixes.RetryingRunnerClient(self.runner),
                                  stale_after_sessions=settings.stale_after_sessions,
                                  date_wait_seconds=settings.date_wait_seconds,
                                  score_chunk=settings.max_batch_size)
        self.backend.start_keeping_scores()  # __init__ runs on the worker's event loop
        _freeze_heap()
        threading.Thread(target=self._background, daemon=True, name="vcp-refresh").start()

    def _background(self) -> None:
        stop = threading.Event()
        try:
            self.backend.snapshot.warm(settings.warm_sessions)
        except Exception:
            log.exception("warming recent sessions failed")
        while not stop.wait(settings.refresh_seconds):
            try:
                if self.backend.snapshot.maybe_refresh():
                    latest = self.backend.snapshot.latest
                    log.info("market store changed: now as of %s", latest and latest.as_of)
            except Exception:
                log.exception("market data refresh failed; keeping the previous snapshot")

    def __is_ready__(self) -> bool:
        return self.backend.snapshot.ready


# mypy ignores class decorators: the two classes above are bentoml.Service objects.
runner_service = cast(bentoml.Service[ModelRunner], ModelRunner)
api_service = cast(bentoml.Service[VcpApi], VcpApi)

# The runner keeps answering the draining API workers after SIGTERM (graceful shutdown).
runner_service.add_asgi_middleware(fixes.ShutdownDrainMiddleware,
                                   min_wait=settings.drain_min_seconds,
                                   max_wait=settings.drain_max_seconds)

# Outermost first. HEAD is a GET without its body; every error is JSON; CORS preflights are
# answered before any key is asked for; the docs (whose spec BentoML's /docs.json gives, through
# the spec transform); bodies are bounded before anything reads them; then auth, timing and the
# rate limit (which needs the key auth found).
api_service.add_asgi_middleware(HeadAsGetMiddleware)
api_service.add_asgi_middleware(JsonErrorsMiddleware)
if settings.cors_origins:
    api_service.add_asgi_middleware(
        CORSMiddleware, allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
        allow_headers=["Content-Type", "X-API-Key", "Authorization"],
        expose_headers=["Retry-After", "X-Process-Time"], max_age=600)
api_service.add_asgi_middleware(DocsMiddleware)
api_service.add_asgi_middleware(SpecTransformMiddleware, transforms=[
    functools.partial(document_errors_and_keys, keys=bool(settings.api_keys or
                                                              settings.admin_keys),
                      metrics_key=bool(settings.metrics_key))])
api_service.add_asgi_middleware(BodyLimitMiddleware, default=settings.max_body_bytes,
                                limits=body_limits(settings.max_batch_size))
api_service.add_asgi_middleware(ApiKeyMiddleware, keys=settings.api_keys,
                                admin_keys=settings.admin_keys, metrics_key=settings.metrics_key,
                                failures_per_minute=settings.auth_failures_per_minute)
api_service.add_asgi_middleware(ProcessTimeMiddleware, on_response=lambda s, status: (
    bentoml.get_current_service().backend.stats.record(s, status >= 500)))
api_service.add_asgi_middleware(RateLimitMiddleware, rate=settings.rate_limit,
                                burst=settings.rate_burst_total, workers=settings.api_workers)
api_service.add_asgi_middleware(JsonBodyMiddleware)
