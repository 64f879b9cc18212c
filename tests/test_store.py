from __future__ import annotations

import subprocess
import sys
from datetime import date

import numpy as np
import pandas as pd
import pytest

from market.master import AmbiguousStockError, UnknownStockError
from market.store import MarketStore, StoreError


def test_lookup_by_either_identifier(small_store):
    master = small_store.master()
    row = master.frame[master.frame["nse_symbol"].notna()].iloc[0]
    by_symbol = master.lookup(nse_symbol=row["nse_symbol"].lower())
    by_code = master.lookup(bse_code=row["bse_code"])
    assert by_symbol.isin == by_code.isin == row["isin"]
    assert master.lookup(bse_code=row["bse_code"], nse_symbol=row["nse_symbol"]).isin == row["isin"]


def test_unknown_and_ambiguous_identifiers_say_which(small_store):
    master = small_store.master()
    with pytest.raises(UnknownStockError, match="NOSUCH"):
        master.lookup(nse_symbol="NOSUCH")
    with pytest.raises(UnknownStockError, match="999999"):
        master.lookup(bse_code="999999")
    dual = master.frame[master.frame["nse_symbol"].notna()]
    a, b = dual.iloc[0], dual.iloc[1]
    with pytest.raises(AmbiguousStockError, match=f"{a['isin']}.*{b['isin']}"):
        master.lookup(bse_code=a["bse_code"], nse_symbol=b["nse_symbol"])


def test_panel_is_aligned_and_never_reads_after_as_of(small_store):
    cal = small_store.calendar()
    as_of = pd.Timestamp(cal[500]).date()
    panel = small_store.load_panel(as_of, lookback=300)
    assert panel.close.shape == (len(panel.isins), 300)
    assert panel.dates[-1] == cal[500] and panel.dates[0] == cal[201]
    assert list(panel.isins) == sorted(panel.isins)
    with small_store.connect() as con:
        isin = panel.isins[5]
        rows = con.execute(
            "SELECT date, close FROM bars WHERE isin = ? AND date BETWEEN ? AND ?",
            [isin, pd.Timestamp(panel.dates[0]).date(), as_of],
        ).df()
    series = pd.Series(panel.close[5], index=pd.to_datetime(panel.dates))
    expected = rows.set_index(pd.to_datetime(rows["date"]))["close"]
    assert len(expected) > 250 and series.notna().sum() == len(expected)
    assert np.allclose(series.reindex(expected.index), expected)
    assert np.isnan(panel.close).any()  # missing days stay NaN


def test_missing_store_and_empty_range_are_clear_errors(tmp_path, small_store):
    with pytest.raises(StoreError, match="data demo"):
        MarketStore(tmp_path / "none.duckdb").load_panel(None, 10)
    with pytest.raises(StoreError, match="no trading sessions"):
        small_store.load_panel(date(1990, 1, 1), 10)


def test_upsert_is_idempotent_and_readers_retry_while_a_writer_holds_the_lock(tmp_path):
    store = MarketStore(tmp_path / "m.duckdb")
    stocks = pd.DataFrame([{
        "isin": "INE000A01011", "nse_symbol": "ABC", "bse_code": "500001", "name": "Abc",
        "sector": "X", "listing_date": date(2024, 1, 1), "active": True}])
    bars = pd.DataFrame({
        "isin": ["INE000A01011"] * 2, "date": [date(2024, 1, 1), date(2024, 1, 2)],
        "open": [10.0, 11.0], "high": [11.0, 12.0], "low": [9.0, 10.5], "close": [10.5, 11.5],
        "volume": [100.0, 200.0], "exchange": ["NSE", "NSE"]})
    with store.connect(read_only=False) as con:
        MarketStore.upsert_stocks(con, stocks)
        assert MarketStore.upsert_bars(con, bars) == 2
    with store.connect(read_only=False) as con:
        assert MarketStore.upsert_bars(con, bars) == 0
        # A BSE bar never replaces an NSE one.
        assert MarketStore.upsert_bars(con, bars.assign(exchange="BSE", close=99.0)) == 0
    assert store.info()["bars"] == 2
    # Another process holds the write lock for a moment: the reader waits, then reads.
    holder = subprocess.Popen([
        sys.executable, "-c",
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
        "print('locked', flush=True); time.sleep(1.0); con.close()",
        str(store.path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    panel = store.load_panel(None, 5)
    holder.wait(timeout=10)
    assert panel.close[0, -1] == 11.5
