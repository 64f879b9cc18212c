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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException

from features import FEATURES
from inference.errors import DatesBusy, ModelLoadError, NoPriceData, scoring_error
from inference.latest_scores import LatestScoresKeeper, feature_row
from inference.scoring import ScoreResult, ScoreRow
from inference.sessions import Session, weekdays_since
from inference.snapshot import DateFeatures, MarketSnapshot
from market.master import Stock, StockLookupError
from serving import metrics
from serving.charts import ChartCache, render_stock_chart
from serving.docs import API_TITLE, project_version
from serving.errors import (
    STATUS,
    ApiError,
    InvalidRequest,
    RunnerUnavailable,
    error_headers,
    message_of,
    public_text,
    status_of,
)
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
from training_artifacts import model_store
from training_artifacts.artifact import MODEL_NAME

log = logging.getLogger("vcp.api")

# How often a request waiting for a date computation slot looks for a free one.
SLOT_POLL_SECONDS = 0.05
# What one stock of a batch can fail with, without failing the others.
STOCK_ERRORS = (InvalidRequest, StockLookupError, NoPriceData)


class Runner(Protocol):
    """The model runner as the API sees it (BentoML's proxy in service.py; a fake in tests)."""

    async def score(self, rows: list[ScoreRow]) -> list[Any]: ...
    async def explain(self, row: ScoreRow) -> dict[str, Any]: ...
    async def status(self) -> dict[str, Any]: ...
    async def reload(self) -> dict[str, Any]: ...


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
    """What the routes need: the market snapshot, the runner client and request stats.

    `stale_after_sessions`: health is degraded (stale_data) when more weekdays than this have
    passed since the newest session of a real-data store; `today` is the clock it reads.
    A date not in memory is computed (about a second of CPU on the full market) on a thread
    of its own, in one of the snapshot's computation slots; a request that finds them all
    taken waits up to `date_wait_seconds` for one, then gets 503 with Retry-After.
    The latest session's setups are answered from `scores` (inference.latest_scores), built
    with one runner call of up to `score_chunk` rows per chunk.
    """

    def __init__(self, snapshot: MarketSnapshot, runner: Runner, *, stale_after_sessions: int,
                 today: Callable[[], date] = date.today, date_wait_seconds: float = 2.0,
                 score_chunk: int = 512):
        self.snapshot = snapshot
        self.runner = runner
        self.stale_after_sessions = stale_after_sessions
        self.today = today
        self.stats = RequestStats()
        self.date_wait_seconds = date_wait_seconds
        self._date_pool = ThreadPoolExecutor(snapshot.concurrency, thread_name_prefix="vcp-date")
        self.charts = ChartCache()
        self.scores = LatestScoresKeeper(snapshot, self.run_score, chunk=score_chunk)
        self._scores_task: asyncio.Task[None] | None = None

    # -- helpers -----------------------------------------------------------------------------
    def lookup(self, ref: StockRef) -> Stock:
        """The stock `ref` names: looked up before any date is computed, so an unknown one
        costs a dictionary lookup, never a feature pass."""
        if not (ref.isin or ref.bse_code or ref.nse_symbol):
            raise InvalidRequest("give isin, bse_code or nse_symbol")
        master = self.snapshot.master
        assert master is not None  # loaded with the latest features (resolve checked)
        return master.lookup(isin=ref.isin, bse_code=ref.bse_code, nse_symbol=ref.nse_symbol)

    async def score(self, at: DateFeatures, rows: list[int],
                    version: str | None) -> list[ScoreResult]:
        """Scores of the candidates `rows` of `at`: from the latest session's table when it
        holds them all (one table, so one version), else from the runner."""
        table = self.scores.current
        if table is not None:
            hits = [table.lookup(at, row, version) for row in rows]
            if all(hit is not None for hit in hits):
                metrics.score_source("table", len(rows))
                return hits  # type: ignore[return-value]  # none is None (checked)
        metrics.score_source("runner", len(rows))
        return await self.run_score([feature_row(at, row, version) for row in rows])

    def start_keeping_scores(self) -> None:
        """Keep the latest session's scores current, on the worker's event loop."""
        self._scores_task = asyncio.get_running_loop().create_task(
            self.scores.keep_current(), name="vcp-latest-scores")

    def build_response(
        self, stock: Stock, session: Session, at: DateFeatures, row: int,
        scored: ScoreResult | None, opts: PredictOptions, explanation: dict[str, Any] | None,
        started: float,
    ) -> dict[str, Any]:
        """The answer for one stock; `scored` is None for a stock the model does not score
        (no setup, or outside the universe): probability null, confidence NONE, why_not."""
        probability = None if scored is None or scored.probability is None else round(
            scored.probability, 6)
        return {
            "isin": stock.isin, "bse_code": stock.bse_code, "nse_symbol": stock.nse_symbol,
            "name": stock.name, "as_of_date": at.as_of, "note": session.note,
            "probability": probability,
            "confidence": scored.confidence if scored is not None else "NONE",
            "pattern": at.setup(row),
            "why_not": at.why_not(row),
            "trend_template": (checks := at.trend_template(row)),
            "trend_template_count": sum(checks.values()),
            "features": at.features(row) if opts.include_features else None,
            "explanation": explanation,
            "model_name": MODEL_NAME,
            "model_version": scored.model_version if scored is not None else None,
            "data_source": self.snapshot.data_source,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    async def _runner(self, call: str, *args: Any) -> Any:
        try:
            return await getattr(self.runner, call)(*args)
        except Exception as exc:  # runner restarting or overloaded: retryable, not a 500
            log.warning("model runner call %s failed: %s", call, exc)
            raise RunnerUnavailable("the model runner is unavailable; retry shortly") from None

    async def run_score(self, rows: list[ScoreRow]) -> list[ScoreResult]:
        results = await self._runner("score", rows)
        if len(results) != len(rows):  # never pair a stock with another's score
            raise RunnerUnavailable(f"the model runner answered {len(results)} scores for "
                                    f"{len(rows)} rows")
        return [r if isinstance(r, ScoreResult) else ScoreResult.model_validate(r)
                for r in results]

    async def explain(self, at: DateFeatures, row: int, version: str | None) -> dict[str, Any]:
        """TreeSHAP contributions from the same model version that gave the probability."""
        explanation = dict(await self._runner("explain", feature_row(at, row, version)))
        explanation.pop("model_version", None)
        return explanation

    async def _features(self, session: Session) -> DateFeatures:
        latest = self.snapshot.latest
        if latest is not None and session.as_of == latest.as_of:
            return latest
        hit = self.snapshot.cached(session.as_of)
        if hit is not None:
            return hit
        return await self._compute(session.as_of)

    async def _compute(self, as_of: date) -> DateFeatures:
        """A date not in memory: a panel read and a feature pass, off the event loop, in a
        computation slot; the requests waiting for one wait here, never in a thread. A
        request for a date already being computed waits for that computation instead."""
        snap, slots = self.snapshot, self.snapshot.slots
        deadline = time.monotonic() + self.date_wait_seconds
        while True:
            hit = snap.cached(as_of)
            if hit is not None:
                return hit
            if as_of in snap.computing:
                deadline = time.monotonic() + self.date_wait_seconds  # its turn has come
            elif slots.acquire(blocking=False):
                break
            elif time.monotonic() >= deadline:
                raise DatesBusy(
                    f"{as_of} is not in memory and the server is computing as many other "
                    f"dates as it allows ({snap.concurrency}); retry in a few seconds")
            await asyncio.sleep(SLOT_POLL_SECONDS)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._date_pool, self.snapshot.at, as_of)
        finally:
            slots.release()
            metrics.date_cache(self.snapshot.cache_nbytes, self.snapshot.cached_dates)

    # -- routes ------------------------------------------------------------------------------
    async def predict(self, req: PredictRequest) -> dict[str, Any]:
        started = time.perf_counter()
        session = self.snapshot.resolve(req.prediction_date)
        stock = self.lookup(req)
        at = await self._features(session)
        row = at.price_row(stock)
        metrics.feature_seconds(time.perf_counter() - started)
        if not at.candidate(row):  # no setup: nothing for the model to score
            metrics.prediction("NONE")
            return self.build_response(stock, session, at, row, None, req, None, started)
        scored = (await self.score(at, [row], req.model_version))[0]
        if scored.error:
            raise scoring_error(scored.error_kind, scored.error)
        explanation = None
        if req.include_explanation:
            explanation = await self.explain(at, row, scored.model_version)
        metrics.prediction(str(scored.confidence))
        return self.build_response(stock, session, at, row, scored, req, explanation, started)

    async def batch_predict(self, req: BatchPredictRequest) -> dict[str, Any]:
        started = time.perf_counter()  # 1 to MAX_BATCH stocks: the schema's limits
        session = self.snapshot.resolve(req.prediction_date)
        found: list[tuple[int, StockRef, Stock]] = []
        located: list[tuple[int, Stock, int]] = []
        errors: list[dict[str, Any]] = []

        def failed(i: int, ref: StockRef | Stock, exc: Exception) -> None:
            errors.append({"index": i, "isin": ref.isin, "bse_code": ref.bse_code,
                           "nse_symbol": ref.nse_symbol, "status": status_of(exc),
                           "error": message_of(exc)})

        for i, ref in enumerate(req.stocks):
            try:
                found.append((i, ref, self.lookup(ref)))
            except STOCK_ERRORS as exc:
                failed(i, ref, exc)
        if found:  # the date is computed only for stocks that exist
            at = await self._features(session)
            for i, ref, stock in found:
                try:
                    located.append((i, stock, at.price_row(stock)))
                except STOCK_ERRORS as exc:
                    failed(i, ref, exc)
        answers: dict[int, dict[str, Any]] = {}
        version = None
        to_score = [(i, stock, row) for i, stock, row in located if at.candidate(row)]
        for i, stock, row in located:
            if not at.candidate(row):
                metrics.prediction("NONE")
                answers[i] = self.build_response(stock, session, at, row, None, req, None,
                                                 started)
        if to_score:
            scored = await self.score(at, [row for _, _, row in to_score], req.model_version)
            for (i, stock, row), s in zip(to_score, scored, strict=True):
                if s.error:
                    failed(i, stock, scoring_error(s.error_kind, s.error))
                    continue
                explanation = None
                if req.include_explanation:
                    explanation = await self.explain(at, row, s.model_version)
                metrics.prediction(str(s.confidence))
                version = s.model_version
                answers[i] = self.build_response(stock, session, at, row, s, req, explanation,
                                                 started)
        results = [answers[i] for i in sorted(answers)]
        errors.sort(key=lambda e: e["index"])
        return {"results": results, "errors": errors, "model_version": version,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    async def chart(self, ref: StockRef, wanted: date | None) -> bytes:
        """The stock's setup chart at the session (a setup's title carries its probability,
        hence the model version in the cache key)."""
        session = self.snapshot.resolve(wanted)
        stock = self.lookup(ref)
        at = await self._features(session)
        row = at.price_row(stock)
        scored = None
        if at.candidate(row):
            scored = (await self.score(at, [row], None))[0]
            if scored.error:
                raise scoring_error(scored.error_kind, scored.error)
        key = (stock.isin, at.as_of, scored.model_version if scored else None)
        png = self.charts.get(key)
        if png is None:
            png = await asyncio.to_thread(render_stock_chart, self.snapshot.store, stock, at,
                                          row, scored, self.snapshot.data_source == "simulated")
            self.charts.put(key, png)
        return png

    def stale_data(self) -> str | None:
        """Why the data is stale, or None. A simulated store is a fixed history: not checked."""
        latest = self.snapshot.latest
        if latest is None or self.snapshot.data_source == "simulated":
            return None
        missed = weekdays_since(latest.as_of, self.today())
        if missed <= self.stale_after_sessions:
            return None
        return (f"stale_data: the newest session, {latest.as_of}, is {missed} weekdays old "
                f"(more than VCP_STALE_AFTER_SESSIONS={self.stale_after_sessions})")

    async def health(self) -> dict[str, Any]:
        reasons: list[str] = []
        try:
            status = await self.runner.status()
        except Exception as exc:  # runner down: the service cannot score
            log.warning("health: model runner unreachable: %r", exc)
            status = {"active": None,
                      "degraded": [f"model runner unreachable ({type(exc).__name__})"]}
        reasons += [public_text(r) for r in status.get("degraded") or []]
        snap = self.snapshot
        latest = snap.latest
        if latest is None:
            reasons.append("market data not loaded")
        problem = snap.store_problem()
        if problem:
            reasons.append(f"market_store_unavailable: {problem}; serving the data in memory")
        stale = self.stale_data()
        if stale:
            reasons.append(stale)
        if status.get("active") is None:
            reasons.append("no model is being served")
        if status.get("active") is None or latest is None:
            state = "down"
        else:
            state = "degraded" if reasons else "ok"
        return {
            "status": state, "reasons": reasons, "active_model": status.get("active"),
            "data_as_of": latest.as_of if latest else None,
            "data_source": snap.data_source if latest else None,
            "universe_size": len(snap.master) if snap.master is not None else 0,
            "scoreable_today": int(latest.result.scoreable.sum()) if latest else 0,
            **self.stats.summary(),
        }

    async def models(self) -> dict[str, Any]:
        status = await self._runner("status")
        cached = set(status.get("cached") or [])
        active = status.get("active")
        scan = await asyncio.to_thread(model_store.scan)
        rows = []
        for m in scan.models:
            s = model_store.summary(m)
            rows.append({**s, "active": s["version"] == active, "cached": s["version"] in cached})
        unreadable = [{"version": v, "error": public_text(e)} for v, e in scan.unreadable.items()]
        return {"active": active, "models": rows, "unreadable": unreadable}

    async def reload(self, req: ReloadRequest) -> dict[str, Any]:
        previous = (await self._runner("status")).get("active")
        if req.version:
            # The runner loads the version first (a row of missing features scored with it):
            # one that does not load is refused before the pointer moves, so the pointer
            # stays on the last good version.
            probe = (await self.run_score([ScoreRow(features=[None] * len(FEATURES),
                                                    model_version=req.version)]))[0]
            if probe.error:
                error = scoring_error(probe.error_kind, probe.error)
                if isinstance(error, ModelLoadError):
                    raise ModelLoadError(f"model {req.version} could not be loaded; still "
                                         f"serving {previous}: {probe.error}")
                raise error
            pointer = model_store.read_active()
            version = await asyncio.to_thread(model_store.promote, req.version, False)
            after = await self._runner("reload")
            if after.get("active") != version:
                if pointer:  # back to the last good version
                    await asyncio.to_thread(model_store.write_active, pointer)
                reason = (after.get("failures") or {}).get(version, "")
                raise ModelLoadError(f"model {req.version} could not be loaded; still serving "
                                     f"{after.get('active')}" + (f": {reason}" if reason else ""))
        else:
            after = await self._runner("reload")
        await asyncio.to_thread(self.snapshot.maybe_refresh)
        try:  # this worker answers from the new version at once (the others within ~1 s)
            await self.scores.rebuild()
        except Exception as exc:  # the runner busy: the background loop tries again
            log.warning("latest scores not rebuilt after reload: %r", exc)
        metrics.set_active_model(after.get("active"))
        latest = self.snapshot.latest
        return {"active": after.get("active"), "previous": previous,
                "data_as_of": latest.as_of if latest else None}


def build_app(get_backend: Callable[[], ApiBackend]) -> FastAPI:
    """The FastAPI app; `get_backend()` returns the worker's ApiBackend."""
    # Its routes go into BentoML's document (serving/docs.py serves it and the pages): no
    # docs of its own under /api/v1 (FastAPI's would load Swagger UI from a CDN).
    app = FastAPI(title=API_TITLE, version=project_version(), docs_url=None, redoc_url=None,
                  openapi_url=None)
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorResponse} for status in sorted({400, *STATUS.values()})}

    async def _typed_error(_request: Request, exc: Exception) -> JSONResponse:
        body: dict[str, Any] = {"error": message_of(exc)}
        if isinstance(exc, ApiError) and exc.detail is not None:
            body["detail"] = exc.detail
        return JSONResponse(body, status_code=status_of(exc), headers=error_headers(exc))

    for error_type in STATUS:
        app.add_exception_handler(error_type, _typed_error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")}
                  for e in exc.errors()]

        def where(e: dict[str, Any]) -> str:
            return ".".join(str(p) for p in e.get("loc", ()) if p != "body")

        unknown = [where(e) for e in detail if e.get("type") == "extra_forbidden"]
        if unknown:
            message = f"invalid request: unknown field(s): {', '.join(unknown)}"
        else:
            first = detail[0] if detail else {}
            message = (f"invalid request: {where(first) or 'body'}: "
                       f"{first.get('msg', 'malformed')}")
        return JSONResponse({"error": message, "detail": detail}, status_code=422)

    # Starlette's class, which FastAPI raises itself (unparsable body, 404, 405): every error
    # body is {"error": ...}, as the spec says.
    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse({"error": "internal error; see the server log"}, status_code=500)

    @app.post("/predict", response_model=PredictResponse, responses=errors,
              summary="Score one stock", tags=["prediction"])
    async def predict(req: PredictRequest) -> dict:
        return await get_backend().predict(req)

    @app.post("/batch_predict", response_model=BatchPredictResponse, responses=errors,
              summary=f"Score 1-{MAX_BATCH} stocks; per-stock errors do not fail the rest",
              tags=["prediction"])
    async def batch_predict(req: BatchPredictRequest) -> dict:
        return await get_backend().batch_predict(req)

    @app.get("/chart", response_class=Response, summary="A stock's setup chart (PNG)",
             tags=["charts"], responses={
                 200: {"content": {"image/png": {}},
                       "description": "Daily candles and volume with the 50/150/200-day "
                                      "averages; a setup's contractions, pivot, stop and "
                                      "breakout; otherwise why there is no setup"},
                 **errors})
    async def chart(
        isin: Annotated[str | None, Query(max_length=20, description="12-character ISIN")] = None,
        bse_code: Annotated[str | None, Query(max_length=20, description="BSE scrip code")
                            ] = None,
        nse_symbol: Annotated[str | None, Query(max_length=40, description="NSE symbol")
                              ] = None,
        day: Annotated[date | None, Query(alias="date", description="Session YYYY-MM-DD "
                                          "(default: the latest)")] = None,
    ) -> Response:
        ref = StockRef(isin=isin, bse_code=bse_code, nse_symbol=nse_symbol)
        png = await get_backend().chart(ref, day)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=300"})

    @app.get("/health", response_model=HealthResponse, summary="ok / degraded / down",
             tags=["operations"])
    async def health() -> dict:
        return await get_backend().health()

    @app.get("/models", response_model=ModelsResponse, summary="Model versions in the store",
             tags=["models"])
    async def models() -> dict:
        return await get_backend().models()

    @app.post("/models/reload", response_model=ReloadResponse, responses=errors,
              summary="Promote a version (optional) and switch every worker to it",
              tags=["models"])
    async def reload(req: ReloadRequest | None = None) -> dict:
        return await get_backend().reload(req or ReloadRequest())

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics",
             tags=["operations"])
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.exposition(), media_type="text/plain; version=0.0.4")

    return app
