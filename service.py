"""BentoML wiring: the API service (FastAPI routes under /api/v1) depends on the model runner
service, whose batchable `score` API merges concurrent requests into micro-batches.

Run: `bentoml serve service:VcpApi` (or `make serve`). Logic lives in `inference/` (what the
runner and the batch share) and `serving/` (HTTP); settings in `vcp/settings.py`.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Annotated, Any, cast

import bentoml

from inference.registry import ModelRegistry
from inference.scoring import ScoreResult, ScoreRow, ScoringCore
from inference.snapshot import MarketSnapshot
from market.store import MarketStore
from serving import bentoml_workarounds as fixes
from serving import metrics
from serving.api import ApiBackend, build_app
from serving.docs import DocsMiddleware
from serving.http import ApiKeyMiddleware, JsonBodyMiddleware, ProcessTimeMiddleware
from serving.ratelimit import RateLimitMiddleware
from vcp.settings import startup_settings

log = logging.getLogger("vcp.service")

settings = startup_settings()
fixes.apply()


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


@bentoml.service(
    name="vcp_api",
    workers=settings.api_workers,
    traffic={"timeout": 60},
    logging={"access": {"enabled": settings.access_log}},
    http={"cors": {"enabled": bool(settings.cors_origins),
                   "access_control_allow_origins": list(settings.cors_origins),
                   "access_control_allow_methods": ["GET", "POST", "OPTIONS"],
                   "access_control_allow_headers": ["Content-Type", "X-API-Key"]}},
)
@bentoml.asgi_app(api_app, path="/api/v1")
class VcpApi:
    """VCP breakout scoring: /api/v1/predict, batch_predict, health, models, reload, metrics."""

    runner = bentoml.depends(ModelRunner)

    @bentoml.api(route="/api/v1/score_features")
    async def score_features(
        self, rows: list[ScoreRow]
    ) -> Annotated[list[ScoreResult], fixes.JSON_OUTPUT]:
        """Score precomputed feature rows through the runner (the batch's --url mode)."""
        return await self.backend.runner.score(rows)

    def __init__(self) -> None:
        snapshot = MarketSnapshot(MarketStore(settings.market_db_path), floors=settings.floors)
        snapshot.load()
        self.backend = ApiBackend(snapshot, fixes.RetryingRunnerClient(self.runner),
                                  stale_after_sessions=settings.stale_after_sessions)
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

# Outermost first: auth, then timing, then the rate limit (which needs the key auth found).
api_service.add_asgi_middleware(DocsMiddleware)
api_service.add_asgi_middleware(ApiKeyMiddleware, keys=settings.api_keys,
                                admin_keys=settings.admin_keys)
api_service.add_asgi_middleware(ProcessTimeMiddleware, on_response=lambda s, status: (
    bentoml.get_current_service().backend.stats.record(s, status >= 500)))
api_service.add_asgi_middleware(RateLimitMiddleware, rate=settings.rate_limit,
                                burst=settings.rate_burst_total, workers=settings.api_workers)
api_service.add_asgi_middleware(JsonBodyMiddleware)
