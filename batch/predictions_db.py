"""The SQLite predictions database: `daily_predictions`, the `batch_runs` journal and the
`pending_files` of committed runs.

A run is journalled in two steps: its `batch_runs` row is inserted as 'running' in a
transaction of its own, then the predictions, the final status and the run's staged files
(`pending_files`: temp file -> final name) are written in one transaction. Only after that
commit are the files renamed into place and their rows cleared, so a failed commit (a full
disk) publishes nothing; a crash between the commit and the renames leaves the pending rows,
which the next run replays first (`replay_pending`). A run that raises is marked 'failed' with
its error; a run that was killed outright leaves 'running' behind, which the next run (holding
the run lock, so no other run can be alive) turns into 'failed' with error 'interrupted'.

A re-run for the same date and model replaces that date's rows: upsert on
(prediction_date, isin, model_version), then rows of that date and model that the new run did
not score are deleted, so the table always holds exactly one run's list per date and model.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS daily_predictions (
    prediction_date TEXT NOT NULL,          -- YYYY-MM-DD, the session the features are as of
    isin TEXT NOT NULL,
    bse_code TEXT,
    nse_symbol TEXT,
    probability REAL NOT NULL,              -- calibrated success probability
    confidence TEXT NOT NULL,               -- HIGH / MEDIUM / LOW (model thresholds)
    rank INTEGER NOT NULL,                  -- 1 = highest probability on the date
    vcp_detected INTEGER NOT NULL,          -- 0/1
    pivot_price REAL,                       -- max high of the last contraction (NULL: no base)
    model_version TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (prediction_date, isin, model_version)
);
CREATE INDEX IF NOT EXISTS daily_predictions_by_rank
    ON daily_predictions (prediction_date, model_version, rank);
CREATE TABLE IF NOT EXISTS batch_runs (
    run_id TEXT PRIMARY KEY,
    prediction_date TEXT,                   -- NULL until resolved (default: latest session)
    model_version TEXT,
    mode TEXT NOT NULL,                     -- 'in-process' or the --url scored against
    data_source TEXT,                       -- the market store's source: simulated / real
    market_db TEXT,
    out_dir TEXT,
    status TEXT NOT NULL,                   -- running / succeeded / failed
    n_universe INTEGER,
    n_scored INTEGER,
    n_skipped INTEGER,
    seconds_model REAL,
    seconds_read REAL,
    seconds_features REAL,
    seconds_score REAL,
    seconds_write REAL,
    seconds_total REAL,
    pid INTEGER,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS pending_files (
    run_id TEXT NOT NULL,                   -- a committed run whose files are not all renamed
    tmp TEXT NOT NULL,                      -- the staged temp file
    target TEXT NOT NULL,                   -- its final name
    PRIMARY KEY (run_id, target)
);
"""

log = logging.getLogger("vcp.batch")

PREDICTION_COLUMNS = (
    "prediction_date", "isin", "bse_code", "nse_symbol", "probability", "confidence", "rank",
    "vcp_detected", "pivot_price", "model_version", "run_id", "created_at",
)


