"""The daily batch: score every active stock as of one date and publish the ranked list.

Stages (timed, journalled in `batch_runs`):

1. model    - load the active (or pinned) model in process, or check the --url deployment;
2. read     - the store's calendar, stock master and the 400-session price panel ending at D;
3. features - the 25 features of every stock at D (`serving.market_data.features_from_panel`,
              the service's own path, over the whole master so RS ranks match the API's);
4. score    - the rows of active, scoreable stocks through the model runner logic;
5. write    - CSVs and report to temp files, predictions upserted in one SQLite transaction,
              then the files renamed into place and the transaction committed.

Who is scored: stocks listed on D by the master's dated status (`market.master.status_reasons`:
not_listed / delisted / suspended / inactive, checked first; a stock delisted after D was listed
on D and is scored) whose features can be computed at D (the others go to the skipped file with
`FeatureResult.reasons`: no_data / stale / insufficient_history).

Failure: nothing is published unless every stage succeeds; the run's `batch_runs` row is
marked failed with the error. A run killed outright is marked failed ("interrupted") by the next
run, which also removes its temp files. `VCP_BATCH_FAIL_AT=write` (raise) or `write-kill`
(SIGKILL itself) is a test hook that fires after the temp files and rows are written, before
anything is renamed or committed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from batch.atomic import StagedFiles, remove_leftovers
from batch.errors import EXIT_BAD_INPUT, BatchError
from batch.predictions_db import PredictionsDB, RunLockedError, now_utc
from batch.report import render_report
from batch.scorers import DEFAULT_CHUNK, InProcessScorer, RemoteScorer
from vcp import config

FAIL_HOOK_ENV = "VCP_BATCH_FAIL_AT"
Progress = Callable[..., None]


@dataclass
class BatchConfig:
    date: date | None = None  # default: the latest session in the store
    url: str | None = None  # score against a running deployment instead of in process
    out_dir: Path | None = None  # default vcp.config.outputs_dir()
    predictions_db: Path | None = None  # default vcp.config.predictions_db_path()
    market_db: Path | None = None  # default vcp.config.market_db_path()
    model_version: str | None = None  # default: the active model
    chunk_size: int = DEFAULT_CHUNK
    api_key: str | None = None


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


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _none_if_nan(x):
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

    def stage(self, name: str, message: str):
        watch = self

        class _Stage:
            def __enter__(self):
                watch.progress(message)
                self.t0 = time.perf_counter()

            def __exit__(self, exc_type, *_):
                watch.timings[name] = time.perf_counter() - self.t0
                if exc_type is None:
                    watch.progress(None, advance=1)

        return _Stage()


def _fail_hook(point: str) -> None:
    wanted = os.environ.get(FAIL_HOOK_ENV, "")
    if wanted == point:
        raise BatchError(f"injected failure at {point} ({FAIL_HOOK_ENV})")
    if wanted == f"{point}-kill":
        os.kill(os.getpid(), signal.SIGKILL)


class _Terminated(BatchError):
    pass


def _on_sigterm(signum, _frame):
    raise _Terminated(f"terminated by signal {signum}", code=128 + signum)


def run_batch(cfg: BatchConfig, progress: Progress | None = None) -> BatchResult:
    """Run the daily batch; raises BatchError (with an exit code) on any failure."""
    db = PredictionsDB(cfg.predictions_db or config.predictions_db_path())
    out_dir = Path(cfg.out_dir or config.outputs_dir())
    market_db = Path(cfg.market_db or config.market_db_path())
    mode = cfg.url or "in-process"
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with db.run_lock():
            return _journalled(cfg, db, out_dir, market_db, mode, progress)
    except RunLockedError as exc:
        raise BatchError(str(exc)) from None
    except sqlite3.Error as exc:
        raise BatchError(f"predictions database {db.path}: {exc}") from None
    except OSError as exc:  # the lock file or the database folder
        raise BatchError(f"cannot use the predictions database {db.path}: {exc}") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _journalled(cfg, db, out_dir, market_db, mode, progress) -> BatchResult:
    dead = db.reap_interrupted()
    remove_leftovers(out_dir, dead)
    run_id = new_run_id()
    db.start_run(run_id, prediction_date=cfg.date.isoformat() if cfg.date else None,
                 model_version=cfg.model_version, mode=mode, market_db=str(market_db),
                 out_dir=str(out_dir))
    watch = _Stopwatch(progress)
    staged = StagedFiles(out_dir, run_id)
    try:
        return _run(cfg, db, out_dir, market_db, mode, run_id, watch, staged)
    except BaseException as exc:
        staged.discard()
        if isinstance(exc, BatchError):
            err: BatchError = exc
        elif isinstance(exc, KeyboardInterrupt):
            err = BatchError("interrupted (Ctrl-C)", code=130)
        else:
            err = _as_batch_error(exc)
        db.fail_run(run_id, str(err), **{f"seconds_{k}": v for k, v in watch.timings.items()})
        if isinstance(exc, KeyboardInterrupt) or err is exc:
            raise
        raise err from exc


def _as_batch_error(exc: BaseException) -> BatchError:
    from market.store import StoreError

    if isinstance(exc, StoreError):
        return BatchError(str(exc))
    if isinstance(exc, OSError):
        return BatchError(f"writing the outputs failed: {exc}")
    return BatchError(f"unexpected {type(exc).__name__}: {exc}")


def _resolve_date(calendar: np.ndarray, wanted: date | None, path: Path) -> date:
    if len(calendar) == 0:
        raise BatchError(f"the market store {path} holds no sessions", code=EXIT_BAD_INPUT)
    first, last = (pd.Timestamp(calendar[i]).date() for i in (0, -1))
    if wanted is None:
        return last
    day = np.datetime64(wanted, "D")
    i = int(np.searchsorted(calendar, day))
    if i < len(calendar) and calendar[i] == day:
        return wanted
    if wanted < first or wanted > last:
        raise BatchError(f"no data for {wanted}: the store {path} holds sessions from {first} "
                         f"to {last}", code=EXIT_BAD_INPUT)
    before = pd.Timestamp(calendar[i - 1]).date()
    raise BatchError(f"no data for {wanted}: not a trading session in {path} (a holiday or "
                     f"weekend?); the session before it is {before}", code=EXIT_BAD_INPUT)


def _run(cfg, db, out_dir, market_db, mode, run_id, watch, staged) -> BatchResult:
    from features.vector import FEATURES, HISTORY_WINDOW
    from market.master import status_reasons
    from market.store import MarketStore
    from serving.market_data import features_from_panel

    with watch.stage("model", "loading the model" if cfg.url is None
                     else f"connecting to {cfg.url}"):
        scorer = (InProcessScorer(cfg.model_version) if cfg.url is None else
                  RemoteScorer(cfg.url, cfg.model_version, cfg.chunk_size, cfg.api_key))
        model = scorer.prepare()

    with watch.stage("read", "reading the market store"):
        store = MarketStore(market_db)
        info = store.info()
        as_of = _resolve_date(store.calendar(), cfg.date, market_db)
        day = as_of.isoformat()
        master = store.master().frame.set_index("isin")
        panel = store.load_panel(as_of, HISTORY_WINDOW)
        if panel.as_of != as_of:
            raise BatchError(f"no data for {as_of} in {market_db}", code=EXIT_BAD_INPUT)
        stocks = master.reindex(panel.isins)
        checks = _data_checks(store, info, panel)

    with watch.stage("features", f"computing features as of {day}"):
        feats = features_from_panel(panel)
        result = feats.result
        status = status_reasons(stocks, as_of, store.last_traded())  # as of D, not today
        active = np.array([s is None for s in status], dtype=bool)
        score_mask = active & result.scoreable
        reasons = np.array([s if s is not None else (r or "") for s, r
                            in zip(status, result.reasons, strict=True)], dtype=object)
        idx = np.flatnonzero(score_mask)
        if len(idx) == 0:
            raise BatchError(f"no stock can be scored on {day}: features need "
                             "200 sessions of history and a trade in the last 5 sessions",
                             code=EXIT_BAD_INPUT)
        X = result.values[idx]

    with watch.stage("score", f"scoring {len(idx):,} stocks"):
        try:
            scores = scorer.score(X)
        finally:
            if isinstance(scorer, RemoteScorer):
                scorer.close()

    with watch.stage("write", "writing predictions and report"):
        t_write = time.perf_counter()
        created_at = now_utc()
        fi = {name: j for j, name in enumerate(FEATURES)}
        pivot = np.asarray(result.vcp.pivot, dtype=np.float64)[idx]
        detected = np.asarray(result.vcp.detected)[idx]  # idx holds scoreable stocks only
        sel = stocks.iloc[idx]
        pred = pd.DataFrame({
            "prediction_date": day,
            "isin": panel.isins[idx],
            "nse_symbol": sel["nse_symbol"].to_numpy(dtype=object),
            "bse_code": sel["bse_code"].to_numpy(dtype=object),
            "name": sel["name"].to_numpy(dtype=object),
            "sector": sel["sector"].to_numpy(dtype=object),
            "probability": scores.probability,
            "confidence": scores.confidence,
            "vcp_detected": detected,
            "pivot_price": np.where(np.isfinite(pivot), pivot, np.nan),
            "close": _last_close(panel.close[idx]),
            "dist_to_pivot": X[:, fi["dist_to_pivot"]],
            "contraction_count": X[:, fi["contraction_count"]],
            "trend_template_count": X[:, fi["trend_template_count"]],
            "rs_rating": X[:, fi["rs_rating"]],
            "model_version": scores.model_version,
        })
        order = np.lexsort((pred["isin"].to_numpy(), -pred["probability"].to_numpy()))
        pred = pred.iloc[order].reset_index(drop=True)
        pred.insert(0, "rank", np.arange(1, len(pred) + 1))
        skip_idx = np.flatnonzero(~score_mask)
        sk = stocks.iloc[skip_idx]
        skipped = pd.DataFrame({
            "isin": panel.isins[skip_idx],
            "nse_symbol": sk["nse_symbol"].to_numpy(dtype=object),
            "bse_code": sk["bse_code"].to_numpy(dtype=object),
            "name": sk["name"].to_numpy(dtype=object),
            "reason": reasons[skip_idx],
        })
        files = {
            "predictions": staged.write(f"predictions_{day}.csv",
                                        lambda fh: pred.to_csv(fh, index=False)),
            "skipped": staged.write(f"skipped_stocks_{day}.csv",
                                    lambda fh: skipped.to_csv(fh, index=False)),
        }
        rows = list(zip(
            pred["prediction_date"], pred["isin"],
            map(_none_if_nan, pred["bse_code"]), map(_none_if_nan, pred["nse_symbol"]),
            pred["probability"].astype(float), pred["confidence"], pred["rank"].astype(int),
            pred["vcp_detected"].astype(int), map(_none_if_nan, pred["pivot_price"].astype(float)),
            pred["model_version"], [run_id] * len(pred), [created_at] * len(pred),
            strict=True,
        ))
        rows = [tuple(v.item() if hasattr(v, "item") else v for v in r) for r in rows]
        model_meta = {"version": scores.model_version, "data_source": model.data_source,
                      "thresholds": model.thresholds}
        with db.publish(run_id, day, scores.model_version, rows) as con:
            timings = {**watch.timings,
                       "write (CSVs + database rows)": time.perf_counter() - t_write}
            text = render_report(
                prediction_date=day, run_id=run_id, mode=mode, store_info=info,
                model=model_meta, predictions=pred, skipped=skipped, n_universe=len(stocks),
                timings=timings, created_at=created_at, data_checks=checks,
            )
            files["report"] = staged.write(f"report_{day}.txt", lambda fh: fh.write(text))
            _fail_hook("write")
            staged.publish()
            write_s = time.perf_counter() - t_write
            final = {**watch.timings, "write": write_s}
            db.finish_run(
                con, run_id, prediction_date=day, model_version=scores.model_version,
                data_source=info.get("source"), n_universe=len(stocks), n_scored=len(pred),
                n_skipped=len(skipped), seconds_total=sum(final.values()),
                **{f"seconds_{k}": v for k, v in final.items()},
            )
    watch.timings["write"] = write_s
    return BatchResult(
        run_id=run_id, prediction_date=day, model_version=scores.model_version, mode=mode,
        data_source=str(info.get("source")), n_universe=len(stocks), n_scored=len(pred),
        n_skipped=len(skipped), timings=dict(watch.timings), files=files,
        predictions_db=db.path,
        by_confidence={k: int(v) for k, v in pred["confidence"].value_counts().items()},
    )


def _data_checks(store, info: dict, panel) -> list[str]:
    """The calendar check over the sessions the features read (real stores only)."""
    if info.get("source") != "real":
        return []
    first = pd.Timestamp(panel.dates[0]).date()
    lines = store.health(since=first)["calendar"]["lines"]
    return [f"calendar {first}..{panel.as_of}: {line}" for line in lines]
