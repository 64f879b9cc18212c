"""Ingest real end-of-day data (NSE/BSE bhavcopies, generic OHLCV CSVs) into the market store.

Entry point: :func:`ingest_paths`. It takes files, directories (searched recursively for
``*.csv``/``*.CSV`` and ``*.zip`` archives holding CSVs) or a mix, detects each file's format
from its header, validates every row with vectorized pandas code and writes the good rows.

Formats (detected by header, column names matched case-insensitively, spaces trimmed)
-------------------------------------------------------------------------------------
``nse_legacy``  NSE CM bhavcopy before July 2024:
    ``SYMBOL,SERIES,OPEN,HIGH,LOW,CLOSE,LAST,PREVCLOSE,TOTTRDQTY,TOTTRDVAL,TIMESTAMP,
    TOTALTRADES,ISIN`` (a trailing empty column is ignored). TIMESTAMP is ``01-JAN-2024``.
``udiff``       NSE and BSE UDiFF bhavcopy (from July 2024): ``TradDt,BizDt,Sgmt,Src,
    FinInstrmTp,FinInstrmId,ISIN,TckrSymb,SctySrs,...,OpnPric,HghPric,LwPric,ClsPric,...,
    TtlTradgVol,...``. ``Src`` (NSE/BSE) gives the exchange of each row; on BSE rows
    ``FinInstrmId`` is the 6-digit scrip code. TradDt is ``YYYY-MM-DD``.
``bse_legacy``  BSE equity bhavcopy before July 2024: ``SC_CODE,SC_NAME,SC_GROUP,SC_TYPE,OPEN,
    HIGH,LOW,CLOSE,LAST,PREVCLOSE,NO_TRADES,NO_OF_SHRS,NET_TURNOV,TDCLOINDI`` with optional
    ``ISIN_CODE`` and ``TRADING_DATE``. Without TRADING_DATE the date comes from the file
    name's last 6-digit group read as DDMMYY (``EQ010124.CSV`` is 2024-01-01).
``generic``     one or more stocks: ``date,open,high,low,close,volume`` plus optional ``symbol``
    and ``isin`` columns. Without a ``symbol`` column the symbol is the file name stem
    (``RELIANCE.csv``; a ``.NS``/``.BO`` suffix as in ``TCS.NS.csv`` is dropped). A symbol of
    6 digits is a BSE code (bar exchange BSE), anything else an NSE symbol (exchange NSE).
    Dates: ``YYYY-MM-DD`` or, when that fails, ``DD-MM-YYYY``, ``DD/MM/YYYY``,
    ``DD-Mon-YYYY``, ``YYYYMMDD`` (the one format parsing most rows is used for the file).
``corporate_actions``  ``isin,ex_date,ratio`` (see below). Also accepted through the
    ``corporate_actions`` argument; either way actions are applied after all bar files.

Which rows are kept
-------------------
* Only cash-market equity. NSE series kept: ``EQ`` (rolling), ``BE`` and ``BZ``
  (trade-for-trade), ``SM`` and ``ST`` (SME platform), see ``NSE_EQUITY_SERIES``. Other series
  (bonds, government securities, block deals, REITs ...) are *skipped*, not rejected.
  UDiFF: ``Sgmt = CM`` and ``FinInstrmTp = STK``; for NSE rows also the series above; for BSE
  rows every group (``SctySrs`` holds the BSE group A/B/T/X/Z/M...). BSE legacy: ``SC_TYPE = Q``.
* A row is *rejected* (written to ``rejects_{source file name}.csv`` with its original fields
  and a ``reason`` column; the other rows of the file are kept) when a price or the volume is
  not a number, a price is zero or negative, high < low, open or close lies outside
  [low, high], the volume is negative, the date does not parse, the ISIN is malformed, or it
  repeats an earlier row for the same stock, date and exchange in the same file.
* Identity: every series is keyed by ISIN. A BSE legacy row without ISIN is linked through its
  scrip code to a stock already in the master (or added earlier in the same run); otherwise
  it is rejected with reason ``no ISIN and BSE code unknown to the master`` -- no placeholder
  key is ever invented. A generic row without ISIN must name a symbol the master knows
  (``vcp data master`` loads the exchanges' lists), otherwise it is rejected (``symbol ...
  unknown to the master and no isin column``; the report lists those symbols) -- unless
  ``unlisted`` is set: then the stock is registered under the local key ``LOCAL:NSE:<symbol>``
  (``LOCAL:BSE:<code>``), which cannot pass for an ISIN and stays the same on re-ingest. A
  bhavcopy or master list that later brings the symbol's ISIN moves the stock to it.
* A stock listed on both exchanges is ONE series; where both exchanges have a bar for a day
  the NSE bar is kept, whichever file is ingested first.

The master
----------
A stock seen for the first time is added: ISIN, ``nse_symbol`` from NSE rows, ``bse_code``
from BSE rows, name from ``SC_NAME``/``FinInstrmNm`` (the symbol when the file has no name),
sector ``Unknown``, ``listing_date`` the first date seen, active. A known stock gains a
missing identifier; an identifier that differs (a renamed symbol) replaces the stored one only
when the file is at least as recent as the stock's latest stored bar. ``listing_date`` moves
earlier when older files are ingested. Name, sector and ``active`` of known stocks are kept.

Suspect splits
--------------
After the files, overnight gaps of 40% or more dated in this run that no stored action
explains are listed (``market.actions``) and written to ``suspect_corporate_actions.csv``
beside the rejects, in the corporate actions format.

Corporate actions
-----------------
``isin,ex_date,ratio`` where ``ratio`` = shares after / shares before: a 2-for-1 split is 2,
a 1:1 bonus is 2, a 1-for-10 consolidation is 0.1. Bars are stored as traded (unadjusted);
``MarketStore.load_panel(as_of)`` divides prices before each ex-date (up to ``as_of``) by the
ratio and multiplies volume by it, so a panel shows a continuous series. Rows with a malformed
ISIN, an ISIN unknown to the master, a bad date or a ratio that is not a positive finite number
are rejected to ``rejects_{file}.csv`` like bad bars.

Transactions, re-ingest, sources
--------------------------------
Each file is written in one transaction (bars, new master rows, metadata). Re-ingesting a
file rewrites nothing and reports 0 rows written. Every file's format is detected before
anything is written: a file of unknown format (or a BSE legacy file with no date) stops the
whole call with :class:`IngestError` and nothing is written. A store created by the demo
simulator is refused: real and simulated data never share a store file (use another
``VCP_MARKET_DB`` path). Metadata ``source`` is set to ``real``.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from market.actions import suspect_gaps
from market.master import ISIN_RE, LOCAL_KEY_RE, MASTER_COLUMNS, is_local_key, local_key
from market.store import PRICE_FIELDS, MarketStore

NSE_EQUITY_SERIES = frozenset({"EQ", "BE", "BZ", "SM", "ST"})
BSE_EQUITY_TYPE = "Q"
UNKNOWN_SECTOR = "Unknown"

NSE_LEGACY = "nse_legacy"
UDIFF = "udiff"
BSE_LEGACY = "bse_legacy"
GENERIC = "generic"
CORPORATE_ACTIONS = "corporate_actions"

# Columns (upper case) whose presence identifies a format; checked in this order.
FORMAT_SIGNATURES: dict[str, frozenset[str]] = {
    NSE_LEGACY: frozenset(
        {"SYMBOL", "SERIES", "OPEN", "HIGH", "LOW", "CLOSE", "TOTTRDQTY", "TIMESTAMP", "ISIN"}
    ),
    UDIFF: frozenset(
        {
            "TRADDT",
            "SGMT",
            "SRC",
            "FININSTRMTP",
            "FININSTRMID",
            "ISIN",
            "TCKRSYMB",
            "SCTYSRS",
            "OPNPRIC",
            "HGHPRIC",
            "LWPRIC",
            "CLSPRIC",
            "TTLTRADGVOL",
        }
    ),
    BSE_LEGACY: frozenset(
        {"SC_CODE", "SC_NAME", "SC_TYPE", "OPEN", "HIGH", "LOW", "CLOSE", "NO_OF_SHRS"}
    ),
    CORPORATE_ACTIONS: frozenset({"ISIN", "EX_DATE", "RATIO"}),
    GENERIC: frozenset({"DATE", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME"}),
}

FORMATS_EXPECTED = (
    "NSE legacy bhavcopy (SYMBOL,SERIES,OPEN,HIGH,LOW,CLOSE,...,TOTTRDQTY,...,TIMESTAMP,...,ISIN); "
    "NSE/BSE UDiFF bhavcopy (TradDt,BizDt,Sgmt,Src,FinInstrmTp,FinInstrmId,ISIN,TckrSymb,"
    "SctySrs,...,OpnPric,HghPric,LwPric,ClsPric,...,TtlTradgVol,...); "
    "BSE legacy bhavcopy (SC_CODE,SC_NAME,SC_GROUP,SC_TYPE,OPEN,HIGH,LOW,CLOSE,...,"
    "NO_OF_SHRS,...); "
    "generic OHLCV CSV (date,open,high,low,close,volume[,symbol][,isin]); "
    "corporate actions CSV (isin,ex_date,ratio)"
)

GENERIC_DATE_FORMATS = ("%Y-%m-%d", "%d-%m-%Y", "%d/%m/%Y", "%d-%b-%Y", "%Y%m%d")
BSE_DATE_FORMATS = ("%d-%b-%y", "%d-%b-%Y", "%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%d-%m-%y")

# progress(message, advance): the same callback shape as vcp.cli.progress_bar's `update`.
Progress = Callable[[str, float], None]


class IngestError(ValueError):
    """A file cannot be ingested at all; the message names the file and what was expected."""


# -- report ----------------------------------------------------------------------------------
@dataclass
class FileReport:
    name: str
    format: str
    rows_read: int = 0
    rows_skipped: int = 0  # not cash-market equity (other series / segments / instruments)
    rows_rejected: int = 0
    rows_written: int = 0  # bars inserted or changed
    rows_accepted: int = 0  # good rows, written or already stored
    stocks_added: int = 0
    rejects_file: Path | None = None
    isins: set[str] = field(default_factory=set, repr=False)  # stocks with accepted bars
    first_date: date | None = None  # of the accepted bars
    unknown_symbols: list[str] = field(default_factory=list)  # generic files, no ISIN
    local_keys_added: int = 0  # --unlisted


@dataclass
class IngestReport:
    files: list[FileReport] = field(default_factory=list)
    suspect_gaps: pd.DataFrame | None = None  # see market.actions.suspect_gaps
    suspect_file: Path | None = None  # the same, as a corporate actions file

    def _total(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files)

    @property
    def rows_read(self) -> int:
        return self._total("rows_read")

    @property
    def rows_skipped(self) -> int:
        return self._total("rows_skipped")

    @property
    def rows_written(self) -> int:
        return self._total("rows_written")

    @property
    def rows_rejected(self) -> int:
        return self._total("rows_rejected")

    @property
    def stocks_added(self) -> int:
        return self._total("stocks_added")

    @property
    def rows_accepted(self) -> int:
        return self._total("rows_accepted")

    @property
    def unknown_symbols(self) -> list[str]:
        return sorted({s for f in self.files for s in f.unknown_symbols})

    @property
    def nothing_accepted(self) -> bool:
        """Rows were read but none was good: the run changed nothing and should fail."""
        return self.rows_read > 0 and self.rows_accepted == 0

    @property
    def formats(self) -> dict[str, str]:
        return {f.name: f.format for f in self.files}

    @property
    def rejects_files(self) -> list[Path]:
        return [f.rejects_file for f in self.files if f.rejects_file is not None]

    def summary(self) -> str:
        lines = [
            f"{len(self.files)} file(s): {self.rows_read} rows read, {self.rows_written} written, "
            f"{self.rows_rejected} rejected, {self.rows_skipped} skipped (not equity), "
            f"{self.stocks_added} stock(s) added"
        ]
        local = sum(f.local_keys_added for f in self.files)
        if local:
            lines.append(f"{local} stock(s) registered under local keys LOCAL:NSE:<symbol> / "
                         "LOCAL:BSE:<code> (not ISINs; `data master` with the exchange lists "
                         "moves them to their ISINs)")
        unknown = self.unknown_symbols
        if unknown:
            shown = ", ".join(unknown[:20]) + (f" and {len(unknown) - 20} more"
                                                if len(unknown) > 20 else "")
            lines.append(
                f"WARNING: {len(unknown)} symbol(s) unknown to the stock master and no isin "
                f"column, their rows were rejected: {shown}. Fix: load the exchanges' lists "
                "first (`vcp data master EQUITY_L.csv <BSE list of scrips>.csv`), add an isin "
                "column, or ingest again with --unlisted to register them under local keys."
            )
        if self.suspect_gaps is not None and len(self.suspect_gaps):
            lines.append(
                f"WARNING: {len(self.suspect_gaps)} price gap(s) look like splits or bonuses "
                f"without a corporate action (isin, date, implied ratio): "
                + "; ".join(f"{isin} {day} {ratio:g}" for isin, day, ratio in self.suspect_gaps[
                    ["isin", "ex_date", "ratio"]].head(10).itertuples(index=False))
                + (" ..." if len(self.suspect_gaps) > 10 else "")
                + f". Check them, then pass the file with --corporate-actions: "
                f"{self.suspect_file}"
            )
        lines += [f"rejected rows: {p}" for p in self.rejects_files]
        return "\n".join(lines)


# -- sources ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    path: Path
    member: str | None = None  # name inside a zip archive

    @property
    def name(self) -> str:
        return Path(self.member).name if self.member else self.path.name

    @property
    def label(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    def read_bytes(self, limit: int = -1) -> bytes:
        if self.member is None:
            with self.path.open("rb") as fh:
                return fh.read(limit)
        with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as fh:
            return fh.read(limit)


def _is_csv(name: str) -> bool:
    return name.lower().endswith(".csv")


def _expand(paths: Iterable[Path | str]) -> list[_Source]:
    sources: list[_Source] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and (_is_csv(p.name) or p.name.lower().endswith(".zip"))
            )
        elif path.is_file():
            files = [path]
        else:
            raise IngestError(f"{path} does not exist")
        for f in files:
            if f.name.lower().endswith(".zip"):
                try:
                    with zipfile.ZipFile(f) as zf:
                        members = sorted(
                            m.filename
                            for m in zf.infolist()
                            if not m.is_dir() and _is_csv(m.filename)
                        )
                except zipfile.BadZipFile as exc:
                    raise IngestError(f"{f} is not a readable zip archive: {exc}") from None
                if not members:
                    raise IngestError(f"{f} holds no CSV file; expected one of: {FORMATS_EXPECTED}")
                sources += [_Source(f, m) for m in members]
            else:
                sources.append(_Source(f))
    # The same file named twice (a file and its directory) is read once.
    return list(dict.fromkeys(sources))


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _header(text: str) -> list[str]:
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    return [c.strip().strip('"').strip() for c in first.rstrip("\r").split(",")]


def detect_format(columns: Iterable[str]) -> str | None:
    """The format whose signature columns are all present, or None."""
    upper = {c.strip().upper() for c in columns}
    for fmt, needed in FORMAT_SIGNATURES.items():
        if needed <= upper:
            return fmt
    return None


def _file_date_ddmmyy(name: str) -> pd.Timestamp | None:
    groups = re.findall(r"(?<!\d)(\d{6})(?!\d)", Path(name).stem)
    if not groups:
        return None
    ts = pd.to_datetime(groups[-1], format="%d%m%y", errors="coerce")
    return None if pd.isna(ts) else ts


def _read_frame(text: str) -> pd.DataFrame:
    with warnings.catch_warnings():
        # Rows with one more (empty) trailing field than the header: the extra one is dropped.
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            index_col=False,
        )
    frame.columns = [str(c).strip() for c in frame.columns]
    # Drop trailing unnamed empty columns (real bhavcopies end lines with a comma).
    drop = [
        c
        for c in frame.columns
        if (c == "" or c.startswith("Unnamed:")) and (frame[c].str.strip() == "").all()
    ]
    frame = frame.drop(columns=drop)
    # Values are stripped when a column is used (see _col): most columns never are.
    return frame.reset_index(drop=True)


# -- parsing to a common shape ---------------------------------------------------------------
@dataclass
class _Parsed:
    """Rows of one file in a common shape, aligned with the raw frame's index."""

    keep: np.ndarray  # bool: cash-market equity rows (others are skipped)
    date: pd.Series  # datetime64, NaT where the date does not parse
    prices: dict[str, pd.Series]  # raw text of open, high, low, close, volume
    exchange: pd.Series  # 'NSE' / 'BSE' / '' (unknown)
    isin: pd.Series  # '' when absent
    nse_symbol: pd.Series  # '' when not an NSE row
    bse_code: pd.Series  # '' when not a BSE row
    name: pd.Series
    pre_reasons: list[tuple[np.ndarray, str | np.ndarray]] = field(default_factory=list)
    unknown_symbols: list[str] = field(default_factory=list)  # generic: not in the master


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    """Column by case-insensitive name; empty strings when absent."""
    for c in frame.columns:
        if c.upper() == name.upper():
            return frame[c].astype(str).str.strip()
    return pd.Series("", index=frame.index, dtype=object)


