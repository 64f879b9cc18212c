"""Stock master: one row per ISIN, addressed by NSE symbol or 6-digit BSE code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import pandas as pd

MASTER_COLUMNS = ["isin", "nse_symbol", "bse_code", "name", "sector", "listing_date", "active"]

ISIN_RE = re.compile(r"^IN[A-Z0-9]{9}[0-9]$")
BSE_CODE_RE = re.compile(r"^\d{6}$")


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
