"""The daily batch: score every active stock as of one date and publish the ranked list.

Stages (timed, journalled in `batch_runs`), one method of `_Run` each:

1. model    - load the active (or pinned) model in process, or check the --url deployment;
2. read     - the store's calendar, stock master and the 400-session price panel ending at D
              (a date that is not a session maps to the session before: `inference.sessions`);
3. features - the 25 features of every stock at D (`inference.snapshot.features_from_panel`,
              the service's own path, over the whole master so RS ranks match the API's);
4. score    - the rows of active, scoreable stocks through the model runner logic;
5. write    - CSVs and report to temp files, then in one SQLite transaction the predictions
              upserted, the temp files recorded as pending and the run marked succeeded; only
              after the commit are the files renamed into place (`batch.predictions_db`).

Who is scored: stocks listed on D by the master's dated status (`market.master.status_reasons`:
not_listed / delisted / suspended / inactive, checked first; a stock delisted after D was listed
on D and is scored) whose features can be computed at D (the others go to the skipped file with
`FeatureResult.reasons`: no_data / stale / insufficient_history).

Failure: nothing is published unless every stage succeeds and the commit with it (a full
disk fails the commit: no file moves); the run's `batch_runs` row is marked failed with the
error, and cleaning up after it never raises over that error. A run killed outright is marked
failed ("interrupted") by the next run, which also removes its temp files; a run that ended
between its commit and its renames is finished by the next run (the pending renames are
replayed first). `BatchConfig.fail_at` (VCP_BATCH_FAIL_AT) is a test hook: `write` (raise) or
`write-kill` (SIGKILL itself) fire after the temp files and rows are written, before the
commit; `publish-kill` after the commit, before the renames; `db-full` makes the database
refuse to grow, as a full disk does.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batch.atomic import StagedFiles, remove_leftovers
from batch.errors import EXIT_BAD_INPUT, BatchError, as_batch_error
from batch.html_report import NearSetupRow, SetupRow, render_html_report
from batch.predictions_db import PredictionsDB, RunLockedError, now_utc
from batch.report import render_report
from batch.scorers import DEFAULT_CHUNK, InProcessScorer, ModelInfo, RemoteScorer, Scores
from features import FEATURES, FeatureResult, vcp
from features.universe import Floors
from features.vector import HISTORY_WINDOW
from inference.charts import render_thumbnail
from inference.sessions import Session, resolve_session
from inference.snapshot import DateFeatures, features_from_panel
from market.master import status_reasons
from market.store import MarketStore, Panel

Progress = Callable[..., None]
log = logging.getLogger("vcp.batch")


@dataclass
class BatchConfig:
    market_db: Path
    predictions_db: Path
    out_dir: Path
    date: date | None = None  # default: the latest session in the store
    url: str | None = None  # score against a running deployment instead of in process
    model_version: str | None = None  # default: the active model
    chunk_size: int = DEFAULT_CHUNK
    api_key: str | None = None
    fail_at: str | None = None  # test hook: "write", "write-kill", ... (see the module doc)
    floors: Floors = field(default_factory=Floors)  # the tradeable universe
    charts: int = 25  # setups (and up to as many near-setups) drawn in the HTML report


@dataclass
class BatchResult:
    run_id: str
    prediction_date: str
    model_version: str
    mode: str
    data_source: str
    n_universe: int
    n_scored: int
    n_skipped: int
    timings: dict[str, float]
    files: dict[str, Path]
    predictions_db: Path
    by_confidence: dict[str, int] = field(default_factory=dict)
    note: str | None = None  # set when the requested date was not a session


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _none_if_nan(x: Any) -> Any:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else x


def _last_close(close: np.ndarray) -> np.ndarray:
    """The last traded close of each row (NaN when the row never traded)."""
    ok = ~np.isnan(close)
    last = close.shape[1] - 1 - ok[:, ::-1].argmax(axis=1)
    out = close[np.arange(len(close)), last]
    out[~ok.any(axis=1)] = np.nan
    return out


class _Stopwatch:
    def __init__(self, progress: Progress | None):
        self.timings: dict[str, float] = {}
        self.progress = progress or (lambda *a, **k: None)

    @contextmanager
    def stage(self, name: str, message: str) -> Iterator[None]:
        self.progress(message)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - started
        self.progress(None, advance=1)


class _Terminated(BatchError):
    pass


def _on_sigterm(signum, _frame):
    raise _Terminated(f"terminated by signal {signum}", code=128 + signum)


def run_batch(cfg: BatchConfig, progress: Progress | None = None) -> BatchResult:
    """Run the daily batch; raises BatchError (with an exit code) on any failure."""
    db = PredictionsDB(cfg.predictions_db)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with db.run_lock():
            return _journalled(cfg, db, progress)
    except RunLockedError as exc:
        raise BatchError(str(exc)) from None
    except sqlite3.Error as exc:
        raise BatchError(f"predictions database {db.path}: {exc}") from None
    except OSError as exc:  # the lock file or the database folder
        raise BatchError(f"cannot use the predictions database {db.path}: {exc}") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _journalled(cfg: BatchConfig, db: PredictionsDB, progress: Progress | None) -> BatchResult:
    db.replay_pending()
    dead = db.reap_interrupted()
    remove_leftovers(cfg.out_dir, dead)
    run_id = new_run_id()
    db.start_run(run_id, prediction_date=cfg.date.isoformat() if cfg.date else None,
                 model_version=cfg.model_version, mode=cfg.url or "in-process",
                 market_db=str(cfg.market_db), out_dir=str(cfg.out_dir))
    run = _Run(cfg, db, run_id, _Stopwatch(progress), StagedFiles(cfg.out_dir, run_id))
    try:
        result = run.execute()
    except BaseException as exc:
        err = (BatchError("interrupted (Ctrl-C)", code=130) if isinstance(exc, KeyboardInterrupt)
               else as_batch_error(exc))
        run.staged.discard()
        journalled = _journal_failure(db, run, str(err))
        if isinstance(exc, KeyboardInterrupt) or (err is exc and journalled):
            raise
        if not journalled:
            err = BatchError(f"{err} (and the run could not be marked failed in {db.path}; "
                             "the next run marks it interrupted)", code=err.code)
        raise err from exc
    run.fail_hook("publish")
    run.publish_files()
    return result


def _journal_failure(db: PredictionsDB, run: _Run, error: str) -> bool:
    """Mark the run failed with `error`; False (logged) when even that cannot be written."""
    try:
        db.fail_run(run.run_id, error,
                    **{f"seconds_{k}": v for k, v in run.watch.timings.items()})
    except (sqlite3.Error, OSError) as exc:
        log.error("cannot mark run %s failed in %s: %s", run.run_id, db.path, exc)
        return False
    return True


@dataclass
class MarketDay:
    """The read stage's result: the store, the session and its panel with master rows."""

    info: dict[str, Any]
    session: Session
    panel: Panel
    stocks: pd.DataFrame  # master rows, aligned with panel.isins
    status: list[str | None]  # why each stock was not listed on D (None: listed)
    data_checks: list[str]  # calendar problems in the sessions the features read

    @property
    def day(self) -> str:
        return self.session.as_of.isoformat()