def _parse_dates(text: pd.Series, formats: Iterable[str]) -> pd.Series:
    best: pd.Series | None = None
    for fmt in formats:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        if best is None or parsed.notna().sum() > best.notna().sum():
            best = parsed
        if best.notna().all():
            break
    assert best is not None
    return best.dt.normalize()


def _strs(values: pd.Series | str, index: pd.Index) -> pd.Series:
    if isinstance(values, str):
        return pd.Series(values, index=index, dtype=object)
    return values.astype(object)


def _code6(codes: pd.Series) -> pd.Series:
    text = codes.astype(str).str.strip().str.replace(r"\.0$", "", regex=True)
    ok = text.str.fullmatch(r"\d{1,6}")
    return text.where(~ok, text.str.zfill(6)).where(ok, "").astype(object)


def _parse_nse_legacy(frame: pd.DataFrame, source: _Source, ctx: _Context) -> _Parsed:
    idx = frame.index
    series = _col(frame, "SERIES").str.upper()
    symbol = _col(frame, "SYMBOL").str.upper()
    return _Parsed(
        keep=series.isin(NSE_EQUITY_SERIES).to_numpy(),
        date=_parse_dates(_col(frame, "TIMESTAMP"), ("%d-%b-%Y", "%d-%m-%Y", "%Y-%m-%d")),
        prices={
            "open": _col(frame, "OPEN"),
            "high": _col(frame, "HIGH"),
            "low": _col(frame, "LOW"),
            "close": _col(frame, "CLOSE"),
            "volume": _col(frame, "TOTTRDQTY"),
        },
        exchange=_strs("NSE", idx),
        isin=_col(frame, "ISIN").str.upper().astype(object),
        nse_symbol=symbol.astype(object),
        bse_code=_strs("", idx),
        name=symbol.astype(object),
    )


