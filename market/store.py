"""The market store: one DuckDB file holding the stock master, daily bars and metadata.

Readers never keep the file open: a server reads while an ingest may write, and DuckDB lets
only one process hold a writable handle. Every call opens, works and closes, retrying briefly
while another process holds the lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from market.master import MASTER_COLUMNS, STATUS_COLUMNS, StockMaster

SCHEMA = """
CREATE TABLE IF NOT EXISTS stocks (
    isin VARCHAR PRIMARY KEY,
    nse_symbol VARCHAR,
    bse_code VARCHAR,
    name VARCHAR,
    sector VARCHAR,
    listing_date DATE,
    active BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE TABLE IF NOT EXISTS bars (
    isin VARCHAR NOT NULL,
    date DATE NOT NULL,
    open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE,
    exchange VARCHAR NOT NULL,           -- 'NSE' or 'BSE': NSE's bar wins for dual listings
    PRIMARY KEY (isin, date)
);
CREATE TABLE IF NOT EXISTS calendar (date DATE PRIMARY KEY);
CREATE TABLE IF NOT EXISTS corporate_actions (
    isin VARCHAR NOT NULL,
    ex_date DATE NOT NULL,
    ratio DOUBLE NOT NULL,               -- shares after / shares before (2-for-1 split = 2)
    PRIMARY KEY (isin, ex_date)
);
CREATE TABLE IF NOT EXISTS metadata (key VARCHAR PRIMARY KEY, value VARCHAR);
-- Dated status from the exchanges' lists (`data master`); added to stores made before it.
ALTER TABLE stocks ADD COLUMN IF NOT EXISTS industry VARCHAR;
ALTER TABLE stocks ADD COLUMN IF NOT EXISTS delisting_date DATE;
ALTER TABLE stocks ADD COLUMN IF NOT EXISTS suspension_date DATE;
"""

LOCK_RETRY_SECONDS = 10.0
PRICE_FIELDS = ("open", "high", "low", "close", "volume")


class StoreError(RuntimeError):
    """The store is missing, empty or cannot be read; the message says what to do."""


@dataclass
class Panel:
    """Aligned price arrays [n_stocks, n_dates] over the trading calendar ending at `as_of`.

    NaN marks a day a stock did not trade. Prices are split/bonus adjusted as of `as_of`.
    """

    isins: np.ndarray  # [n] str, sorted
    dates: np.ndarray  # [T] datetime64[D], ascending
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @property
    def as_of(self) -> date:
        return pd.Timestamp(self.dates[-1]).date()


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "resource temporarily unavailable" in text


class MarketStore:
    def __init__(self, path: str | Path, lock_wait: float = LOCK_RETRY_SECONDS):
        """`lock_wait`: seconds to keep retrying while a writer holds the lock (a server
        answering requests waits less than a command line tool)."""
        self.path = Path(path)
        self.lock_wait = lock_wait

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def connect(self, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            raise StoreError(
                f"market store {self.path} does not exist: run `python -m vcp data demo` "
                "or `python -m vcp data ingest FILES`"
            )
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_wait
        delay = 0.02
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.Error as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            if not read_only:
                con.execute(SCHEMA)
            yield con
        finally:
            con.close()

    def exists(self) -> bool:
        return self.path.exists()

    # -- metadata ----------------------------------------------------------------------------
    def get_meta(self) -> dict[str, str]:
        with self.connect() as con:
            if not _has_table(con, "metadata"):
                return {}
            return dict(con.execute("SELECT key, value FROM metadata").fetchall())

    @staticmethod
    def set_meta(con: duckdb.DuckDBPyConnection, **values: object) -> None:
        """Write metadata keys inside the caller's transaction; `updated_at` is always refreshed
        (to the microsecond: readers tell two writes in one second apart by it)."""
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        values = {**values, "updated_at": now}
        if not con.execute("SELECT 1 FROM metadata WHERE key = 'created_at'").fetchone():
            values["created_at"] = now
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value)
            con.execute("INSERT OR REPLACE INTO metadata VALUES (?, ?)", [key, text])

    # -- writes ------------------------------------------------------------------------------
    @staticmethod
    def upsert_stocks(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> None:
        """Insert or update master rows; a null identifier never erases a known one."""
        frame = frame[MASTER_COLUMNS]
        con.register("new_stocks", frame)
        con.execute(
            f"""
            INSERT INTO stocks ({", ".join(MASTER_COLUMNS)}) SELECT * FROM new_stocks
            ON CONFLICT (isin) DO UPDATE SET
                nse_symbol = COALESCE(excluded.nse_symbol, stocks.nse_symbol),
                bse_code = COALESCE(excluded.bse_code, stocks.bse_code),
                name = COALESCE(excluded.name, stocks.name),
                sector = COALESCE(excluded.sector, stocks.sector),
                listing_date = LEAST(excluded.listing_date, stocks.listing_date),
                active = excluded.active
            """
        )
        con.unregister("new_stocks")

    @staticmethod
    def upsert_bars(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> int:
        """Upsert bars keyed (isin, date). For a dual listing the NSE bar wins over BSE's.

        Returns the number of rows written (inserted or replaced).
        """
        cols = ["isin", "date", *PRICE_FIELDS, "exchange"]
        frame = frame[cols]
        if frame.empty:
            return 0
        con.register("new_bars", frame)
        # Within one batch the same (isin, date) may come from both exchanges: keep NSE's.
        changed = con.execute(
            """
            WITH dedup AS (
                SELECT * FROM new_bars
                QUALIFY row_number() OVER (
                    PARTITION BY isin, date ORDER BY (exchange = 'NSE') DESC) = 1
            )
            SELECT count(*) FROM dedup d LEFT JOIN bars b USING (isin, date)
            WHERE b.isin IS NULL OR (
                (d.exchange = 'NSE' OR b.exchange = 'BSE') AND (
                    d.open IS DISTINCT FROM b.open OR d.high IS DISTINCT FROM b.high
                    OR d.low IS DISTINCT FROM b.low OR d.close IS DISTINCT FROM b.close
                    OR d.volume IS DISTINCT FROM b.volume OR d.exchange <> b.exchange))
            """
        ).fetchone()[0]
        con.execute(
            """
            INSERT INTO bars
            SELECT isin, CAST(date AS DATE), open, high, low, close, volume, exchange
            FROM new_bars
            QUALIFY row_number() OVER (
                PARTITION BY isin, date ORDER BY (exchange = 'NSE') DESC) = 1
            ON CONFLICT (isin, date) DO UPDATE SET
                open = excluded.open, high = excluded.high, low = excluded.low,
                close = excluded.close, volume = excluded.volume, exchange = excluded.exchange
                WHERE excluded.exchange = 'NSE' OR bars.exchange = 'BSE'
            """
        )
        con.execute(
            "INSERT OR IGNORE INTO calendar SELECT DISTINCT CAST(date AS DATE) FROM new_bars"
        )
        con.unregister("new_bars")
        return int(changed)

    @staticmethod
    def upsert_corporate_actions(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> int:
        frame = frame[["isin", "ex_date", "ratio"]]
        con.register("new_actions", frame)
        n = con.execute(
            """
            SELECT count(*) FROM new_actions n LEFT JOIN corporate_actions c
            ON c.isin = n.isin AND c.ex_date = CAST(n.ex_date AS DATE)
            WHERE c.isin IS NULL OR c.ratio <> n.ratio
            """
        ).fetchone()[0]
        con.execute(
            """
            INSERT INTO corporate_actions
            SELECT isin, CAST(ex_date AS DATE), ratio FROM new_actions
            ON CONFLICT (isin, ex_date) DO UPDATE SET ratio = excluded.ratio
            """
        )
        con.unregister("new_actions")
        return int(n)

    @staticmethod
    def rekey_local_stocks(con: duckdb.DuckDBPyConnection) -> int:
        """Move stocks registered under a local key (`LOCAL:...`, `ingest --unlisted`) to the
        ISIN that now holds their NSE symbol or BSE code: bars and corporate actions follow
        (the ISIN's own bar wins on a date both have) and the local row is deleted."""
        pairs = con.execute(
            """
            SELECT l.isin, r.isin FROM stocks l JOIN stocks r
            ON r.isin NOT LIKE 'LOCAL:%' AND ((l.nse_symbol IS NOT NULL
                AND l.nse_symbol = r.nse_symbol) OR (l.bse_code IS NOT NULL
                AND l.bse_code = r.bse_code))
            WHERE l.isin LIKE 'LOCAL:%'
            QUALIFY row_number() OVER (PARTITION BY l.isin ORDER BY r.isin) = 1
            """
        ).fetchall()
        for old, new in pairs:
            for table, day in (("bars", "date"), ("corporate_actions", "ex_date")):
                con.execute(
                    f"""
                    INSERT INTO {table} SELECT ? AS isin, * EXCLUDE (isin) FROM {table}
                    WHERE isin = ? AND {day} NOT IN (SELECT {day} FROM {table} WHERE isin = ?)
                    """,
                    [new, old, new],
                )
                con.execute(f"DELETE FROM {table} WHERE isin = ?", [old])
            con.execute(
                """
                UPDATE stocks SET listing_date = COALESCE(stocks.listing_date, l.listing_date)
                FROM (SELECT listing_date FROM stocks WHERE isin = ?) l WHERE stocks.isin = ?
                """,
                [old, new],
            )
            con.execute("DELETE FROM stocks WHERE isin = ?", [old])
        return len(pairs)

    # -- reads -------------------------------------------------------------------------------
    def master(self) -> StockMaster:
        """The stock master, with the dated status columns (NULL in stores made before them)."""
        with self.connect() as con:
            have = {r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'stocks'"
            ).fetchall()}
            extra = [c if c in have else f"NULL AS {c}" for c in STATUS_COLUMNS]
            frame = con.execute(
                f"SELECT {', '.join(MASTER_COLUMNS + extra)} FROM stocks ORDER BY isin"
            ).df()
        return StockMaster(frame)

    def last_traded(self) -> pd.Series:
        """Each stock's latest bar date (datetime64), indexed by isin."""
        with self.connect() as con:
            rows = con.execute("SELECT isin, max(date) AS d FROM bars GROUP BY isin").df()
        return pd.Series(pd.to_datetime(rows["d"]).to_numpy(), index=rows["isin"].to_numpy())

    def session_counts(self) -> pd.DataFrame:
        """Sessions of the calendar with the number of stocks that have a bar (date, stocks)."""
        with self.connect() as con:
            return con.execute(
                """
                SELECT c.date, count(b.isin) AS stocks FROM calendar c
                LEFT JOIN bars b USING (date) GROUP BY c.date ORDER BY c.date
                """
            ).df()

    def calendar(self, until: date | None = None) -> np.ndarray:
        """Trading dates (any stock traded) up to `until`, ascending, as datetime64[D]."""
        with self.connect() as con:
            if until is None:
                rows = con.execute("SELECT date FROM calendar ORDER BY date").fetchnumpy()
            else:
                rows = con.execute(
                    "SELECT date FROM calendar WHERE date <= ? ORDER BY date", [until]
                ).fetchnumpy()
        return rows["date"].astype("datetime64[D]")

    def date_range(self) -> tuple[date, date] | None:
        with self.connect() as con:
            lo, hi = con.execute("SELECT min(date), max(date) FROM calendar").fetchone()
        return None if lo is None else (lo, hi)

    def info(self) -> dict[str, object]:
        with self.connect() as con:
            n_stocks, n_active = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE active) FROM stocks"
            ).fetchone()
            n_bars = con.execute("SELECT count(*) FROM bars").fetchone()[0]
            lo, hi = con.execute("SELECT min(date), max(date) FROM calendar").fetchone()
            n_days = con.execute("SELECT count(*) FROM calendar").fetchone()[0]
            meta = dict(con.execute("SELECT key, value FROM metadata").fetchall())
        return {
            "path": str(self.path),
            "stocks": n_stocks,
            "active_stocks": n_active,
            "bars": n_bars,
            "sessions": n_days,
            "first_date": lo,
            "last_date": hi,
            "source": meta.get("source", "unknown"),
            "seed": meta.get("seed"),
            "created_at": meta.get("created_at"),
            "updated_at": meta.get("updated_at"),
        }

    def health(self, since: date | None = None) -> dict[str, Any]:
        """Master coverage and the calendar check (`market.calendar`) of a real store."""
        from market.calendar import check_calendar

        with self.connect() as con:
            has_status = bool(con.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_name = 'stocks' "
                "AND column_name = 'delisting_date'").fetchone())
            with_sector, local = con.execute(
                "SELECT count(*) FILTER (WHERE sector IS NOT NULL AND sector <> 'Unknown'), "
                "count(*) FILTER (WHERE isin LIKE 'LOCAL:%') FROM stocks").fetchone()
            delisted = con.execute(
                "SELECT count(*) FROM stocks WHERE delisting_date IS NOT NULL").fetchone()[0] \
                if has_status else 0
        counts = self.session_counts()
        check = check_calendar(counts["date"], counts["stocks"], since)
        return {"master": {"with_sector": with_sector, "local_keys": local,
                           "delisted": delisted},
                "calendar": check.to_dict()}

    def load_panel(
        self,
        as_of: date | str | None = None,
        lookback: int = 400,
        isins: list[str] | None = None,
    ) -> Panel:
        """Aligned OHLCV arrays for the `lookback` sessions ending at `as_of` (default: latest).

        Nothing after `as_of` is read, so features computed from the panel cannot look ahead.
        """
        with self.connect() as con:
            if as_of is None:
                row = con.execute("SELECT max(date) FROM calendar").fetchone()
            else:
                row = con.execute(
                    "SELECT max(date) FROM calendar WHERE date <= ?", [pd.Timestamp(as_of).date()]
                ).fetchone()
            if row is None or row[0] is None:
                raise StoreError(
                    f"no trading sessions on or before {as_of} in {self.path}"
                    if as_of is not None
                    else f"market store {self.path} holds no bars"
                )
            end = row[0]
            dates = con.execute(
                "SELECT date FROM calendar WHERE date <= ? ORDER BY date DESC LIMIT ?",
                [end, int(lookback)],
            ).fetchnumpy()["date"][::-1].astype("datetime64[D]")
            start = pd.Timestamp(dates[0]).date()
            if isins is None:
                ids = con.execute("SELECT isin FROM stocks ORDER BY isin").fetchnumpy()["isin"]
            else:
                ids = np.array(sorted(set(isins)), dtype=object)
            ids = np.asarray(ids, dtype=object)
            n, t = len(ids), len(dates)
            # Join to integer keys so the scatter below is one flat index per bar.
            con.register("panel_ids", pd.DataFrame({"isin": ids, "row0": np.arange(n) * t}))
            con.register("panel_days", pd.DataFrame({"date": dates, "col": np.arange(t)}))
            rows = con.execute(
                """
                SELECT p.row0 + d.col AS k, b.open, b.high, b.low, b.close, b.volume
                FROM bars b JOIN panel_ids p USING (isin) JOIN panel_days d USING (date)
                WHERE b.date BETWEEN ? AND ?
                """,
                [start, end],
            ).fetchnumpy()
            actions = con.execute(
                """
                SELECT p.row0 // ? AS sid, a.ex_date, a.ratio FROM corporate_actions a
                JOIN panel_ids p USING (isin) WHERE a.ex_date > ? AND a.ex_date <= ?
                """,
                [t, start, end],
            ).fetchnumpy()
        flat = np.asarray(rows["k"], dtype=np.int64)
        out = {}
        for field in PRICE_FIELDS:
            arr = np.full(n * t, np.nan)
            arr[flat] = np.asarray(rows[field], dtype=np.float64)
            out[field] = arr.reshape(n, t)
        _apply_adjustments(out, dates, actions)
        return Panel(isins=ids, dates=dates, **out)


def _apply_adjustments(
    arrays: dict[str, np.ndarray], dates: np.ndarray, actions: dict[str, np.ndarray]
) -> None:
    """Back-adjust bars before each ex-date: prices / ratio, volume * ratio."""
    for sid, ex_date, ratio in zip(
        actions["sid"], actions["ex_date"], actions["ratio"], strict=True
    ):
        before = dates < np.datetime64(pd.Timestamp(ex_date).date(), "D")
        for field in ("open", "high", "low", "close"):
            arrays[field][sid, before] /= ratio
        arrays["volume"][sid, before] *= ratio


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchone()
    )