@dataclass
class Universe:
    """Who is scored at the session, who nearly was, and why each of the others is not."""

    day: DateFeatures
    scored: np.ndarray  # panel rows of the setups inside the tradeable universe
    near: np.ndarray  # rows of near-setups: inside the universe, a late VCP rule failed
    skipped: np.ndarray  # rows of every stock without a probability
    reasons: np.ndarray  # [n] object: why each row has no probability ("" for scored rows)

    @property
    def features(self) -> FeatureResult:
        return self.day.result

    @property
    def X(self) -> np.ndarray:
        return self.features.values[self.scored]


NEAR_ROWS_HTML = 50  # near-setups listed in report_D.html (all of them are in the CSV)

# The rules a near-setup fails: its base and contractions are there, one late check is not.
NEAR_CODES = (vcp.LAST_TOO_DEEP, vcp.NO_VOL_CONTRACTION, vcp.NO_DRYUP, vcp.EXTENDED)


def select_universe(market: MarketDay, floors: Floors) -> Universe:
    """The setups to score: stocks listed on the session (status as of D, not today) whose
    features can be computed, inside the universe's floors, where the detector finds a VCP."""
    day = features_from_panel(market.panel, floors)
    result = day.result
    listed = np.array([s is None for s in market.status], dtype=bool)
    if not (listed & result.scoreable).any():
        raise BatchError(f"no stock can be scored on {market.day}: features need "
                         "200 sessions of history and a trade in the last 5 sessions",
                         code=EXIT_BAD_INPUT)
    inside = listed & result.scoreable & day.tradeable
    setup = inside & result.vcp.detected
    near = inside & np.isin(result.vcp.code, NEAR_CODES)
    reasons = np.array([status if status is not None else ("" if setup[i] else
                                                            day.why_not(i) or "")
                        for i, status in enumerate(market.status)], dtype=object)
    return Universe(day, np.flatnonzero(setup), np.flatnonzero(near),
                    np.flatnonzero(~setup), reasons)