def _parse_udiff(frame: pd.DataFrame, source: _Source, ctx: _Context) -> _Parsed:
    src = _col(frame, "Src").str.upper()
    segment = _col(frame, "Sgmt").str.upper()
    instrument = _col(frame, "FinInstrmTp").str.upper()
    series = _col(frame, "SctySrs").str.upper()
    is_nse, is_bse = (src == "NSE"), (src == "BSE")
    keep = (
        (segment == "CM")
        & (instrument == "STK")
        & ((is_nse & series.isin(NSE_EQUITY_SERIES)) | ~is_nse)
    )
    symbol = _col(frame, "TckrSymb").str.upper()
    code = _code6(_col(frame, "FinInstrmId"))
    isin = _col(frame, "ISIN").str.upper().astype(object)
    # A BSE row without ISIN is linked through its scrip code to a known stock, if any.
    relink = (is_bse & (isin == "")).to_numpy()
    if relink.any():
        isin = isin.copy()
        isin[relink] = code[relink].map(ctx.isin_by_code).fillna("").to_numpy()
    name = _col(frame, "FinInstrmNm").astype(object)
    parsed = _Parsed(
        keep=keep.to_numpy(),
        date=_parse_dates(_col(frame, "TradDt"), ("%Y-%m-%d", "%d-%b-%Y")),
        prices={
            "open": _col(frame, "OpnPric"),
            "high": _col(frame, "HghPric"),
            "low": _col(frame, "LwPric"),
            "close": _col(frame, "ClsPric"),
            "volume": _col(frame, "TtlTradgVol"),
        },
        exchange=src.where(is_nse | is_bse, "").astype(object),
        isin=isin,
        nse_symbol=symbol.where(is_nse, "").astype(object),
        bse_code=code.where(is_bse, "").astype(object),
        name=name.where(name != "", symbol).astype(object),
    )
    parsed.pre_reasons.append(((~is_nse & ~is_bse).to_numpy(), "Src is neither NSE nor BSE"))
    parsed.pre_reasons.append(
        ((is_bse & (code == "")).to_numpy(), "FinInstrmId is not a BSE scrip code")
    )
    return parsed


