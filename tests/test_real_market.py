"""Real-market readiness: the stock master from the exchanges' lists, per-stock CSVs without
ISINs, status as of a date, suspect splits and the calendar check. Real DuckDB files in temp
folders; the CLI runs as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from market.actions import suspect_gaps
from market.calendar import check_calendar, exchange_holidays
from market.ingest import ingest_paths
from market.master import status_reasons
from market.master_files import import_master, parse_dates_any
from market.store import MarketStore
from tests.serverutil import ROOT

FIXTURES = Path(__file__).parent / "fixtures" / "master"
NSE_LIST, BSE_LIST = FIXTURES / "EQUITY_L.csv", FIXTURES / "Equity.csv"
QUIET = {"COLUMNS": "400", "TERM": "dumb"}


def vcp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vcp", *args], cwd=ROOT,
                          env={**os.environ, **QUIET}, capture_output=True, text=True,
                          timeout=600)


def said(proc: subprocess.CompletedProcess) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


def stock_csv(path: Path, days: pd.DatetimeIndex, close: np.ndarray, volume=1000.0) -> Path:
    pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "open": close, "high": close * 1.01,
                  "low": close * 0.99, "close": close, "volume": volume}).to_csv(path,
                                                                                 index=False)
    return path


def walk(n: int, seed: int, start: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0, 0.015, n)))


# -- the master ---------------------------------------------------------------------------------
def test_master_merges_nse_and_bse_lists_by_isin(tmp_path):
    store = MarketStore(tmp_path / "m.duckdb")
    report = import_master(store, [NSE_LIST, BSE_LIST])
    m = store.master().frame.set_index("isin")
    # One row per ISIN with both identifiers; NSE's name, BSE's sector and industry.
    tcs = m.loc["INE467B01029"]
    assert (tcs.nse_symbol, tcs.bse_code) == ("TCS", "532540")
    assert tcs["name"] == "Tata Consultancy Services Limited"
    assert tcs.sector == "Information Technology" and tcs.industry == "Information Technology"
    # Both date styles, BOM and spaces in the header, a code with its leading zero dropped.
    assert pd.Timestamp(tcs.listing_date).date() == date(2004, 8, 25)
    assert pd.Timestamp(m.loc["INE002A01018"].listing_date).date() == date(1995, 11, 29)
    assert m.loc["INE555P01015"].bse_code == "012345"
    # BSE's status; the preference share is not equity; only listed stocks are active.
    assert not m.loc["INE473A01011"].active and not m.loc["INE999Z01012"].active
    assert "INE040A04012" not in m.index
    assert m.loc["INE040A01034"].sector == "Unknown"  # NSE-only: the NSE list has no sector
    assert len(m) == 8 and report.added == 8
    nse = report.files[0]
    assert (nse.rows_read, nse.stocks, nse.rows_rejected) == (7, 5, 2)
    reasons = pd.read_csv(nse.rejects_file)["reason"].tolist()
    assert any("malformed ISIN" in r for r in reasons)
    assert any("repeats an ISIN" in r for r in reasons)
    # Importing again changes nothing.
    again = import_master(store, [NSE_LIST, BSE_LIST])
    assert (again.added, again.updated) == (0, 8)
    pd.testing.assert_frame_equal(store.master().frame, m.reset_index())


def test_dates_in_mixed_formats():
    text = pd.Series(["29-JUN-2007", "2007-06-29", "29/06/2007", "29-Jun-07", "Jun 29, 2007",
                      "", "not a date"])
    got = parse_dates_any(text)
    assert (got[:5] == pd.Timestamp("2007-06-29")).all() and got[5:].isna().all()


def test_master_cli_refuses_an_unknown_file(tmp_path):
    bad = tmp_path / "prices.csv"
    bad.write_text("date,open,high,low,close,volume\n2024-01-01,1,1,1,1,1\n")
    db = tmp_path / "m.duckdb"
    proc = vcp("data", "master", str(bad), "--db", str(db))
    assert proc.returncode == 2
    assert "not a list of securities" in said(proc) and "EQUITY_L" in said(proc)
    assert "Traceback" not in said(proc) and not db.exists()


# -- per-stock CSVs without ISINs ---------------------------------------------------------------
def test_symbols_match_through_the_master_and_unknown_ones_fail_loudly(tmp_path):
    db = tmp_path / "m.duckdb"
    days = pd.bdate_range("2024-01-01", periods=30)
    folder = tmp_path / "csv"
    folder.mkdir()
    stock_csv(folder / "UNKNOWN1.csv", days, walk(30, 1))
    stock_csv(folder / "UNKNOWN2.NS.csv", days, walk(30, 2))
    proc = vcp("data", "ingest", str(folder), "--db", str(db))
    text = said(proc)
    assert proc.returncode == 2, text
    assert "2 symbol(s) unknown to the stock master" in text and "UNKNOWN1, UNKNOWN2" in text
    assert "vcp data master" in text and "--unlisted" in text
    assert "nothing was ingested" in text and "Traceback" not in text
    # With the master loaded, a file named by its NSE symbol is matched to the ISIN.
    assert vcp("data", "master", str(NSE_LIST), str(BSE_LIST), "--db", str(db)).returncode == 0
    stock_csv(folder / "TCS.NS.csv", days, walk(30, 3))
    proc = vcp("data", "ingest", str(folder / "TCS.NS.csv"), "--db", str(db))
    assert proc.returncode == 0, said(proc)
    bars = MarketStore(db).load_panel(None, 30, isins=["INE467B01029"])
    assert np.isfinite(bars.close).all()


def test_unlisted_keys_are_stable_and_move_to_the_isin_when_the_master_knows_them(tmp_path):
    db = tmp_path / "m.duckdb"
    store = MarketStore(db)
    days = pd.bdate_range("2024-01-01", periods=30)
    folder = tmp_path / "csv"
    folder.mkdir()
    stock_csv(folder / "TCS.csv", days, walk(30, 1))
    stock_csv(folder / "500325.BO.csv", days, walk(30, 2))  # a BSE code as the file name
    first = ingest_paths(store, folder, unlisted=True)
    assert first.rows_written == 60 and not first.unknown_symbols
    assert "registered under local keys" in first.summary()
    m = store.master().frame.set_index("isin")
    assert {"LOCAL:NSE:TCS", "LOCAL:BSE:500325"} <= set(m.index)
    assert m.loc["LOCAL:NSE:TCS"].nse_symbol == "TCS"
    assert m.loc["LOCAL:BSE:500325"].bse_code == "500325"
    again = ingest_paths(store, folder, unlisted=True)  # same keys, nothing new
    assert again.rows_written == 0 and again.stocks_added == 0 and again.rows_accepted == 60
    # The exchange lists give both their ISINs: bars move, the local rows go.
    report = import_master(store, [NSE_LIST, BSE_LIST])
    assert report.rekeyed == 2
    m = store.master().frame.set_index("isin")
    assert not m.index.str.startswith("LOCAL:").any()
    panel = store.load_panel(None, 30, isins=["INE467B01029", "INE002A01018"])
    assert np.isfinite(panel.close).all()


# -- status as of the date ----------------------------------------------------------------------
def test_status_as_of_a_date_not_today():
    frame = pd.DataFrame({
        "isin": ["A", "B", "C", "D", "E"],
        "listing_date": [date(2020, 1, 1), date(2024, 6, 1), None, None, None],
        "delisting_date": [None, None, date(2024, 3, 1), None, None],
        "suspension_date": [None, None, None, date(2024, 2, 1), None],
        "active": [True, True, False, False, False],
    })
    last = pd.Series(pd.to_datetime(["2024-12-31", "2024-12-31", "2024-02-28", "2024-01-31",
                                     "2024-04-30"]), index=list("ABCDE"))
    early = status_reasons(frame, date(2024, 1, 15), last)
    assert early[:1] == [None] and early[1].startswith("not_listed")
    assert early[2:] == [None, None, None]  # delisted, suspended and inactive since: listed then
    late = status_reasons(frame, date(2024, 6, 3), last)
    assert late[0] is None and late[1] is None
    assert late[2] == "delisted: on 2024-03-01" and late[3] == "suspended: since 2024-02-01"
    assert late[4].startswith("inactive") and "2024-04-30" in late[4]


def test_a_past_batch_examines_a_stock_delisted_since(tmp_path, quick_model):
    from batch import BatchConfig, run_batch

    db = tmp_path / "m.duckdb"
    store = MarketStore(db)
    days = pd.bdate_range("2023-01-02", periods=260)
    folder = tmp_path / "csv"
    folder.mkdir()
    for i, sym in enumerate(["RELIANCE", "TCS", "INFY", "HDFCBANK", "SMALLCO"]):
        n = 240 if sym == "INFY" else 260  # INFY's last bar: 20 sessions before the end
        stock_csv(folder / f"{sym}.csv", days[:n], walk(n, i))
    import_master(store, [NSE_LIST])
    delisted_on = days[240].date()
    lines = ["SYMBOL,NAME OF COMPANY,SERIES,DATE OF LISTING,ISIN NUMBER,DATE OF DELISTING",
             f"INFY,Infosys Limited,EQ,08-Feb-1995,INE009A01021,{delisted_on}"]
    delist = tmp_path / "delisted.csv"
    delist.write_text("\n".join(lines) + "\n")
    assert ingest_paths(store, folder).rows_written == 4 * 260 + 240
    import_master(store, [delist])  # a row with a delisting date: not listed since then
    assert store.master().frame.set_index("isin").loc["INE009A01021"].delisting_date is not None
    out = {"out_dir": tmp_path / "out", "predictions_db": tmp_path / "p.db", "market_db": db}
    past = run_batch(BatchConfig(date=days[235].date(), **out))
    # Delisted later: listed on that date, so examined like any stock (a setup, or the
    # detector's or the floors' reason), never skipped as delisted.
    listed = set(pd.read_csv(past.files["predictions"])["isin"])
    past_skipped = pd.read_csv(past.files["skipped"]).set_index("isin")
    assert "INE009A01021" in listed or not str(
        past_skipped.loc["INE009A01021", "reason"]).startswith(("delisted", "inactive"))
    assert "INE009A01021" in listed | set(past_skipped.index)
    latest = run_batch(BatchConfig(**out))
    skipped = pd.read_csv(latest.files["skipped"]).set_index("isin")
    assert skipped.loc["INE009A01021", "reason"] == f"delisted: on {delisted_on}"
    report = latest.files["report"].read_text()
    # bdate_range trades on NSE holidays: the calendar check lists them as special sessions.
    assert "DATA CHECKS" in report and "on a holiday or weekend" in report
    # Training reads every stock of the master, delisted ones included (no survivor bias).
    assert "INE009A01021" in set(store.load_panel(None, 100_000).isins)


# -- suspect splits -----------------------------------------------------------------------------
def test_split_gaps_are_reported_and_the_suggested_file_applies_them(tmp_path):
    store = MarketStore(tmp_path / "m.duckdb")
    days = pd.bdate_range("2024-01-01", periods=40)
    close = walk(40, 5, 500.0)
    close[20:] /= 2.0  # a 1:1 bonus the files do not record
    path = tmp_path / "prices.csv"
    frame = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "open": close, "high": close * 1.01,
                          "low": close * 0.99, "close": close, "volume": 500.0,
                          "isin": "INE467B01029", "symbol": "TCS"})
    frame.to_csv(path, index=False)
    report = ingest_paths(store, path)
    gaps = report.suspect_gaps
    assert len(gaps) == 1
    row = gaps.iloc[0]
    assert (row["isin"], row.ex_date, row.ratio, bool(row.common)) == (
        "INE467B01029", days[20].date(), 2.0, True)
    assert "INE467B01029" in report.summary() and "--corporate-actions" in report.summary()
    # The suggested file is a corporate actions file: passing it adjusts the series.
    again = ingest_paths(store, path, corporate_actions=report.suspect_file)
    assert len(again.suspect_gaps) == 0
    panel = store.load_panel(None, 40)
    assert np.abs(np.diff(np.log(panel.close[0]))).max() < 0.1
    with store.connect() as con:
        assert len(suspect_gaps(con)) == 0


# -- the calendar -------------------------------------------------------------------------------
def test_missing_thin_and_special_sessions(tmp_path):
    holidays, lo, hi = exchange_holidays()
    assert date(2024, 1, 26) in holidays and date(2024, 8, 15) in holidays  # Republic/Independence
    assert lo.year <= 2005 and hi.year >= 2025
    weekdays = pd.bdate_range("2024-01-01", "2024-03-29")
    sessions = [d for d in weekdays if d.date() not in holidays]
    missing = sessions.pop(30)  # a day the exchange traded but no file was ingested
    counts = np.full(len(sessions), 100)
    counts[40] = 20  # only part of that day's stocks
    sessions.append(pd.Timestamp("2024-03-30"))  # a Saturday session
    counts = np.append(counts, 90)
    check = check_calendar(np.array(sessions, dtype="datetime64[D]"), counts)
    assert check.missing == [missing.date()]
    assert [d for d, _, _ in check.thin] == [sessions[40].date()]
    assert check.special == [date(2024, 3, 30)]
    text = " ".join(check.lines())
    assert "1 MISSING session" in text and str(missing.date()) in text and "THIN" in text


def test_data_info_reports_a_missing_session(tmp_path):
    db = tmp_path / "m.duckdb"
    holidays, _, _ = exchange_holidays()
    days = pd.DatetimeIndex([d for d in pd.bdate_range("2024-01-01", "2024-02-29")
                             if d.date() not in holidays])
    gone = days[10]
    folder = tmp_path / "csv"
    folder.mkdir()
    for i in range(3):
        keep = days[days != gone]
        stock_csv(folder / f"S{i}.csv", keep, walk(len(keep), i))
    assert vcp("data", "ingest", str(folder), "--unlisted", "--db", str(db)).returncode == 0
    proc = vcp("data", "info", "--db", str(db))
    assert proc.returncode == 0, said(proc)
    assert f"1 MISSING session(s) (exchange open, no bars ingested): {gone.date()}" in said(proc)
    assert "3 under local keys" in said(proc)


@pytest.mark.parametrize("name", ["EQUITY_L.csv", "Equity.csv"])
def test_sample_lists_are_what_the_exchanges_publish(name):
    """The fixtures keep the exchanges' quirks: a BOM and spaces (NSE), a trailing comma (BSE)."""
    raw = (FIXTURES / name).read_bytes()
    if name == "EQUITY_L.csv":
        assert raw.startswith(b"\xef\xbb\xbf") and b", SERIES" in raw
    else:
        assert raw.splitlines()[0].endswith(b",")