def ranked_predictions(market: MarketDay, universe: Universe, scores: Scores) -> pd.DataFrame:
    """The day's setups ranked by probability (ties broken by the uncalibrated score, then
    ISIN), with their setup's levels."""
    idx, X, day = universe.scored, universe.X, universe.day
    fi = {name: j for j, name in enumerate(FEATURES)}
    vcp_day = day.result.vcp
    pred = pd.DataFrame({
        "prediction_date": market.day,
        **_identity(market, idx),
        "sector": market.stocks.iloc[idx]["sector"].to_numpy(dtype=object),
        "probability": scores.probability,
        "confidence": scores.confidence,
        "footprint": [vcp_day.footprint(int(i)) for i in idx],
        "pivot_price": vcp_day.pivot[idx],
        "stop_price": vcp_day.stop[idx],
        "risk_pct": 1.0 - vcp_day.stop[idx] / vcp_day.pivot[idx],
        "breakout": vcp_day.breakout[idx],
        "close": _last_close(market.panel.close[idx]),
        "dist_to_pivot": X[:, fi["dist_to_pivot"]],
        "rs_rating": X[:, fi["rs_rating"]],
        "trend_template_count": X[:, fi["trend_template_count"]],
        "score": scores.score,
        "vcp_detected": True,
        "model_version": scores.model_version,
    })
    order = np.lexsort((pred["isin"].to_numpy(), -pred["score"].to_numpy(),
                        -pred["probability"].to_numpy()))
    pred = pred.iloc[order].reset_index(drop=True)
    pred.insert(0, "rank", np.arange(1, len(pred) + 1))
    return pred


def near_setups(market: MarketDay, universe: Universe) -> pd.DataFrame:
    """Stocks inside the universe whose base failed one late rule, closest to a setup first."""
    idx = universe.near
    vcp_day = universe.day.result.vcp
    out = pd.DataFrame({
        "prediction_date": market.day,
        **_identity(market, idx),
        "footprint": [vcp_day.footprint(int(i)) for i in idx],
        "pivot_price": vcp_day.pivot[idx],
        "close": _last_close(market.panel.close[idx]),
        "why_not": universe.reasons[idx],
    })
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.abs(out["close"].to_numpy() / out["pivot_price"].to_numpy() - 1.0)
    return out.iloc[np.argsort(np.nan_to_num(gap, nan=9.0), kind="stable")].reset_index(
        drop=True)


def skipped_stocks(market: MarketDay, universe: Universe) -> pd.DataFrame:
    idx = universe.skipped
    return pd.DataFrame({**_identity(market, idx), "reason": universe.reasons[idx]})