class RunLockedError(RuntimeError):
    """Another batch run holds the lock on this predictions database."""


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PredictionsDB:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            yield con
        finally:
            con.close()

    @contextmanager
    def run_lock(self) -> Iterator[None]:
        """One batch run at a time per database (released by the OS if the process dies)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fh = open(lock_path, "a+")  # noqa: SIM115 - held for the whole run
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockedError(
                    f"another batch run is writing {self.path} (lock {lock_path}); "
                    "wait for it to finish"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield
        finally:
            fh.close()

    # -- the run journal ---------------------------------------------------------------------
    def reap_interrupted(self) -> list[str]:
        """Mark 'running' rows failed (call with the run lock held); returns their run ids."""
        with self.connect() as con:
            ids = [r[0] for r in con.execute(
                "SELECT run_id FROM batch_runs WHERE status = 'running'")]
            if ids:
                con.execute(
                    "UPDATE batch_runs SET status = 'failed', finished_at = ?, "
                    "error = 'interrupted: the process ended without finishing the run' "
                    "WHERE status = 'running'",
                    [now_utc()],
                )
        return ids

    def start_run(self, run_id: str, **fields: Any) -> None:
        row = {"run_id": run_id, "status": "running", "started_at": now_utc(),
               "pid": os.getpid(), **fields}
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute(f"INSERT INTO batch_runs ({cols}) VALUES ({marks})", list(row.values()))
            con.execute("COMMIT")

    def fail_run(self, run_id: str, error: str, **fields: Any) -> None:
        with self.connect() as con:
            _update_run(con, run_id, status="failed", finished_at=now_utc(), error=error,
                        **fields)

    @contextmanager
    def publish(
        self, run_id: str, prediction_date: str, model_version: str, rows: Iterable[tuple],
        fill_up: bool = False,
    ) -> Iterator[sqlite3.Connection]:
        """Upsert the predictions in one open transaction; the caller's block runs inside it
        (to record the staged files and set the final status) and the transaction commits
        after it. Any exception rolls everything back, and is the one raised: a rollback
        that finds the transaction already gone (SQLite ends it itself when a COMMIT fails
        on a full disk) is not an error of its own. `fill_up` (a test hook) caps the file
        at its current size and then has the transaction store one more megabyte, so SQLite
        fails it just before the commit as on a full disk."""
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                cols = ", ".join(PREDICTION_COLUMNS)
                marks = ", ".join("?" for _ in PREDICTION_COLUMNS)
                keys = {"prediction_date", "isin", "model_version"}
                updates = ", ".join(f"{c} = excluded.{c}" for c in PREDICTION_COLUMNS
                                    if c not in keys)
                con.executemany(
                    f"INSERT INTO daily_predictions ({cols}) VALUES ({marks}) "
                    f"ON CONFLICT (prediction_date, isin, model_version) DO UPDATE SET {updates}",
                    rows,
                )
                con.execute(
                    "DELETE FROM daily_predictions WHERE prediction_date = ? "
                    "AND model_version = ? AND run_id <> ?",
                    [prediction_date, model_version, run_id],
                )
                yield con
                if fill_up:
                    pages = con.execute("PRAGMA page_count").fetchone()[0]
                    con.execute(f"PRAGMA max_page_count = {int(pages)}")
                    con.execute("INSERT INTO pending_files VALUES ('fill-up', zeroblob(?), '')",
                                [2**20])
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise

    @staticmethod
    def add_pending(con: sqlite3.Connection, run_id: str, files: dict[Path, Path]) -> None:
        """Record the run's staged files (final name -> temp file) inside the publishing
        transaction: committed with the predictions, renamed after."""
        con.executemany("INSERT INTO pending_files (run_id, tmp, target) VALUES (?, ?, ?)",
                        [(run_id, str(tmp), str(target)) for target, tmp in files.items()])

    def clear_pending(self, run_id: str) -> None:
        with self.connect() as con:
            con.execute("DELETE FROM pending_files WHERE run_id = ?", [run_id])

    def replay_pending(self) -> list[str]:
        """Finish committed runs whose files were not all renamed (the process ended between
        the commit and the renames): rename what is still staged, clear the rows. Call with
        the run lock held. Returns the run ids finished."""
        with self.connect() as con:
            pending = con.execute(
                "SELECT run_id, tmp, target FROM pending_files ORDER BY rowid").fetchall()
        runs: list[str] = []
        for run_id, tmp, target in pending:
            if os.path.exists(tmp):
                os.replace(tmp, target)
                log.warning("published %s of committed run %s (its renames were interrupted)",
                            target, run_id)
            if run_id not in runs:
                runs.append(run_id)
        for run_id in runs:
            self.clear_pending(run_id)
        return runs

    @staticmethod
    def finish_run(con: sqlite3.Connection, run_id: str, **fields: Any) -> None:
        """Mark the run succeeded inside the publishing transaction."""
        _update_run(con, run_id, status="succeeded", finished_at=now_utc(), **fields)

    # -- reads -------------------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        with self.connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(
                "SELECT * FROM batch_runs ORDER BY started_at, rowid")]

    def predictions(self, prediction_date: str | None = None) -> list[dict[str, Any]]:
        with self.connect() as con:
            con.row_factory = sqlite3.Row
            if prediction_date is None:
                cur = con.execute("SELECT * FROM daily_predictions ORDER BY prediction_date, rank")
            else:
                cur = con.execute(
                    "SELECT * FROM daily_predictions WHERE prediction_date = ? ORDER BY rank",
                    [prediction_date],
                )
            return [dict(r) for r in cur]

    def previous_setups(self, prediction_date: str) -> set[str] | None:
        """ISINs listed on the latest earlier date that has predictions (any model), None when
        there is no earlier date: the HTML report marks the setups that are new since then."""
        if not self.path.exists():
            return None
        with self.connect() as con:
            row = con.execute("SELECT MAX(prediction_date) FROM daily_predictions "
                              "WHERE prediction_date < ?", [prediction_date]).fetchone()
            if row is None or row[0] is None:
                return None
            return {r[0] for r in con.execute(
                "SELECT DISTINCT isin FROM daily_predictions WHERE prediction_date = ?",
                [row[0]])}


def _update_run(con: sqlite3.Connection, run_id: str, **fields: Any) -> None:
    sets = ", ".join(f"{k} = ?" for k in fields)
    con.execute(f"UPDATE batch_runs SET {sets} WHERE run_id = ?", [*fields.values(), run_id])


def _rollback(con: sqlite3.Connection) -> None:
    """Roll back what is still open; never raises over the error being handled."""
    if not con.in_transaction:
        return
    try:
        con.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.warning("rollback failed: %s", exc)