def _parse_bse_legacy(frame: pd.DataFrame, source: _Source, ctx: _Context) -> _Parsed:
    idx = frame.index
    code = _code6(_col(frame, "SC_CODE"))
    raw_date = _col(frame, "TRADING_DATE")
    if (raw_date != "").any():
        date = _parse_dates(raw_date, BSE_DATE_FORMATS)
    else:
        ts = _file_date_ddmmyy(source.name)
        date = pd.Series(ts if ts is not None else pd.NaT, index=idx, dtype="datetime64[ns]")
    isin = _col(frame, "ISIN_CODE").str.upper().astype(object)
    # No ISIN: link through the scrip code to a known stock, never invent a key.
    missing = (isin == "").to_numpy()
    if missing.any():
        linked = code[missing].map(ctx.isin_by_code).fillna("")
        isin = isin.copy()
        isin[missing] = linked.to_numpy()
    parsed = _Parsed(
        keep=(_col(frame, "SC_TYPE").str.upper() == BSE_EQUITY_TYPE).to_numpy(),
        date=date,
        prices={
            "open": _col(frame, "OPEN"),
            "high": _col(frame, "HIGH"),
            "low": _col(frame, "LOW"),
            "close": _col(frame, "CLOSE"),
            "volume": _col(frame, "NO_OF_SHRS"),
        },
        exchange=_strs("BSE", idx),
        isin=isin,
        nse_symbol=_strs("", idx),
        bse_code=code,
        name=_col(frame, "SC_NAME").astype(object),
    )
    parsed.pre_reasons.append(
        (missing & (isin == "").to_numpy(), "no ISIN and BSE code unknown to the master")
    )
    parsed.pre_reasons.append(((code == "").to_numpy(), "SC_CODE is not a BSE scrip code"))
    return parsed