def _identity(market: MarketDay, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The columns that name stocks `idx` in every output: isin, nse_symbol, bse_code, name."""
    sel = market.stocks.iloc[idx]
    return {"isin": market.panel.isins[idx],
            **{col: sel[col].to_numpy(dtype=object) for col in ("nse_symbol", "bse_code",
                                                                  "name")}}


def database_rows(pred: pd.DataFrame, run_id: str, created_at: str) -> list[tuple]:
    """`daily_predictions` rows (PREDICTION_COLUMNS order) as plain Python values."""
    rows = zip(
        pred["prediction_date"], pred["isin"],
        map(_none_if_nan, pred["bse_code"]), map(_none_if_nan, pred["nse_symbol"]),
        pred["probability"].astype(float), pred["confidence"], pred["rank"].astype(int),
        pred["vcp_detected"].astype(int), map(_none_if_nan, pred["pivot_price"].astype(float)),
        pred["model_version"], [run_id] * len(pred), [created_at] * len(pred),
        strict=True,
    )
    return [tuple(v.item() if hasattr(v, "item") else v for v in r) for r in rows]


@dataclass
class _Run:
    """One journalled run: its stages in order, each a method."""

    cfg: BatchConfig
    db: PredictionsDB
    run_id: str
    watch: _Stopwatch
    staged: StagedFiles

    @property
    def mode(self) -> str:
        return self.cfg.url or "in-process"

    def execute(self) -> BatchResult:
        cfg = self.cfg
        with self.watch.stage("model", "loading the model" if cfg.url is None
                              else f"connecting to {cfg.url}"):
            scorer, model = self.prepare_scorer()
        with self.watch.stage("read", "reading the market store"):
            market = self.read_market()
        with self.watch.stage("features", f"computing features as of {market.day}"):
            universe = select_universe(market, cfg.floors)
        with self.watch.stage("score", f"scoring {len(universe.scored):,} setups"):
            try:
                scores = (scorer.score(universe.X) if len(universe.scored)
                          else Scores(np.empty(0), np.empty(0, dtype=str), np.empty(0),
                                      model.version or ""))
            finally:
                scorer.close()
        with self.watch.stage("write", "writing predictions and report"):
            pred, skipped, files = self.publish(market, universe, model, scores)
        return BatchResult(
            run_id=self.run_id, prediction_date=market.day, model_version=scores.model_version,
            mode=self.mode, data_source=str(market.info.get("source")),
            n_universe=len(market.stocks), n_scored=len(pred), n_skipped=len(skipped),
            timings=dict(self.watch.timings), files=files, predictions_db=self.db.path,
            by_confidence={k: int(v) for k, v in pred["confidence"].value_counts().items()},
            note=market.session.note,
        )

    def prepare_scorer(self) -> tuple[InProcessScorer | RemoteScorer, ModelInfo]:
        cfg = self.cfg
        scorer = (InProcessScorer(cfg.model_version) if cfg.url is None else
                  RemoteScorer(cfg.url, cfg.model_version, cfg.chunk_size, cfg.api_key))
        return scorer, scorer.prepare()

    def read_market(self) -> MarketDay:
        store = MarketStore(self.cfg.market_db)
        info = store.info()
        session = resolve_session(store.calendar(), self.cfg.date)
        panel = store.load_panel(session.as_of, HISTORY_WINDOW)
        if panel.as_of != session.as_of:
            raise BatchError(f"no data for {session.as_of} in {self.cfg.market_db}",
                             code=EXIT_BAD_INPUT)
        master = store.master().frame
        stocks = master.set_index("isin").reindex(panel.isins)
        status = status_reasons(master.set_index("isin").reindex(panel.isins).reset_index(),
                                session.as_of, store.last_traded())
        return MarketDay(info, session, panel, stocks, status, _data_checks(store, info, panel))

    def publish(self, market: MarketDay, universe: Universe, model: ModelInfo,
                scores: Scores) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Path]]:
        """Stage the files, then upsert the rows, record the staged files and mark the run
        succeeded in one transaction (see the module doc); `publish_files` renames them."""
        started = time.perf_counter()
        created_at = now_utc()
        day = market.day
        pred = ranked_predictions(market, universe, scores)
        near = near_setups(market, universe)
        skipped = skipped_stocks(market, universe)
        listing = pd.concat([pred.assign(status="setup"),
                             near.assign(status="near-setup", vcp_detected=False)],
                            ignore_index=True)
        listing["rank"] = listing["rank"].astype("Int64")  # empty for near-setups
        files = {
            "predictions": self.staged.write(f"predictions_{day}.csv",
                                             lambda fh: listing.to_csv(fh, index=False)),
            "skipped": self.staged.write(f"skipped_stocks_{day}.csv",
                                         lambda fh: skipped.to_csv(fh, index=False)),
        }
        page = self.html_report(market, universe, pred, near, model, scores, created_at)
        files["html"] = self.staged.write(f"report_{day}.html", lambda fh: fh.write(page))
        rows = database_rows(pred, self.run_id, created_at)
        model_meta = {"version": scores.model_version, "data_source": model.data_source,
                      "thresholds": model.thresholds}
        with self.db.publish(self.run_id, day, scores.model_version, rows,
                             fill_up=self.cfg.fail_at == "db-full") as con:
            timings = {**self.watch.timings,
                       "write (CSVs + database rows)": time.perf_counter() - started}
            text = render_report(
                prediction_date=day, run_id=self.run_id, mode=self.mode,
                store_info=market.info, model=model_meta, predictions=pred, skipped=skipped,
                n_universe=len(market.stocks), timings=timings, created_at=created_at,
                data_checks=market.data_checks, near_setups=near,
                universe=universe_counts(universe),
            )
            files["report"] = self.staged.write(f"report_{day}.txt", lambda fh: fh.write(text))
            self.fail_hook("write")
            self.db.add_pending(con, self.run_id, self.staged.staged)
            final = {**self.watch.timings, "write": time.perf_counter() - started}
            self.db.finish_run(
                con, self.run_id, prediction_date=day, model_version=scores.model_version,
                data_source=market.info.get("source"), n_universe=len(market.stocks),
                n_scored=len(pred), n_skipped=len(skipped), seconds_total=sum(final.values()),
                **{f"seconds_{k}": v for k, v in final.items()},
            )
        return pred, skipped, files

    def publish_files(self) -> None:
        """Rename the staged files into place, after the commit (a process that ends before
        this is done leaves them to the next run's replay)."""
        try:
            self.staged.publish()
        except OSError as exc:
            raise BatchError(
                f"run {self.run_id} is committed to {self.db.path}, but moving its files into "
                f"{self.cfg.out_dir} failed: {exc}; the next run moves them") from None
        self.db.clear_pending(self.run_id)

    def html_report(self, market: MarketDay, universe: Universe, pred: pd.DataFrame,
                    near: pd.DataFrame, model: ModelInfo, scores: Scores,
                    created_at: str) -> str:
        """report_D.html: the ranked setups with chart thumbnails, then the near-setups."""
        simulated = market.info.get("source") == "simulated"
        panel, day = market.panel, universe.day
        row_of = day.row_of

        def chart(isin: str, title: str) -> bytes | None:
            if self.cfg.charts <= 0:
                return None
            i = row_of[isin]
            return render_thumbnail(panel.dates, panel.open[i], panel.high[i], panel.low[i],
                                    panel.close[i], panel.volume[i], day.setup(i),
                                    day.why_not(i), title, simulated)

        def label(r: Any) -> str:
            return _none_if_nan(r.nse_symbol) or _none_if_nan(r.bse_code) or r.isin

        setups = [
            SetupRow(rank=int(r.rank), isin=r.isin, nse_symbol=_none_if_nan(r.nse_symbol),
                     bse_code=_none_if_nan(r.bse_code), name=r.name, footprint=r.footprint,
                     pivot=float(r.pivot_price), stop=float(r.stop_price),
                     risk_pct=float(r.risk_pct), probability=float(r.probability),
                     confidence=r.confidence, close=_none_if_nan(float(r.close)),
                     sector=_none_if_nan(r.sector), breakout=bool(r.breakout),
                     chart_png=chart(r.isin, f"#{r.rank} {label(r)}")
                     if r.rank <= self.cfg.charts else None)
            for r in pred.itertuples(index=False)]
        nears = [
            NearSetupRow(isin=r.isin, nse_symbol=_none_if_nan(r.nse_symbol),
                         bse_code=_none_if_nan(r.bse_code), name=r.name, why_not=r.why_not,
                         close=_none_if_nan(float(r.close)),
                         chart_png=chart(r.isin, label(r))
                         if k < self.cfg.charts else None)
            for k, r in enumerate(near.head(NEAR_ROWS_HTML).itertuples(index=False))]
        return render_html_report(
            prediction_date=market.day, setups=setups, near_setups=nears,
            previous_isins=self.db.previous_setups(market.day), simulated=simulated,
            model_version=scores.model_version, thresholds=model.thresholds,
            created_at=created_at, run_id=self.run_id,
            data_seed=market.info.get("seed") or None, near_total=len(near))

    def fail_hook(self, point: str) -> None:
        if self.cfg.fail_at == point:
            raise BatchError(f"injected failure at {point} (VCP_BATCH_FAIL_AT)")
        if self.cfg.fail_at == f"{point}-kill":
            os.kill(os.getpid(), signal.SIGKILL)


def _data_checks(store: MarketStore, info: dict[str, Any], panel: Panel) -> list[str]:
    """The calendar check over the sessions the features read (real stores only)."""
    if info.get("source") != "real":
        return []
    first = pd.Timestamp(panel.dates[0]).date()
    lines = store.health(since=first)["calendar"]["lines"]
    return [f"calendar {first}..{panel.as_of}: {line}" for line in lines]


def universe_counts(universe: Universe) -> dict[str, int]:
    day = universe.day
    scoreable = day.result.scoreable
    reasons = day.universe_reasons
    return {
        "scoreable": int(scoreable.sum()),
        "illiquid": int(sum(1 for i in np.flatnonzero(scoreable)
                            if (reasons[i] or "").startswith("illiquid"))),
        "below_price_floor": int(sum(1 for i in np.flatnonzero(scoreable)
                                     if (reasons[i] or "").startswith("below the price"))),
        "tradeable": int((scoreable & day.tradeable).sum()),
        "setups_before_floors": int((scoreable & day.result.vcp.detected).sum()),
        "setups": int(len(universe.scored)),
        "near_setups": int(len(universe.near)),
    }
