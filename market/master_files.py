"""Load the exchanges' lists of securities into the stock master (`vcp data master FILE...`).

Formats (detected from the header; names matched case-insensitively with spaces, underscores
and a byte-order mark ignored, so ``NAME_OF_COMPANY`` and `` NAME OF COMPANY`` are one column):

``nse_securities``  NSE's ``EQUITY_L.csv`` (and ``SME_EQUITY_L.csv``): ``SYMBOL, NAME OF COMPANY,
    SERIES, DATE OF LISTING, PAID UP VALUE, MARKET LOT, ISIN NUMBER, FACE VALUE``. Only equity
    series (``EQ BE BZ SM ST``) are kept; the list holds listed securities only, so every row
    is a listed stock.
``bse_scrips``      BSE's list of scrips: ``Security Code, Issuer Name, Security Id, Security
    Name, Status, Group, Face Value, ISIN No, Industry, Instrument`` (older) or with ``Sector
    Name, Industry New Name, Igroup Name, ISubgroup Name`` (newer). Only ``Instrument =
    Equity`` rows (all rows when the column is absent); ``Status`` Active / Suspended /
    Delisted sets the stock's status.

Optional columns in either: ``DATE OF LISTING``/``LISTING DATE``, ``DATE OF DELISTING``/
``DELISTING DATE``, ``DATE OF SUSPENSION``/``SUSPENSION DATE``, ``SECTOR``/``SECTOR NAME``,
``INDUSTRY``/``INDUSTRY NEW NAME``. Dates may be ``29-JUN-2007``, ``2007-06-29``,
``29-06-2007``, ``29/06/2007``, ``29-Jun-07`` or ``Jun 29, 2007``, mixed within a file; a date
that does not parse is left empty and counted.

Rows without a well-formed ISIN, without a symbol (NSE) or a 6-digit code (BSE), repeating an
ISIN, symbol or code already seen in the file are rejected to ``rejects_master_<file>.csv``
with a reason.

Merging: all files of one call are merged by ISIN, so a stock on both exchanges is one row with
its NSE symbol and BSE code. It is listed (``active``) when any list of the call shows it
listed; otherwise its status and dates come from BSE's list. A BSE "Delisted"/"Suspended" row
does not deactivate a stock that has an NSE symbol unless NSE's list was part of the same call
(NSE may still list it). Names, sector, industry and dates from the lists replace what ingest
guessed (ingest names a new stock by its symbol and its sector "Unknown"); a symbol or code now
held by another ISIN is taken from the stock that held it. Stocks registered under local keys
(``LOCAL:NSE:<symbol>``, `data ingest --unlisted`) whose symbol or code the lists give an ISIN
are re-keyed: their bars move to the ISIN. Everything is written in one transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from market.ingest import (
    NSE_EQUITY_SERIES,
    UNKNOWN_SECTOR,
    IngestError,
    _decode,
    _read_frame,
    _refuse_simulated,
    _write_rejects,
)
from market.master import ISIN_RE, MASTER_COLUMNS, STATUS_COLUMNS
from market.store import MarketStore

NSE_LIST = "nse_securities"
BSE_LIST = "bse_scrips"

ALIASES: dict[str, tuple[str, ...]] = {
    "isin": ("ISIN NUMBER", "ISIN NO", "ISIN CODE", "ISIN"),
    "symbol": ("SYMBOL",),
    "code": ("SECURITY CODE", "SCRIP CODE", "SC CODE"),
    "name": ("NAME OF COMPANY", "COMPANY NAME", "ISSUER NAME", "SECURITY NAME"),
    "series": ("SERIES",),
    "instrument": ("INSTRUMENT",),
    "status": ("STATUS",),
    "sector": ("SECTOR NAME", "SECTOR"),
    "industry": ("INDUSTRY NEW NAME", "INDUSTRY", "BASIC INDUSTRY"),
    "listing_date": ("DATE OF LISTING", "LISTING DATE"),
    "delisting_date": ("DATE OF DELISTING", "DELISTING DATE", "DELISTED ON"),
    "suspension_date": ("DATE OF SUSPENSION", "SUSPENSION DATE", "SUSPENDED ON"),
}
DATE_FIELDS = ("listing_date", "delisting_date", "suspension_date")
MASTER_DATE_FORMATS = (
    "%d-%b-%Y", "%Y-%m-%d", "%d-%m-%Y", "%d/%m/%Y", "%d-%b-%y", "%b %d, %Y", "%d %b %Y",
)
EXPECTED = (
    "NSE EQUITY_L.csv (SYMBOL, NAME OF COMPANY, SERIES, DATE OF LISTING, ..., ISIN NUMBER, ...) "
    "or BSE's list of scrips (Security Code, Issuer Name, Security Id, ..., Status, ..., "
    "ISIN No, Industry, Instrument)"
)


@dataclass
class MasterFileReport:
    name: str
    format: str
    rows_read: int = 0
    rows_skipped: int = 0  # not equity (other series or instruments)
    rows_rejected: int = 0
    stocks: int = 0  # distinct ISINs kept from this file
    bad_dates: int = 0
    rejects_file: Path | None = None


@dataclass
class MasterReport:
    files: list[MasterFileReport] = field(default_factory=list)
    added: int = 0
    updated: int = 0
    rekeyed: int = 0  # local keys moved to their ISIN
    with_sector: int = 0

    def summary(self) -> str:
        lines = [
            f"{f.name} ({f.format}): {f.rows_read} rows, {f.stocks} stocks, "
            f"{f.rows_skipped} skipped (not equity), {f.rows_rejected} rejected"
            + (f", {f.bad_dates} unreadable date(s) left empty" if f.bad_dates else "")
            for f in self.files
        ]
        lines.append(f"stock master: {self.added} stock(s) added, {self.updated} updated, "
                     f"{self.with_sector} with a sector")
        if self.rekeyed:
            lines.append(f"{self.rekeyed} stock(s) registered under local keys (--unlisted) "
                         "now have their ISIN: their bars were moved to it")
        lines += [f"rejected rows: {f.rejects_file}" for f in self.files if f.rejects_file]
        return "\n".join(lines)


def _norm(header: str) -> str:
    return re.sub(r"[\s_]+", " ", header.replace("\ufeff", "").strip().strip('"')).strip().upper()


def _columns(frame: pd.DataFrame) -> dict[str, str]:
    """Our field name -> the frame's column, for the fields the file has."""
    by_norm = {_norm(c): c for c in frame.columns}
    found = {}
    for key, names in ALIASES.items():
        for name in names:
            if name in by_norm:
                found[key] = by_norm[name]
                break
    return found


