"""Ingest of real-format bhavcopies and generic CSVs into a real DuckDB store."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from market.ingest import (
    BSE_LEGACY,
    GENERIC,
    NSE_LEGACY,
    UDIFF,
    IngestError,
    ingest_paths,
)
from market.store import MarketStore

NSE_LEGACY_HEADER = (
    "SYMBOL,SERIES,OPEN,HIGH,LOW,CLOSE,LAST,PREVCLOSE,TOTTRDQTY,TOTTRDVAL,TIMESTAMP,"
    "TOTALTRADES,ISIN,"
)
UDIFF_HEADER = (
    "TradDt,BizDt,Sgmt,Src,FinInstrmTp,FinInstrmId,ISIN,TckrSymb,SctySrs,XpryDt,"
    "FininstrmActlXpryDt,StrkPric,OptnTp,FinInstrmNm,OpnPric,HghPric,LwPric,ClsPric,LastPric,"
    "PrvsClsgPric,UndrlygPric,SttlmPric,OpnIntrst,ChngInOpnIntrst,TtlTradgVol,TtlTrfVal,"
    "TtlNbOfTxsExctd,SsnId,NewBrdLotQty,Rmks,Rsvd1,Rsvd2,Rsvd3,Rsvd4"
)
BSE_LEGACY_HEADER = (
    "SC_CODE,SC_NAME,SC_GROUP,SC_TYPE,OPEN,HIGH,LOW,CLOSE,LAST,PREVCLOSE,NO_TRADES,"
    "NO_OF_SHRS,NET_TURNOV,TDCLOINDI"
)

RELIANCE = "INE002A01018"
TCS = "INE467B01029"
INFY = "INE009A01021"


def nse_row(sym, series, o, h, lo, c, vol, day, isin):
    return f"{sym},{series},{o},{h},{lo},{c},{c},{o},{vol},{vol * c},{day},100,{isin},"


def udiff_row(day, src, fin_id, isin, sym, series, name, o, h, lo, c, vol, tp="STK", sg="CM"):
    return (
        f"{day},{day},{sg},{src},{tp},{fin_id},{isin},{sym},{series},,,,,{name},"
        f"{o},{h},{lo},{c},{c},{o},,{c},,,{vol},{vol * c},100,F1,1,,,,,"
    )


def bse_row(code, name, o, h, lo, c, vol, group="A", tp="Q"):
    return f"{code},{name},{group},{tp},{o},{h},{lo},{c},{c},{o},100,{vol},{vol * c},"


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def store(tmp_path: Path) -> MarketStore:
    return MarketStore(tmp_path / "market.duckdb")


def bars(store: MarketStore) -> pd.DataFrame:
    with store.connect() as con:
        return con.execute("SELECT * FROM bars ORDER BY isin, date").df()


def test_nse_legacy_parses_and_adds_stocks(store, tmp_path):
    f = write(
        tmp_path / "cm01JAN2024bhav.csv",
        NSE_LEGACY_HEADER,
        [
            nse_row("RELIANCE", "EQ", 2500, 2550, 2490, 2540, 1000, "01-JAN-2024", RELIANCE),
            nse_row("TCS", "BE", 3700, 3750, 3690, 3720, 500, "01-JAN-2024", TCS),
            # not equity: skipped, not rejected
            nse_row("GOI2030", "GS", 100, 101, 99, 100, 10, "01-JAN-2024", "IN0020200001"),
            # spaces around fields as in real files
            " INFY , EQ , 1500 , 1510 , 1490 , 1505 , 1505 , 1500 , 700 , 1 , 01-JAN-2024 , 5 , "
            f"{INFY} , ",
        ],
    )
    report = ingest_paths(store, [f])
    assert report.formats == {str(f): NSE_LEGACY}
    assert (report.rows_read, report.rows_written, report.rows_rejected) == (4, 3, 0)
    assert report.rows_skipped == 1 and report.stocks_added == 3
    master = store.master()
    rel = master.lookup(nse_symbol="RELIANCE")
    assert rel.isin == RELIANCE and rel.bse_code is None and rel.sector == "Unknown"
    assert str(rel.listing_date) == "2024-01-01" and rel.active
    assert master.lookup(nse_symbol="infy").isin == INFY
    panel = store.load_panel("2024-01-01", 5)
    i = list(panel.isins).index(RELIANCE)
    assert panel.close[i, -1] == 2540 and panel.volume[i, -1] == 1000
    assert store.get_meta()["source"] == "real"


def test_udiff_nse_and_bse_parse(store, tmp_path):
    nse = write(
        tmp_path / "BhavCopy_NSE_CM_0_0_0_20240701_F_0000.csv",
        UDIFF_HEADER,
        [
            udiff_row(
                "2024-07-01",
                "NSE",
                2885,
                RELIANCE,
                "RELIANCE",
                "EQ",
                "RELIANCE IND",
                3000,
                3050,
                2990,
                3040,
                900,
            ),
            udiff_row(
                "2024-07-01",
                "NSE",
                1,
                "INE000X01010",
                "NIFTYFUT",
                "",
                "fut",
                1,
                2,
                1,
                2,
                9,
                tp="FUT",
                sg="FO",
            ),
            udiff_row(
                "2024-07-01", "NSE", 2, "IN0020200001", "GS2030", "GS", "bond", 100, 101, 99, 100, 9
            ),
        ],
    )
    bse = write(
        tmp_path / "BhavCopy_BSE_CM_0_0_0_20240701_F_0000.csv",
        UDIFF_HEADER,
        [
            udiff_row(
                "2024-07-01",
                "BSE",
                500209,
                INFY,
                "INFY",
                "A",
                "INFOSYS LTD",
                1600,
                1620,
                1590,
                1610,
                300,
            ),
        ],
    )
    report = ingest_paths(store, [tmp_path])  # a directory
    assert set(report.formats.values()) == {UDIFF}
    assert report.rows_written == 2 and report.rows_skipped == 2 and report.stocks_added == 2
    master = store.master()
    rel = master.lookup(nse_symbol="RELIANCE")
    assert rel.name == "RELIANCE IND" and rel.bse_code is None
    infy = master.lookup(bse_code="500209")
    assert infy.isin == INFY and infy.nse_symbol is None and infy.name == "INFOSYS LTD"
    b = bars(store)
    assert sorted(b["exchange"]) == ["BSE", "NSE"]
    assert nse.exists() and bse.exists()


def test_bse_legacy_date_from_file_name_and_isin_linking(store, tmp_path):
    # Seed the master with INFY's BSE code through a UDiFF file.
    seed = write(
        tmp_path / "seed.csv",
        UDIFF_HEADER,
        [
            udiff_row(
                "2024-01-01",
                "BSE",
                500209,
                INFY,
                "INFY",
                "A",
                "INFOSYS",
                1500,
                1510,
                1490,
                1505,
                10,
            )
        ],
    )
    ingest_paths(store, [seed])
    f = write(
        tmp_path / "EQ020124.CSV",
        BSE_LEGACY_HEADER,
        [
            bse_row(500209, "INFOSYS LTD", 1505, 1520, 1500, 1515, 400),  # linked by code
            bse_row(999999, "MYSTERY LTD", 10, 11, 9, 10, 5),  # no ISIN, unknown code
            bse_row(700001, "SOME BOND", 100, 100, 100, 100, 5, tp="D"),  # not equity
        ],
    )
    report = ingest_paths(store, [f], rejects_dir=tmp_path / "rej")
    assert report.formats == {str(f): BSE_LEGACY}
    assert (report.rows_written, report.rows_rejected, report.rows_skipped) == (1, 1, 1)
    rejects = pd.read_csv(report.rejects_files[0], dtype=str)
    assert list(rejects["SC_CODE"]) == ["999999"]
    assert rejects["reason"][0] == "no ISIN and BSE code unknown to the master"
    panel = store.load_panel("2024-01-02", 2)
    i = list(panel.isins).index(INFY)
    assert list(panel.close[i]) == [1505, 1515]
    assert len(store.master()) == 1  # no placeholder stock invented


def test_bse_legacy_with_isin_and_date_columns(store, tmp_path):
    header = BSE_LEGACY_HEADER + ",ISIN_CODE,TRADING_DATE,FILLER2,FILLER3"
    f = write(
        tmp_path / "EQ_ISINCODE_030124.CSV",
        header,
        [bse_row(532540, "TCS LTD", 3700, 3750, 3690, 3720, 50) + f",{TCS},03-Jan-24,,"],
    )
    report = ingest_paths(store, [f])
    assert report.rows_written == 1 and report.stocks_added == 1
    tcs = store.master().lookup(bse_code="532540")
    assert tcs.isin == TCS and tcs.name == "TCS LTD" and str(tcs.listing_date) == "2024-01-03"


def test_generic_csv_symbol_from_file_name_and_column(store, tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    write(
        gen / "RELIANCE.csv",
        "Date,Open,High,Low,Close,Volume,ISIN",
        [f"2024-01-0{d},100,110,90,105,1000,{RELIANCE}" for d in range(1, 4)],
    )
    write(
        gen / "multi.CSV",
        "date,open,high,low,close,volume,symbol",
        [
            "2024-01-04,100,110,90,105,1000,RELIANCE",  # known through the first file
            "2024-01-04,10,11,9,10,5,NOBODY",  # unknown, no isin: rejected
        ],
    )
    report = ingest_paths(store, [gen], rejects_dir=tmp_path / "rej")
    assert set(report.formats.values()) == {GENERIC}
    assert report.rows_written == 4 and report.rows_rejected == 1
    rejects = pd.read_csv(tmp_path / "rej" / "rejects_multi.csv", dtype=str)
    assert rejects["symbol"].tolist() == ["NOBODY"]
    assert "unknown to the master" in rejects["reason"][0]
    rel = store.master().lookup(nse_symbol="RELIANCE")
    assert rel.isin == RELIANCE and str(rel.listing_date) == "2024-01-01"
    assert store.load_panel("2024-01-04", 10).close.shape == (1, 4)


def test_bad_rows_rejected_with_reasons_rest_kept(store, tmp_path):
    day = "01-JAN-2024"
    rows = [
        nse_row("GOOD", "EQ", 100, 110, 90, 105, 10, day, "INE000A01011"),
        nse_row("TEXT", "EQ", "abc", 110, 90, 105, 10, day, "INE000A01029"),
        nse_row("NEG", "EQ", -1, 110, 90, 105, 10, day, "INE000A01037"),
        nse_row("HILO", "EQ", 100, 90, 110, 100, 10, day, "INE000A01045"),
        nse_row("CLOSE", "EQ", 100, 110, 90, 120, 10, day, "INE000A01052"),
        nse_row("OPEN", "EQ", 80, 110, 90, 100, 10, day, "INE000A01060"),
        nse_row("VOL", "EQ", 100, 110, 90, 105, -5, day, "INE000A01078"),
        nse_row("DATE", "EQ", 100, 110, 90, 105, 10, "31-FOO-2024", "INE000A01086"),
        nse_row("ISIN", "EQ", 100, 110, 90, 105, 10, day, "BAD"),
        nse_row("ZERO", "EQ", 0, 110, 90, 105, 10, day, "INE000A01094"),
    ]
    f = write(tmp_path / "cm01JAN2024bhav.csv", NSE_LEGACY_HEADER, rows)
    report = ingest_paths(store, [f])
    assert report.rows_written == 1 and report.rows_rejected == 9
    path = report.rejects_files[0]
    assert path == store.path.parent / "rejects" / "rejects_cm01JAN2024bhav.csv"
    rejects = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("SYMBOL")
    assert "TIMESTAMP" in rejects.columns and "ISIN" in rejects.columns
    expected = {
        "TEXT": "open is not a number",
        "NEG": "price zero or negative",
        "HILO": "high below low",
        "CLOSE": "close outside [low, high]",
        "OPEN": "open outside [low, high]",
        "VOL": "negative volume",
        "DATE": "bad or missing date",
        "ISIN": "malformed ISIN",
        "ZERO": "price zero or negative",
    }
    for sym, reason in expected.items():
        assert reason in rejects.loc[sym, "reason"], (sym, rejects.loc[sym, "reason"])
    assert rejects.loc["TEXT", "OPEN"] == "abc"  # original fields kept
    assert len(store.master()) == 1 and store.master().lookup(nse_symbol="GOOD")


def test_unknown_format_refused_and_nothing_written(store, tmp_path):
    good = write(
        tmp_path / "a_good.csv",
        NSE_LEGACY_HEADER,
        [nse_row("GOOD", "EQ", 100, 110, 90, 105, 10, "01-JAN-2024", "INE000A01011")],
    )
    bad = write(tmp_path / "b_notes.csv", "foo,bar,baz", ["1,2,3"])
    with pytest.raises(IngestError) as err:
        ingest_paths(store, [good, bad])
    message = str(err.value)
    assert "b_notes.csv" in message
    for name in ("NSE legacy", "UDiFF", "BSE legacy", "generic", "date,open,high,low,close"):
        assert name in message
    assert not store.path.exists()  # nothing written, not even an empty store


def test_reingest_changes_nothing(store, tmp_path):
    f = write(
        tmp_path / "cm01JAN2024bhav.csv",
        NSE_LEGACY_HEADER,
        [
            nse_row("RELIANCE", "EQ", 2500, 2550, 2490, 2540, 1000, "01-JAN-2024", RELIANCE),
            nse_row("TCS", "EQ", 3700, 3750, 3690, 3720, 500, "01-JAN-2024", TCS),
        ],
    )
    first = ingest_paths(store, [f])
    before_bars, before_master = bars(store), store.master().frame
    second = ingest_paths(store, [f])
    assert first.rows_written == 2
    assert second.rows_written == 0 and second.stocks_added == 0 and second.rows_read == 2
    pd.testing.assert_frame_equal(bars(store), before_bars)
    pd.testing.assert_frame_equal(store.master().frame, before_master)


def test_dual_listing_one_series_nse_wins(store, tmp_path):
    # BSE first, NSE second, then BSE again: NSE's bar must survive either order.
    bse = write(
        tmp_path / "BhavCopy_BSE_CM_0_0_0_20240102_F_0000.csv",
        UDIFF_HEADER,
        [
            udiff_row(
                "2024-01-01",
                "BSE",
                500325,
                RELIANCE,
                "RELIANCE",
                "A",
                "RELIANCE INDS",
                2501,
                2551,
                2491,
                2541,
                77,
            ),
            udiff_row(
                "2024-01-02",
                "BSE",
                500325,
                RELIANCE,
                "RELIANCE",
                "A",
                "RELIANCE INDS",
                2541,
                2561,
                2531,
                2551,
                88,
            ),
        ],
    )
    nse = write(
        tmp_path / "cm01JAN2024bhav.csv",
        NSE_LEGACY_HEADER,
        [nse_row("RELIANCE", "EQ", 2500, 2550, 2490, 2540, 1000, "01-JAN-2024", RELIANCE)],
    )
    ingest_paths(store, [bse])
    ingest_paths(store, [nse])
    again = ingest_paths(store, [bse])
    assert again.rows_written == 0
    b = bars(store)
    assert len(b) == 2 and set(b["isin"]) == {RELIANCE}
    assert b["exchange"].tolist() == ["NSE", "BSE"]
    panel = store.load_panel("2024-01-02", 5)
    assert panel.isins.tolist() == [RELIANCE]
    assert panel.close[0].tolist() == [2540, 2551] and panel.volume[0, 0] == 1000
    master = store.master()
    assert len(master) == 1
    stock = master.lookup(nse_symbol="RELIANCE", bse_code="500325")
    assert stock.isin == RELIANCE and stock.nse_symbol == "RELIANCE"
    assert stock.bse_code == "500325" and stock.name == "RELIANCE INDS"


def test_split_adjustment(store, tmp_path):
    days = pd.bdate_range("2024-01-01", periods=6)
    closes = [1000, 1010, 1020, 510, 515, 520]  # 2-for-1 split, ex-date = 4th session
    rows = [
        f"{d:%Y-%m-%d},{c},{c + 5},{c - 5},{c},{100 if i < 3 else 200}"
        for i, (d, c) in enumerate(zip(days, closes, strict=True))
    ]
    prices = write(
        tmp_path / "TCS.csv", "date,open,high,low,close,volume,isin", [r + f",{TCS}" for r in rows]
    )
    actions = write(
        tmp_path / "actions.csv",
        "isin,ex_date,ratio",
        [f"{TCS},{days[3]:%Y-%m-%d},2", "BADISIN,2024-01-01,2", f"{TCS},2024-01-02,-1"],
    )
    report = ingest_paths(store, [prices], corporate_actions=actions, rejects_dir=tmp_path / "rej")
    assert report.formats[str(actions)] == "corporate_actions"
    assert report.files[-1].rows_written == 1 and report.files[-1].rows_rejected == 2
    panel = store.load_panel(days[-1].date(), 10)
    np.testing.assert_allclose(panel.close[0], [500, 505, 510, 510, 515, 520])
    np.testing.assert_allclose(panel.volume[0], [200] * 6)
    np.testing.assert_allclose(panel.high[0, :3], [502.5, 507.5, 512.5])
    # As of a date before the ex-date, prices are as traded.
    early = store.load_panel(days[2].date(), 10)
    np.testing.assert_allclose(early.close[0], [1000, 1010, 1020])
    # Re-ingesting the actions changes nothing.
    assert ingest_paths(store, [], corporate_actions=actions).files[0].rows_written == 0


def test_zip_archive(store, tmp_path):
    archive = tmp_path / "cm01JAN2024bhav.csv.zip"
    body = "\n".join(
        [
            NSE_LEGACY_HEADER,
            nse_row("RELIANCE", "EQ", 2500, 2550, 2490, 2540, 1000, "01-JAN-2024", RELIANCE),
        ]
    )
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cm01JAN2024bhav.csv", body)
    report = ingest_paths(store, [archive])
    assert report.rows_written == 1 and report.files[0].format == NSE_LEGACY


def test_simulated_store_refused(store, tmp_path):
    with store.connect(read_only=False) as con:
        MarketStore.set_meta(con, source="simulated")
    f = write(
        tmp_path / "cm01JAN2024bhav.csv",
        NSE_LEGACY_HEADER,
        [nse_row("RELIANCE", "EQ", 2500, 2550, 2490, 2540, 1000, "01-JAN-2024", RELIANCE)],
    )
    with pytest.raises(IngestError, match="VCP_MARKET_DB"):
        ingest_paths(store, [f])
    assert bars(store).empty


def test_progress_and_rows_with_trailing_comma_but_header_without(store, tmp_path):
    f = write(
        tmp_path / "cm02JAN2024bhav.csv",
        NSE_LEGACY_HEADER.rstrip(","),
        [nse_row("RELIANCE", "EQ", 2500, 2550, 2490, 2540, 1000, "02-JAN-2024", RELIANCE)],
    )
    calls = []
    report = ingest_paths(store, f, progress=lambda message, advance: calls.append(message))
    assert report.rows_written == 1 and report.rows_rejected == 0
    assert calls == ["1/1 cm02JAN2024bhav.csv: 1 rows"]
    assert store.master().lookup(nse_symbol="RELIANCE").isin == RELIANCE
