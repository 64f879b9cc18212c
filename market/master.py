"""Stock master: one row per ISIN, addressed by NSE symbol or 6-digit BSE code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import pandas as pd

MASTER_COLUMNS = ["isin", "nse_symbol", "bse_code", "name", "sector", "listing_date", "active"]
# Dated status, filled by `data master` from the exchanges' lists (NULL when not given).
STATUS_COLUMNS = ["industry", "delisting_date", "suspension_date"]

ISIN_RE = re.compile(r"^IN[A-Z0-9]{9}[0-9]$")
BSE_CODE_RE = re.compile(r"^\d{6}$")

# A stock without an ISIN registered by `data ingest --unlisted` is keyed "LOCAL:NSE:<symbol>"
# (or "LOCAL:BSE:<6-digit code>"): the colons can never appear in an ISIN (12 letters and
# digits), and the key depends only on the symbol, so re-ingesting finds the same stock.
LOCAL_KEY_PREFIX = "LOCAL:"
LOCAL_KEY_RE = re.compile(r"^LOCAL:(NSE|BSE):[A-Z0-9&._-]{1,40}$")


def local_key(symbol: str) -> str | None:
    """The local key of a symbol (a 6-digit symbol is a BSE code), or None if unusable."""
    text = str(symbol).strip().upper()
    key = f"{LOCAL_KEY_PREFIX}{'BSE' if BSE_CODE_RE.match(text) else 'NSE'}:{text}"
    return key if LOCAL_KEY_RE.match(key) else None


def is_local_key(key: object) -> bool:
    return isinstance(key, str) and key.startswith(LOCAL_KEY_PREFIX)


def status_reasons(frame: pd.DataFrame, day: date, last_traded: pd.Series) -> list[str | None]:
    """Why each stock of `frame` (master rows) was not listed on `day`, None when it was.

    Status as of the date, not today's flag: a stock delisted after `day` was listed on it.
    * `day` before its listing date: "not_listed: lists on X";
    * on or after its delisting date: "delisted: on X";
    * on or after its suspension date while still inactive today: "suspended: since X";
    * inactive with no date in the master: listed on `day` if it traded on or after `day` (it
      was still listed then), else "inactive: ..., last traded X".
    `last_traded` maps isin to the latest bar date (NaT when never traded).
    """
    d = pd.Timestamp(day)
    out: list[str | None] = []
    none = pd.Series(None, index=frame.index, dtype=object)
    cols = {c: frame.get(c, none)
            for c in ("listing_date", "delisting_date", "suspension_date", "active")}
    last = pd.to_datetime(last_traded.reindex(frame.get("isin", frame.index)).to_numpy())
    for listing, delisting, suspension, active, lt in zip(
        pd.to_datetime(cols["listing_date"]), pd.to_datetime(cols["delisting_date"]),
        pd.to_datetime(cols["suspension_date"]), cols["active"], last, strict=True
    ):
        if pd.notna(listing) and d < listing:
            out.append(f"not_listed: lists on {listing.date()}")
        elif pd.notna(delisting) and d >= delisting:
            out.append(f"delisted: on {delisting.date()}")
        elif pd.notna(suspension) and d >= suspension and not _true(active):
            out.append(f"suspended: since {suspension.date()}")
        elif not _true(active) and pd.isna(delisting) and pd.isna(suspension) and not (
            pd.notna(lt) and lt >= d
        ):
            last_text = "never" if pd.isna(lt) else str(lt.date())
            out.append(f"inactive: delisted or suspended (no date in the master), "
                       f"last traded {last_text}")
        else:
            out.append(None)
    return out


def _true(x: object) -> bool:
    return bool(x) if x is not None and not (isinstance(x, float) and pd.isna(x)) else False


class StockLookupError(LookupError):
    """An identifier names no stock, or two identifiers name different stocks."""


class UnknownStockError(StockLookupError):
    pass


class AmbiguousStockError(StockLookupError):
    pass


@dataclass(frozen=True)
class Stock:
    isin: str
    nse_symbol: str | None
    bse_code: str | None
    name: str
    sector: str
    listing_date: date | None
    active: bool


def normalize_bse_code(code: object) -> str | None:
    """BSE scrip codes are 6 digits; files sometimes drop the leading zeros or add '.0'."""
    if code is None or (isinstance(code, float) and pd.isna(code)):
        return None
    text = str(code).strip()
    if text.endswith(".0"):
        text = text[:-2]
    if not text:
        return None
    if not text.isdigit() or len(text) > 6:
        raise ValueError(f"BSE code {code!r} is not a number of at most 6 digits")
    return text.zfill(6)


def normalize_symbol(symbol: object) -> str | None:
    if symbol is None or (isinstance(symbol, float) and pd.isna(symbol)):
        return None
    text = str(symbol).strip().upper()
    return text or None


class StockMaster:
    """In-memory index over the master table; lookups are O(1)."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame.reset_index(drop=True)
        self._by_isin: dict[str, int] = {}
        self._by_symbol: dict[str, int] = {}
        self._by_code: dict[str, int] = {}
        self._stocks: list[Stock] | None = None
        for i, (isin, sym, code) in enumerate(
            zip(self.frame["isin"], self.frame["nse_symbol"], self.frame["bse_code"], strict=True)
        ):
            self._by_isin[isin] = i
            if isinstance(sym, str) and sym:
                self._by_symbol[sym.upper()] = i
            if isinstance(code, str) and code:
                self._by_code[code] = i

    def __len__(self) -> int:
        return len(self.frame)

    def _stock(self, i: int) -> Stock:
        if self._stocks is None:  # built once: a pandas row lookup per request is slow
            self._stocks = [
                Stock(
                    isin=isin,
                    nse_symbol=sym if isinstance(sym, str) else None,
                    bse_code=code if isinstance(code, str) else None,
                    name=str(name),
                    sector=str(sector),
                    listing_date=None if pd.isna(listing) else pd.Timestamp(listing).date(),
                    active=bool(active),
                )
                for isin, sym, code, name, sector, listing, active in zip(
                    *(self.frame[c] for c in MASTER_COLUMNS), strict=True
                )
            ]
        return self._stocks[i]

    def by_isin(self, isin: str) -> Stock:
        i = self._by_isin.get(isin.strip().upper())
        if i is None:
            raise UnknownStockError(f"unknown ISIN {isin!r}")
        return self._stock(i)

    def lookup(
        self, *, bse_code: str | None = None, nse_symbol: str | None = None, isin: str | None = None
    ) -> Stock:
        """Find one stock by any of its identifiers; all given identifiers must agree."""
        found: dict[str, int] = {}
        if isin:
            i = self._by_isin.get(isin.strip().upper())
            if i is None:
                raise UnknownStockError(f"unknown ISIN {isin!r}")
            found[f"isin {isin!r}"] = i
        if bse_code:
            try:
                code = normalize_bse_code(bse_code)
            except ValueError as exc:
                raise UnknownStockError(str(exc)) from None
            i = self._by_code.get(code or "")
            if i is None:
                raise UnknownStockError(f"unknown BSE code {bse_code!r}")
            found[f"bse_code {bse_code!r}"] = i
        if nse_symbol:
            i = self._by_symbol.get(nse_symbol.strip().upper())
            if i is None:
                raise UnknownStockError(f"unknown NSE symbol {nse_symbol!r}")
            found[f"nse_symbol {nse_symbol!r}"] = i
        if not found:
            raise UnknownStockError("give a bse_code or an nse_symbol")
        if len(set(found.values())) > 1:
            named = ", ".join(
                f"{label} is {self.frame.at[i, 'isin']}" for label, i in found.items()
            )
            raise AmbiguousStockError(f"identifiers name different stocks: {named}")
        return self._stock(next(iter(found.values())))