def detect_master_format(frame: pd.DataFrame) -> str | None:
    cols = _columns(frame)
    if "isin" in cols and "symbol" in cols:
        return NSE_LIST
    if "isin" in cols and "code" in cols:
        return BSE_LIST
    return None


def parse_dates_any(text: pd.Series) -> pd.Series:
    """Dates in any of MASTER_DATE_FORMATS, value by value (files mix them); NaT otherwise."""
    text = text.astype(str).str.strip()
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    for fmt in MASTER_DATE_FORMATS:
        todo = out.isna() & (text != "")
        if not todo.any():
            break
        out[todo] = pd.to_datetime(text[todo], format=fmt, errors="coerce")
    return out


def _parse(frame: pd.DataFrame, fmt: str, report: MasterFileReport):
    """Rows of one list in the master's shape, the reject reason per row and the keep mask."""
    cols = _columns(frame)

    def col(key: str) -> pd.Series:
        if key not in cols:
            return pd.Series("", index=frame.index, dtype=object)
        return frame[cols[key]].astype(str).str.strip()

    n = len(frame)
    isin = col("isin").str.upper()
    if fmt == NSE_LIST:
        keep = col("series").str.upper().isin(NSE_EQUITY_SERIES) | ("series" not in cols)
        symbol = col("symbol").str.upper()
        code = pd.Series("", index=frame.index, dtype=object)
        listed = pd.Series(True, index=frame.index)
    else:
        instrument = col("instrument").str.upper()
        keep = (instrument == "") | (instrument == "EQUITY")
        symbol = pd.Series("", index=frame.index, dtype=object)
        raw = col("code").str.replace(r"\.0$", "", regex=True)
        code = raw.where(~raw.str.fullmatch(r"\d{1,6}"), raw.str.zfill(6))
        status = col("status").str.upper()
        listed = ~status.isin({"DELISTED", "SUSPENDED"})
    dates = {k: parse_dates_any(col(k)) for k in DATE_FIELDS}
    # A row that gives a delisting or suspension date is not a listed stock, in either list.
    listed = listed & dates["delisting_date"].isna() & dates["suspension_date"].isna()
    report.bad_dates = int(sum(((col(k) != "") & dates[k].isna()).sum() for k in DATE_FIELDS))
    industry = col("industry")
    sector = col("sector").where(col("sector") != "", industry)
    out = pd.DataFrame({
        "isin": isin, "nse_symbol": symbol, "bse_code": code, "name": col("name"),
        "sector": sector, "industry": industry, "listed": listed.to_numpy(),
        "exchange": "NSE" if fmt == NSE_LIST else "BSE",
        **{k: v for k, v in dates.items()},
    })

    reasons = np.full(n, "", dtype=object)

    def add(mask, text: str) -> None:
        mask = np.asarray(mask, dtype=bool) & keep.to_numpy() & (reasons == "")
        reasons[mask] = text

    add(isin == "", "no ISIN")
    add(~isin.str.fullmatch(ISIN_RE.pattern), "malformed ISIN (IN, 9 letters or digits, a digit)")
    if fmt == NSE_LIST:
        add(symbol == "", "no SYMBOL")
    else:
        add(~code.str.fullmatch(r"\d{6}"), "Security Code is not a BSE scrip code (6 digits)")
    for key, label in (("isin", "an ISIN"), ("nse_symbol", "a symbol"), ("bse_code", "a code")):
        values = out[key]
        ok = keep.to_numpy() & (reasons == "") & (values != "").to_numpy()
        dup = np.zeros(n, dtype=bool)
        dup[ok] = values[ok].duplicated().to_numpy()
        add(dup, f"repeats {label} of an earlier row in this file (the first is kept)")
    return out, reasons, keep.to_numpy()