def _parse_generic(frame: pd.DataFrame, source: _Source, ctx: _Context) -> _Parsed:
    idx = frame.index
    has_symbol = any(c.upper() == "SYMBOL" for c in frame.columns)
    if has_symbol:
        symbol = _col(frame, "symbol").str.upper()
    else:
        stem = Path(source.name).stem.upper()
        stem = re.sub(r"\.(NS|BO)$", "", stem)
        symbol = pd.Series(stem, index=idx, dtype=object)
    symbol = symbol.astype(str)
    is_code = symbol.str.fullmatch(r"\d{6}")
    isin = _col(frame, "isin").str.upper().astype(object)
    missing = (isin == "").to_numpy()
    if missing.any():
        by_code = symbol[missing].map(ctx.isin_by_code)
        by_symbol = symbol[missing].map(ctx.isin_by_symbol)
        linked = by_code.where(is_code[missing], by_symbol).fillna("")
        isin = isin.copy()
        isin[missing] = linked.to_numpy()
    new = missing & (isin == "").to_numpy()
    if ctx.unlisted and new.any():  # unknown symbols get their stable local key
        isin = isin.copy()
        isin[new] = symbol[new].map(lambda s: local_key(s) or "").to_numpy()
    parsed = _Parsed(
        keep=np.ones(len(frame), dtype=bool),
        date=_parse_dates(_col(frame, "date"), GENERIC_DATE_FORMATS),
        prices={f: _col(frame, f) for f in PRICE_FIELDS},
        exchange=pd.Series(np.where(is_code, "BSE", "NSE"), index=idx, dtype=object),
        isin=isin,
        nse_symbol=symbol.where(~is_code, "").astype(object),
        bse_code=symbol.where(is_code, "").astype(object),
        name=symbol.astype(object),
    )
    unknown = missing & (isin == "").to_numpy()
    if unknown.any():
        # One reason per distinct symbol; only the (few) unknown symbols are formatted.
        texts = symbol[unknown].map(
            lambda s: (
                f"symbol {s!r} unknown to the master and no isin column"
                if s
                else "no symbol (no symbol column, empty file name) and no isin column"
            )
        )
        reason = np.full(len(frame), "", dtype=object)
        reason[unknown] = texts.to_numpy()
        parsed.pre_reasons.append((unknown, reason))
        parsed.unknown_symbols = sorted(set(symbol[unknown]) - {""})
    return parsed


PARSERS = {
    NSE_LEGACY: _parse_nse_legacy,
    UDIFF: _parse_udiff,
    BSE_LEGACY: _parse_bse_legacy,
    GENERIC: _parse_generic,
}


# -- validation ------------------------------------------------------------------------------
def _is_key(isin: pd.Series) -> np.ndarray:
    """A well-formed ISIN or a local key of `--unlisted` (LOCAL:NSE:<symbol>)."""
    shaped = isin.str.fullmatch(ISIN_RE.pattern) | isin.str.fullmatch(LOCAL_KEY_RE.pattern)
    return shaped.to_numpy()


