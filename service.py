"""BentoML wiring: the API service (FastAPI routes under /api/v1) depends on the model runner
service, whose batchable `score` API merges concurrent requests into micro-batches.

Run: `bentoml serve service:VcpApi` (or `make serve`). Logic lives in `serving/`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading

import aiohttp
import bentoml

from market.store import MarketStore
from serving import bentoml_patches, metrics
from serving.api import ApiBackend, build_app
from serving.http import (
    ApiKeyMiddleware,
    DocsAliasMiddleware,
    JsonBodyMiddleware,
    ProcessTimeMiddleware,
    ShutdownDrainMiddleware,
)
from serving.market_data import MarketSnapshot
from serving.ratelimit import RateLimitMiddleware
from serving.registry import ModelRegistry
from serving.scoring import ScoreResult, ScoreRow, ScoringCore
from vcp import config

log = logging.getLogger("vcp.service")

# Load turns into bigger batches: up to 512 rows, waiting at most a second for a slot.
MAX_BATCH_SIZE = int(os.environ.get("VCP_MAX_BATCH_SIZE", "512"))
MAX_LATENCY_MS = int(os.environ.get("VCP_MAX_LATENCY_MS", "1000"))
REFRESH_SECONDS = float(os.environ.get("VCP_REFRESH_SECONDS", "60"))
WARM_SESSIONS = int(os.environ.get("VCP_WARM_SESSIONS", "5"))
# An access-log line per request costs a noticeable share of a 2-core machine's CPU under
# load; /metrics, /api/v1/health and X-Process-Time cover what it would tell.
ACCESS_LOG = os.environ.get("VCP_ACCESS_LOG", "false").lower() in ("1", "true", "yes")
CORS_ORIGINS = [o for o in os.environ.get("VCP_CORS_ORIGINS", "").split(",") if o]


@bentoml.service(
    name="vcp_model_runner",
    workers=int(os.environ.get("VCP_RUNNER_WORKERS", "1")),
    traffic={"timeout": 30},
    # BentoML 1.4.40 recycles the caller's HTTP session every 100 requests / 300 s and closes
    # the old one under requests still in flight (ServerDisconnectedError, a 500 under load):
    # keep one session for the life of the worker.
    runner_connection={"max_requests": 2**31 - 1, "max_age": 1e12},
    logging={"access": {"enabled": ACCESS_LOG}},
)
class ModelRunner:
    """Holds the model registry; scores feature rows for the API service and the batch."""

    def __init__(self) -> None:
        self.core = ScoringCore(ModelRegistry(on_event=metrics.registry_event))
        self.core.registry.refresh(force=True)
        _freeze_heap()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def score(self, rows: list[ScoreRow]) -> list[ScoreResult]:
        return self.core.score(rows)

    @bentoml.api
    def explain(self, row: ScoreRow) -> dict:
        return self.core.explain(row)

    @bentoml.api
    def status(self) -> dict:
        return self.core.status()

    @bentoml.api
    def reload(self) -> dict:
        return self.core.reload()


def _freeze_heap() -> None:
    """Move the start-up objects (market data, model) out of the garbage collector's reach,
    so full collections under load do not rescan them."""
    gc.collect()
    gc.freeze()


class _RunnerClient:
    """Async calls to the runner service through BentoML's dependency proxy.

    A pooled keep-alive connection can be closed by the runner just as it is reused; every
    runner call is side-effect free (reload only re-reads the pointer), so retry it.
    """

    ATTEMPTS = 3

    def __init__(self, proxy) -> None:
        self.proxy = proxy

    async def _call(self, name: str, *args):
        for attempt in range(self.ATTEMPTS):
            try:
                return await getattr(self.proxy.to_async, name)(*args)
            except aiohttp.ClientConnectionError:
                if attempt == self.ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))

    async def score(self, rows):
        return await self._call("score", rows)

    async def explain(self, row):
        return await self._call("explain", row)

    async def status(self):
        return await self._call("status")

    async def reload(self):
        return await self._call("reload")


api_app = build_app(lambda: bentoml.get_current_service().backend)


@bentoml.service(
    name="vcp_api",
    workers=int(os.environ.get("VCP_API_WORKERS", "1")),
    traffic={"timeout": 60},
    logging={"access": {"enabled": ACCESS_LOG}},
    http={"cors": {"enabled": bool(CORS_ORIGINS), "access_control_allow_origins": CORS_ORIGINS,
                   "access_control_allow_methods": ["GET", "POST", "OPTIONS"],
                   "access_control_allow_headers": ["Content-Type", "X-API-Key"]}},
)
@bentoml.asgi_app(api_app, path="/api/v1")
class VcpApi:
    """VCP breakout scoring: /api/v1/predict, batch_predict, health, models, reload, metrics."""

    runner = bentoml.depends(ModelRunner)

    @bentoml.api(route="/api/v1/score_features")
    async def score_features(self, rows: list[ScoreRow]) -> list[ScoreResult]:
        """Score precomputed feature rows through the runner (the batch's --url mode)."""
        return await self.backend.runner.score(rows)

    def __init__(self) -> None:
        snapshot = MarketSnapshot(MarketStore(config.market_db_path()))
        snapshot.load()
        self.backend = ApiBackend(snapshot, _RunnerClient(self.runner))
        _freeze_heap()
        threading.Thread(target=self._background, daemon=True, name="vcp-refresh").start()

    def _background(self) -> None:
        stop = threading.Event()
        try:
            self.backend.snapshot.warm(WARM_SESSIONS)
        except Exception:
            log.exception("warming recent sessions failed")
        while not stop.wait(REFRESH_SECONDS):
            try:
                if self.backend.snapshot.maybe_refresh():
                    log.info("market store changed: now as of %s",
                             self.backend.snapshot.latest.as_of)
            except Exception:
                log.exception("market data refresh failed; keeping the previous snapshot")

    def __is_ready__(self) -> bool:
        return self.backend.snapshot.ready


# The runner keeps answering the draining API workers after SIGTERM (graceful shutdown).
ModelRunner.add_asgi_middleware(ShutdownDrainMiddleware)

# Outermost first: auth, then timing, then the rate limit (which needs the key auth found).
VcpApi.add_asgi_middleware(DocsAliasMiddleware)
VcpApi.add_asgi_middleware(ApiKeyMiddleware)
VcpApi.add_asgi_middleware(ProcessTimeMiddleware, on_response=lambda s, status: (
    bentoml.get_current_service().backend.stats.record(s, status >= 500)))
VcpApi.add_asgi_middleware(RateLimitMiddleware)
VcpApi.add_asgi_middleware(JsonBodyMiddleware)


bentoml_patches.apply(ModelRunner, VcpApi)