def _merge(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per ISIN over all lists of the call (NSE's name first)."""
    rows = pd.concat(parts, ignore_index=True)
    rows = rows.sort_values("exchange", key=lambda s: s != "NSE", kind="stable")
    for c in ("nse_symbol", "bse_code", "name", "sector", "industry"):
        rows[c] = rows[c].where(rows[c] != "", None)
    g = rows.groupby("isin", sort=True)
    merged = pd.DataFrame({
        "nse_symbol": g["nse_symbol"].first(),
        "bse_code": g["bse_code"].first(),
        "name": g["name"].first(),
        "sector": g["sector"].first(),
        "industry": g["industry"].first(),
        "listing_date": g["listing_date"].min(),
        "delisting_date": g["delisting_date"].max(),
        "suspension_date": g["suspension_date"].max(),
        "active": g["listed"].any(),
    }).reset_index()
    # A listed stock is not delisted or suspended, whatever another exchange's list says.
    for c in ("delisting_date", "suspension_date"):
        merged[c] = merged[c].where(~merged["active"])
    for c in ("listing_date", *STATUS_COLUMNS[1:]):
        merged[c] = pd.to_datetime(merged[c]).dt.date
    return merged


def import_master(
    store: MarketStore, paths: list[Path] | list[str], rejects_dir: Path | None = None
) -> MasterReport:
    """Import exchange lists (see the module docstring); raises IngestError on a bad file."""
    rejects_dir = Path(rejects_dir) if rejects_dir is not None else store.path.parent / "rejects"
    frames = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise IngestError(f"{path} does not exist")
        frame = _read_frame(_decode(path.read_bytes()))
        fmt = detect_master_format(frame)
        if fmt is None:
            raise IngestError(
                f"{path}: not a list of securities (header "
                f"{','.join(map(str, frame.columns))[:200]!r}); nothing was imported. "
                f"Expected {EXPECTED}"
            )
        frames.append((path, fmt, frame))

    report = MasterReport()
    parts = []
    for path, fmt, frame in frames:
        file_report = MasterFileReport(name=str(path), format=fmt, rows_read=len(frame))
        rows, reasons, keep = _parse(frame, fmt, file_report)
        good = keep & (reasons == "")
        rejected = keep & (reasons != "")
        file_report.rows_skipped = int((~keep).sum())
        file_report.rows_rejected = int(rejected.sum())
        file_report.stocks = int(rows.loc[good, "isin"].nunique())
        if rejected.any():
            file_report.rejects_file = rejects_dir / f"rejects_master_{path.stem}.csv"
            _write_rejects(frame, reasons, rejected, file_report.rejects_file)
        parts.append(rows.loc[good])
        report.files.append(file_report)
    merged = _merge(parts) if any(len(p) for p in parts) else None
    if merged is None:
        raise IngestError(
            "no stock could be imported: every row was rejected or is not equity; see "
            + ", ".join(str(f.rejects_file) for f in report.files if f.rejects_file)
        )
    had_nse = any(fmt == NSE_LIST for _, fmt, _ in frames)
    with store.connect(read_only=False) as con:
        _refuse_simulated(con, store)
        con.begin()
        try:
            report.added, report.updated = _write(con, merged, had_nse)
            report.rekeyed = MarketStore.rekey_local_stocks(con)
            MarketStore.set_meta(con, source="real")
            con.commit()
        except Exception:
            con.rollback()
            raise
        row = con.execute(
            "SELECT count(*) FROM stocks WHERE sector IS NOT NULL AND sector <> ?",
            [UNKNOWN_SECTOR],
        ).fetchone()
        report.with_sector = int(row[0]) if row else 0
    return report


def _write(con, merged: pd.DataFrame, had_nse: bool) -> tuple[int, int]:
    """Upsert the merged lists; a symbol or code moves from any other ISIN that held it."""
    if not had_nse:
        # BSE alone does not delist a stock that has an NSE symbol: it keeps its status.
        keep = con.execute(
            "SELECT isin, active, delisting_date, suspension_date FROM stocks "
            "WHERE nse_symbol IS NOT NULL AND isin IN (SELECT unnest(?))",
            [merged.loc[~merged["active"] & merged["nse_symbol"].isna(), "isin"].tolist()],
        ).df().set_index("isin")
        if len(keep):
            rows = merged["isin"].isin(keep.index).to_numpy()
            for c in ("active", "delisting_date", "suspension_date"):
                merged.loc[rows, c] = keep.loc[merged.loc[rows, "isin"], c].to_numpy()
    con.register("new_master", merged)
    added = con.execute(
        "SELECT count(*) FROM new_master n ANTI JOIN stocks s USING (isin)"
    ).fetchone()[0]
    for col in ("nse_symbol", "bse_code"):
        con.execute(f"""
            UPDATE stocks SET {col} = NULL WHERE isin NOT LIKE 'LOCAL:%' AND {col} IN (
                SELECT n.{col} FROM new_master n WHERE n.{col} IS NOT NULL
                AND n.isin <> stocks.isin)
        """)
    con.execute(f"""
        INSERT INTO stocks ({', '.join(MASTER_COLUMNS + STATUS_COLUMNS)})
        SELECT isin, nse_symbol, bse_code, COALESCE(name, nse_symbol, bse_code),
               COALESCE(sector, '{UNKNOWN_SECTOR}'), listing_date, active,
               industry, delisting_date, suspension_date
        FROM new_master
        ON CONFLICT (isin) DO UPDATE SET
            nse_symbol = COALESCE(excluded.nse_symbol, stocks.nse_symbol),
            bse_code = COALESCE(excluded.bse_code, stocks.bse_code),
            name = COALESCE(excluded.name, stocks.name),
            sector = CASE WHEN excluded.sector = '{UNKNOWN_SECTOR}' THEN stocks.sector
                          ELSE excluded.sector END,
            industry = COALESCE(excluded.industry, stocks.industry),
            listing_date = COALESCE(excluded.listing_date, stocks.listing_date),
            active = excluded.active,
            delisting_date = excluded.delisting_date,
            suspension_date = excluded.suspension_date
    """)
    con.unregister("new_master")
    return int(added), len(merged) - int(added)