def _validate(parsed: _Parsed, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Numeric bar frame for all rows and the reject reason per row ('' = good)."""
    reasons = np.full(n, "", dtype=object)

    def add(mask: np.ndarray, text: object) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        add_text = text[mask] if isinstance(text, np.ndarray) else text
        cur = reasons[mask]
        reasons[mask] = np.where(cur == "", add_text, cur + "; " + add_text)

    for mask, text in parsed.pre_reasons:
        add(mask, text)

    num = {}
    for f in PRICE_FIELDS:
        raw = parsed.prices[f].astype(str).str.replace(",", "", regex=False)
        values = pd.to_numeric(raw, errors="coerce").astype(float).to_numpy()
        bad = ~np.isfinite(values)
        add(bad, f"{f} is not a number")
        num[f] = values
    o, h, lo, c, v = (num[f] for f in PRICE_FIELDS)
    with np.errstate(invalid="ignore"):
        add((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), "price zero or negative")
        add(h < lo, "high below low")
        tol = 1e-9 * np.abs(h)
        add((o < lo - tol) | (o > h + tol), "open outside [low, high]")
        add((c < lo - tol) | (c > h + tol), "close outside [low, high]")
        add(v < 0, "negative volume")
    add(parsed.date.isna().to_numpy(), "bad or missing date")
    isin = parsed.isin.astype(str)
    has_isin = (isin != "").to_numpy()
    add(has_isin & ~_is_key(isin), "malformed ISIN")
    add(~has_isin & (reasons == ""), "no ISIN")

    bars = pd.DataFrame(
        {
            "isin": isin.to_numpy(dtype=object),
            "date": parsed.date.to_numpy(),
            **num,
            "exchange": parsed.exchange.to_numpy(dtype=object),
        }
    )
    # A repeated (stock, date, exchange) within one file: the first row is kept.
    candidate = parsed.keep & (reasons == "")
    dup = np.zeros(n, dtype=bool)
    dup[candidate] = bars.loc[candidate].duplicated(["isin", "date", "exchange"]).to_numpy()
    add(dup, "duplicate row for the same stock, date and exchange in this file")
    return bars, reasons


# -- the master, in memory for the run -------------------------------------------------------
class _Context:
    """The master and each stock's latest bar date, kept current as files are committed."""

    def __init__(self, master: pd.DataFrame, last_seen: pd.Series, unlisted: bool = False):
        self.master = master.set_index("isin", drop=False)
        self.last_seen = last_seen
        self.unlisted = unlisted  # register unknown symbols under local keys
        self._reindex()

    @property
    def has_local_keys(self) -> bool:
        return bool(self.master.index.str.startswith("LOCAL:").any())

    def drop(self, isins: list[str]) -> None:
        self.master = self.master.drop(index=isins, errors="ignore")
        self._reindex()

    def _reindex(self) -> None:
        m = self.master
        sym = m["nse_symbol"].dropna()
        code = m["bse_code"].dropna()
        self.isin_by_symbol = dict(zip(sym.str.upper(), sym.index, strict=True))
        self.isin_by_code = dict(zip(code, code.index, strict=True))

    def master_changes(
        self, good: pd.DataFrame, parsed_cols: pd.DataFrame
    ) -> tuple[pd.DataFrame, int]:
        """Master rows to upsert for one file's good rows (new, then changed stocks)."""
        obs = parsed_cols.assign(date=good["date"].to_numpy(), isin=good["isin"].to_numpy())
        for c in ("nse_symbol", "bse_code", "name"):
            obs[c] = obs[c].where(obs[c] != "", None)
        grouped = obs.groupby("isin", sort=True)
        seen = pd.DataFrame(
            {
                "first": grouped["date"].min(),
                "last": grouped["date"].max(),
                "nse_symbol": grouped["nse_symbol"].last(),
                "bse_code": grouped["bse_code"].last(),
                "name": grouped["name"].first(),
            }
        )
        known = seen.index.isin(self.master.index)
        new = seen[~known]
        added = pd.DataFrame(
            {
                "isin": new.index.to_numpy(dtype=object),
                "nse_symbol": new["nse_symbol"].to_numpy(dtype=object),
                "bse_code": new["bse_code"].to_numpy(dtype=object),
                "name": new["name"]
                .fillna(new["nse_symbol"])
                .fillna(new["bse_code"])
                .to_numpy(dtype=object),
                "sector": UNKNOWN_SECTOR,
                "listing_date": new["first"].to_numpy(),
                "active": True,
            }
        )
        old = seen[known]
        cur = self.master.loc[old.index, MASTER_COLUMNS].copy()
        latest = self.last_seen.reindex(old.index)
        is_latest = (latest.isna() | (old["last"] >= latest)).to_numpy()
        upd = cur.copy()
        for c in ("nse_symbol", "bse_code"):
            obs_c = old[c].to_numpy(dtype=object)
            have = pd.notna(obs_c)
            take = have & (cur[c].isna().to_numpy() | is_latest)
            upd[c] = np.where(take, obs_c, cur[c].to_numpy(dtype=object))
        upd["name"] = cur["name"].where(cur["name"].notna(), old["name"])
        listing = pd.to_datetime(cur["listing_date"])
        upd["listing_date"] = listing.where(
            listing.notna() & (listing <= old["first"]), old["first"]
        )
        changed = np.zeros(len(upd), dtype=bool)
        for c in ("nse_symbol", "bse_code", "name"):
            a, b = upd[c].to_numpy(dtype=object), cur[c].to_numpy(dtype=object)
            changed |= ~((pd.isna(a) & pd.isna(b)) | (a == b))
        changed |= (pd.to_datetime(upd["listing_date"]) != listing).to_numpy() & ~(
            listing.isna().to_numpy() & upd["listing_date"].isna().to_numpy()
        )
        changes = upd[changed].reset_index(drop=True)
        out = pd.concat([added, changes], ignore_index=True) if len(changes) else added
        out["listing_date"] = pd.to_datetime(out["listing_date"]).dt.date
        out["active"] = out["active"].astype(bool)
        return out[MASTER_COLUMNS], len(added)

    def commit(self, stocks: pd.DataFrame, bars: pd.DataFrame) -> None:
        if len(stocks):
            rows = stocks.set_index("isin", drop=False)
            self.master = pd.concat([self.master.drop(index=rows.index, errors="ignore"), rows])
            self._reindex()
        if len(bars):
            last = bars.groupby("isin")["date"].max()
            self.last_seen = pd.concat([self.last_seen, last]).groupby(level=0).max()


# -- ingest ----------------------------------------------------------------------------------
def _refuse_simulated(con, store: MarketStore) -> None:
    row = con.execute("SELECT value FROM metadata WHERE key = 'source'").fetchone()
    if row is not None and row[0] not in ("real", '"real"'):
        raise IngestError(
            f"market store {store.path} holds {row[0]} data (metadata source={row[0]!r}); real "
            "data are never mixed with it. Point VCP_MARKET_DB at another file (or delete "
            f"{store.path}) and ingest again."
        )


def _rejects_path(rejects_dir: Path, source: _Source) -> Path:
    stem = Path(source.name).stem
    return rejects_dir / f"rejects_{stem}.csv"


def _write_rejects(frame: pd.DataFrame, reasons: np.ndarray, mask: np.ndarray, path: Path) -> None:
    out = frame.loc[mask].copy()
    out["reason"] = reasons[mask]
    _write_csv(out, path)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Whole or not at all: a temp file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def ingest_paths(
    store: MarketStore,
    paths: list[Path] | list[str] | Path | str,
    rejects_dir: Path | None = None,
    corporate_actions: Path | None = None,
    progress: Progress | None = None,
    unlisted: bool = False,
) -> IngestReport:
    """Ingest bhavcopies / generic CSVs (files, directories, zips) into `store`.

    `rejects_dir` defaults to ``<store directory>/rejects``. `progress(message, 1)` is called
    after each file (message like ``"3/10 cm01JAN2024bhav.csv: 2412 rows"``).
    Raises :class:`IngestError` before writing anything when a file has an unknown format or
    the store holds simulated data. `unlisted`: a generic file's symbol unknown to the master
    is registered under its local key (``LOCAL:NSE:<symbol>``) instead of rejected. After the
    files, price gaps that look like unrecorded splits or bonuses are listed in the report and
    written to ``suspect_corporate_actions.csv`` beside the rejects. See the module docstring.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    sources = _expand(paths)
    if corporate_actions is not None:
        if not Path(corporate_actions).is_file():
            raise IngestError(f"corporate actions file {corporate_actions} does not exist")
        sources.append(_Source(Path(corporate_actions)))
    rejects_dir = Path(rejects_dir) if rejects_dir is not None else store.path.parent / "rejects"

    # 1. Detect every format before anything is written.
    plan: list[tuple[_Source, str]] = []
    for source in sources:
        header = _header(_decode(source.read_bytes(65536)))
        fmt = detect_format(header)
        if (
            corporate_actions is not None
            and source.path == Path(corporate_actions)
            and source.member is None
            and fmt != CORPORATE_ACTIONS
        ):
            raise IngestError(
                f"{source.label} is not a corporate actions CSV: expected the header "
                f"isin,ex_date,ratio, found {','.join(header)[:200]!r}"
            )
        if fmt is None:
            raise IngestError(
                f"{source.label}: unknown file format (header {','.join(header)[:200]!r}); "
                f"nothing was ingested. Expected one of: {FORMATS_EXPECTED}"
            )
        if (
            fmt == BSE_LEGACY
            and "TRADING_DATE" not in {h.upper() for h in header}
            and _file_date_ddmmyy(source.name) is None
        ):
            raise IngestError(
                f"{source.label}: BSE bhavcopy without a TRADING_DATE column and no DDMMYY "
                "date in the file name (like EQ010124.CSV); rename the file or add the column"
            )
        plan.append((source, fmt))
    # Corporate actions last, so they can refer to stocks added by this run.
    plan.sort(key=lambda sf: sf[1] == CORPORATE_ACTIONS)

    report = IngestReport()
    with store.connect(read_only=False) as con:
        _refuse_simulated(con, store)
        master = con.execute(f"SELECT {', '.join(MASTER_COLUMNS)} FROM stocks").df()
        for c in ("nse_symbol", "bse_code", "name", "sector"):
            master[c] = master[c].astype(object).where(master[c].notna(), None)
        last = con.execute("SELECT isin, max(date) AS d FROM bars GROUP BY isin").df()
        last_seen = pd.Series(pd.to_datetime(last["d"]).to_numpy(), index=last["isin"])
        ctx = _Context(master, last_seen, unlisted)
        for done, (source, fmt) in enumerate(plan, start=1):
            text = _decode(source.read_bytes())
            frame = _read_frame(text)
            if fmt == CORPORATE_ACTIONS:
                file_report = _ingest_actions(con, store, frame, source, ctx, rejects_dir)
            else:
                file_report = _ingest_bars(con, store, frame, source, fmt, ctx, rejects_dir)
            report.files.append(file_report)
            if progress is not None:
                progress(f"{done}/{len(plan)} {source.name}: {file_report.rows_written} rows", 1)
        touched = sorted({i for f in report.files for i in f.isins})
        if touched:  # gaps dated in this run's files, so a daily ingest reports each once
            report.suspect_gaps = suspect_gaps(con, touched, since=min(
                f.first_date for f in report.files if f.first_date is not None))
    if report.suspect_gaps is not None and len(report.suspect_gaps):
        report.suspect_file = rejects_dir / "suspect_corporate_actions.csv"
        _write_csv(report.suspect_gaps, report.suspect_file)
    return report


def _transaction(con, store: MarketStore, source: _Source, work: Callable[[], None]) -> None:
    con.begin()
    try:
        work()
        MarketStore.set_meta(con, source="real")
        con.commit()
    except Exception as exc:
        con.rollback()
        raise IngestError(
            f"writing {source.label} failed and was rolled back (files before it are kept): {exc}"
        ) from exc


def _ingest_bars(
    con,
    store: MarketStore,
    frame: pd.DataFrame,
    source: _Source,
    fmt: str,
    ctx: _Context,
    rejects_dir: Path,
) -> FileReport:
    report = FileReport(name=source.label, format=fmt, rows_read=len(frame))
    parsed = PARSERS[fmt](frame, source, ctx)
    bars, reasons = _validate(parsed, len(frame))
    keep = parsed.keep
    report.rows_skipped = int((~keep).sum())
    rejected = keep & (reasons != "")
    good = keep & ~rejected
    report.rows_rejected = int(rejected.sum())
    good_bars = bars.loc[good].reset_index(drop=True)
    ids = pd.DataFrame(
        {
            "nse_symbol": parsed.nse_symbol.to_numpy(dtype=object)[good],
            "bse_code": parsed.bse_code.to_numpy(dtype=object)[good],
            "name": parsed.name.to_numpy(dtype=object)[good],
        }
    )
    stocks, n_added = ctx.master_changes(good_bars, ids)
    report.stocks_added = n_added
    report.rows_accepted = int(good.sum())
    report.local_keys_added = int(stocks["isin"].map(is_local_key).sum()) if n_added else 0
    report.isins = set(good_bars["isin"].unique())
    report.first_date = good_bars["date"].min().date() if len(good_bars) else None
    report.unknown_symbols = parsed.unknown_symbols
    # A new ISIN taking a symbol that a local key holds: that stock moves to the ISIN.
    rekey = ctx.has_local_keys and len(stocks) > 0

    written = 0
    moved: list[str] = []

    def work() -> None:
        nonlocal written, moved
        if len(stocks):
            MarketStore.upsert_stocks(con, stocks)
        written = MarketStore.upsert_bars(con, good_bars)
        if rekey:
            before = set(ctx.master.index[ctx.master.index.str.startswith("LOCAL:")])
            MarketStore.rekey_local_stocks(con)
            left = {r[0] for r in con.execute(
                "SELECT isin FROM stocks WHERE isin LIKE 'LOCAL:%'").fetchall()}
            moved = sorted(before - left)

    _transaction(con, store, source, work)
    ctx.commit(stocks, good_bars)
    if moved:
        ctx.drop(moved)
    report.rows_written = written
    if report.rows_rejected:
        report.rejects_file = _rejects_path(rejects_dir, source)
        _write_rejects(frame, reasons, rejected, report.rejects_file)
    return report


def _ingest_actions(
    con, store: MarketStore, frame: pd.DataFrame, source: _Source, ctx: _Context, rejects_dir: Path
) -> FileReport:
    report = FileReport(name=source.label, format=CORPORATE_ACTIONS, rows_read=len(frame))
    n = len(frame)
    reasons = np.full(n, "", dtype=object)

    def add(mask: np.ndarray, text: str) -> None:
        cur = reasons[mask]
        reasons[mask] = np.where(cur == "", text, cur + "; " + text)

    isin = _col(frame, "isin").str.upper()
    ex_date = _parse_dates(_col(frame, "ex_date"), GENERIC_DATE_FORMATS)
    ratio = pd.to_numeric(_col(frame, "ratio"), errors="coerce").astype(float)
    shaped = _is_key(isin)
    add(~shaped, "malformed ISIN")
    add(shaped & ~isin.isin(ctx.master.index).to_numpy(), "ISIN unknown to the master")
    add(ex_date.isna().to_numpy(), "bad or missing ex_date")
    with np.errstate(invalid="ignore"):
        add(
            ~(np.isfinite(ratio.to_numpy()) & (ratio.to_numpy() > 0)),
            "ratio is not a positive number (shares after / shares before)",
        )
    actions = pd.DataFrame(
        {
            "isin": isin.to_numpy(dtype=object),
            "ex_date": ex_date.to_numpy(),
            "ratio": ratio.to_numpy(),
        }
    )
    ok = reasons == ""
    dup = np.zeros(n, dtype=bool)
    dup[ok] = actions.loc[ok].duplicated(["isin", "ex_date"]).to_numpy()
    add(dup, "duplicate action for the same ISIN and ex_date in this file")
    ok = reasons == ""
    good = actions.loc[ok].reset_index(drop=True)
    good["ex_date"] = good["ex_date"].dt.date
    written = 0

    def work() -> None:
        nonlocal written
        if len(good):
            written = MarketStore.upsert_corporate_actions(con, good)

    _transaction(con, store, source, work)
    report.rows_written = written
    report.rows_accepted = int(ok.sum())
    report.rows_rejected = int((~ok).sum())
    if report.rows_rejected:
        report.rejects_file = _rejects_path(rejects_dir, source)
        _write_rejects(frame, reasons, ~ok, report.rejects_file)
    return report
