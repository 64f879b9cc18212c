"""The /api/v1 routes (a FastAPI app mounted into the BentoML API service).

Handlers look stocks and features up in the worker's MarketSnapshot and send the feature
rows to the model runner service, whose adaptive micro-batching merges concurrent requests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from datetime import date
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException

from market.master import AmbiguousStockError, UnknownStockError
from serving import metrics
from serving.market_data import DateFeatures, DateOutOfRange, MarketSnapshot
from serving.schemas import (
    MAX_BATCH,
    BatchPredictRequest,
    BatchPredictResponse,
    ErrorResponse,
    HealthResponse,
    ModelsResponse,
    PredictOptions,
    PredictRequest,
    PredictResponse,
    ReloadRequest,
    ReloadResponse,
    StockRef,
)
from serving.scoring import ScoreRow
from training_artifacts import model_store
from training_artifacts.artifact import MODEL_NAME

log = logging.getLogger("vcp.api")


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None):
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


class Runner(Protocol):
    async def score(self, rows: list[ScoreRow]) -> list[dict]: ...
    async def explain(self, row: ScoreRow) -> dict: ...
    async def status(self) -> dict: ...
    async def reload(self) -> dict: ...


class RequestStats:
    """Per-worker request counters and a window of recent latencies for /health."""

    def __init__(self, window: int = 4096):
        self.started = time.time()
        self.requests = 0
        self.errors = 0
        self.latencies: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, seconds: float, failed: bool) -> None:
        with self._lock:
            self.requests += 1
            self.errors += int(failed)
            self.latencies.append(seconds * 1000)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            lat = np.array(self.latencies)
        return {
            "uptime_seconds": round(time.time() - self.started, 1),
            "requests": self.requests,
            "error_rate": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "latency": {
                "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
                "p95_ms": round(float(np.percentile(lat, 95)), 2) if len(lat) else None,
            },
        }


class ApiBackend:
    """What the routes need: the market snapshot, the runner client and request stats."""

    def __init__(self, snapshot: MarketSnapshot, runner: Runner):
        self.snapshot = snapshot
        self.runner = runner
        self.stats = RequestStats()

    # -- helpers -----------------------------------------------------------------------------
    def locate(self, ref: StockRef, at: DateFeatures) -> tuple[Any, int]:
        if not ref.bse_code and not ref.nse_symbol:
            raise ApiError(422, "give bse_code or nse_symbol")
        try:
            stock = self.snapshot.master.lookup(bse_code=ref.bse_code, nse_symbol=ref.nse_symbol)
        except AmbiguousStockError as exc:
            raise ApiError(422, str(exc)) from None
        except UnknownStockError as exc:
            raise ApiError(404, str(exc)) from None
        row = at.row(stock.isin)
        if row is None:
            raise ApiError(404, f"{stock.isin} has no price data in the store")
        reason = at.result.reasons[row]
        if reason is not None:
            raise ApiError(
                422, f"{stock.nse_symbol or stock.bse_code} cannot be scored on {at.as_of}: "
                f"{reason}")
        return stock, row

    @staticmethod
    def score_row(at: DateFeatures, row: int, version: str | None) -> ScoreRow:
        values = at.result.values[row]
        return ScoreRow(
            features=[float(v) if np.isfinite(v) else None for v in values],
            model_version=version,
        )

    def build_response(
        self, stock, at: DateFeatures, row: int, scored: dict, opts: PredictOptions,
        explanation: dict | None, started: float,
    ) -> dict[str, Any]:
        return {
            "isin": stock.isin, "bse_code": stock.bse_code, "nse_symbol": stock.nse_symbol,
            "name": stock.name, "as_of_date": at.as_of,
            "probability": round(scored["probability"], 6),
            "confidence": scored["confidence"],
            "pattern": at.pattern(row),
            "features": at.features(row) if opts.include_features else None,
            "explanation": explanation,
            "model_name": MODEL_NAME, "model_version": scored["model_version"],
            "data_source": self.snapshot.data_source,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    async def run_score(self, rows: list[ScoreRow]) -> list[dict]:
        try:
            results = await self.runner.score(rows)
        except Exception as exc:  # runner restarting or overloaded: retryable, not a 500
            log.warning("model runner call failed: %s", exc)
            raise ApiError(503, "the model runner is unavailable; retry shortly") from None
        return [r if isinstance(r, dict) else r.model_dump() for r in results]

    async def explain(self, at: DateFeatures, row: int, version: str) -> dict[str, Any]:
        """TreeSHAP contributions from the same model version that gave the probability."""
        explanation = dict(await self.runner.explain(self.score_row(at, row, version)))
        explanation.pop("model_version", None)
        return explanation

    # -- routes ------------------------------------------------------------------------------
    async def predict(self, req: PredictRequest) -> dict[str, Any]:
        started = time.perf_counter()
        at = await self._features_async(req.prediction_date)
        stock, row = self.locate(req, at)
        metrics.feature_seconds(time.perf_counter() - started)
        scored = (await self.run_score([self.score_row(at, row, req.model_version)]))[0]
        if scored.get("error"):
            raise ApiError(scored["status"], scored["error"])
        explanation = None
        if req.include_explanation:
            explanation = await self.explain(at, row, scored["model_version"])
        metrics.prediction(scored["confidence"])
        return self.build_response(stock, at, row, scored, req, explanation, started)

    async def batch_predict(self, req: BatchPredictRequest) -> dict[str, Any]:
        started = time.perf_counter()
        if not 1 <= len(req.stocks) <= MAX_BATCH:
            raise ApiError(422, f"stocks must hold 1 to {MAX_BATCH} entries, got "
                                f"{len(req.stocks)}")
        at = await self._features_async(req.prediction_date)
        located, errors = [], []
        for i, ref in enumerate(req.stocks):
            try:
                stock, row = self.locate(ref, at)
                located.append((i, stock, row))
            except ApiError as exc:
                errors.append({"index": i, "bse_code": ref.bse_code, "nse_symbol": ref.nse_symbol,
                               "status": exc.status, "error": exc.message})
        results, version = [], None
        if located:
            rows = [self.score_row(at, row, req.model_version) for _, _, row in located]
            scored = await self.run_score(rows)
            for (i, stock, row), s in zip(located, scored, strict=True):
                if s.get("error"):
                    errors.append({"index": i, "bse_code": stock.bse_code,
                                   "nse_symbol": stock.nse_symbol, "status": s["status"],
                                   "error": s["error"]})
                    continue
                explanation = None
                if req.include_explanation:
                    explanation = await self.explain(at, row, s["model_version"])
                metrics.prediction(s["confidence"])
                version = s["model_version"]
                results.append(self.build_response(stock, at, row, s, req, explanation, started))
        errors.sort(key=lambda e: e["index"])
        return {"results": results, "errors": errors, "model_version": version,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    async def _features_async(self, wanted: date | None) -> DateFeatures:
        snapshot = self.snapshot
        if not snapshot.ready:
            raise ApiError(503, "market data is still loading")
        try:
            as_of = snapshot.resolve_date(wanted)
        except DateOutOfRange as exc:
            raise ApiError(422, str(exc)) from None
        if snapshot.latest is not None and as_of == snapshot.latest.as_of:
            return snapshot.latest
        # Another date may need a panel read and a feature pass: keep the event loop free.
        return await asyncio.to_thread(snapshot.at, as_of)

    async def health(self) -> dict[str, Any]:
        reasons: list[str] = []
        try:
            status = await self.runner.status()
        except Exception as exc:  # runner down: the service cannot score
            status = {"active": None, "degraded": [f"model runner unreachable: {exc}"]}
        reasons += status.get("degraded") or []
        snap = self.snapshot
        if not snap.ready:
            reasons.append("market data not loaded")
        if status.get("active") is None:
            state = "down"
            reasons.append("no model is being served")
        elif not snap.ready:
            state = "down"
        else:
            state = "degraded" if reasons else "ok"
        latest = snap.latest
        return {
            "status": state, "reasons": reasons, "active_model": status.get("active"),
            "data_as_of": latest.as_of if latest else None,
            "data_source": snap.data_source if snap.ready else None,
            "universe_size": len(snap.master) if snap.master is not None else 0,
            "scoreable_today": int(latest.result.scoreable.sum()) if latest else 0,
            **self.stats.summary(),
        }

    async def models(self) -> dict[str, Any]:
        status = await self.runner.status()
        cached = set(status.get("cached") or [])
        active = status.get("active")
        rows = []
        for m in model_store.list_models():
            s = model_store.summary(m)
            rows.append({**s, "active": s["version"] == active, "cached": s["version"] in cached})
        return {"active": active, "models": rows}

    async def reload(self, req: ReloadRequest) -> dict[str, Any]:
        previous = (await self.runner.status()).get("active")
        if req.version:
            try:
                await asyncio.to_thread(model_store.promote, req.version)
            except model_store.ModelStoreError as exc:
                status = 404 if "not found" in str(exc) else 422
                raise ApiError(status, str(exc)) from None
        after = await self.runner.reload()
        if req.version and after.get("active") != model_store.read_active():
            raise ApiError(422, f"model {req.version} could not be loaded; still serving "
                                f"{after.get('active')}", after.get("degraded"))
        await asyncio.to_thread(self.snapshot.maybe_refresh)
        metrics.set_active_model(after.get("active"))
        latest = self.snapshot.latest
        return {"active": after.get("active"), "previous": previous,
                "data_as_of": latest.as_of if latest else None}


def build_app(get_backend) -> FastAPI:
    """The FastAPI app; `get_backend()` returns the worker's ApiBackend."""
    app = FastAPI(
        title="VCP breakout scoring API",
        version="1.0",
        description="Scores NSE/BSE stocks for the probability that a VCP breakout succeeds.",
    )
    errors = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
              400: {"model": ErrorResponse}}

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        body = {"error": exc.message}
        if exc.detail is not None:
            body["detail"] = exc.detail
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        detail = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")}
                  for e in exc.errors()]
        first = detail[0] if detail else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(
            {"error": f"invalid request: {where or 'body'}: {first.get('msg', 'malformed')}",
             "detail": detail}, status_code=422)

    # Starlette's class, which FastAPI raises itself (unparsable body, 404, 405): every error
    # body is {"error": ...}, as the spec says.
    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception):
        log.exception("unexpected error")
        return JSONResponse({"error": "internal error; see the server log"}, status_code=500)

    @app.post("/predict", response_model=PredictResponse, responses=errors,
              summary="Score one stock")
    async def predict(req: PredictRequest) -> dict:
        return await get_backend().predict(req)

    @app.post("/batch_predict", response_model=BatchPredictResponse, responses=errors,
              summary=f"Score 1-{MAX_BATCH} stocks; per-stock errors do not fail the rest")
    async def batch_predict(req: BatchPredictRequest) -> dict:
        return await get_backend().batch_predict(req)

    @app.get("/health", response_model=HealthResponse, summary="ok / degraded / down")
    async def health() -> dict:
        return await get_backend().health()

    @app.get("/models", response_model=ModelsResponse, summary="Model versions in the store")
    async def models() -> dict:
        return await get_backend().models()

    @app.post("/models/reload", response_model=ReloadResponse, responses=errors,
              summary="Promote a version (optional) and switch every worker to it")
    async def reload(req: ReloadRequest | None = None) -> dict:
        return await get_backend().reload(req or ReloadRequest())

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.exposition(), media_type="text/plain; version=0.0.4")

    return app
