"""Market data held in memory by an API worker: today's features for every stock, other
dates computed on demand and kept in a bounded cache.

The latest 400 sessions are read at start-up and the features of every stock at the latest
date computed once, so a default-date predict is a dictionary lookup. A newer store (after an
ingest) is noticed by its `updated_at` metadata on `maybe_refresh()` (called on a timer and on
reload) and swapped in whole, so readers never see half of two snapshots.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from features import FEATURES, FeatureResult, compute_features_at
from features.indicators import ffill
from features.universe import Floors, median_traded_value_at, tradeable
from features.vector import HISTORY_WINDOW
from inference.errors import MarketDataLoading, NoPriceData
from inference.sessions import Session, day, resolve_session
from market.master import Stock, StockMaster
from market.store import MarketStore, Panel


@dataclass
class DateFeatures:
    """Features of every stock at one as-of date."""

    as_of: date
    dates: np.ndarray  # panel dates, to turn the detector's column indices into dates
    result: FeatureResult
    row_of: dict[str, int]
    tradeable: np.ndarray  # [n] inside the universe's liquidity and price floors
    universe_reasons: list[str | None]  # why a stock is outside them (None: inside)

    def row(self, isin: str) -> int | None:
        return self.row_of.get(isin)

    def price_row(self, stock: Stock) -> int:
        """The stock's row (its features may still be uncomputable: see ``why_not``)."""
        row = self.row_of.get(stock.isin)
        if row is None:
            raise NoPriceData(f"{stock.isin} has no price data in the store")
        return row

    def setup(self, i: int) -> dict[str, Any] | None:
        """The VCP setup of stock ``i`` with real session dates, or None (see ``why_not``)."""
        if not self.result.is_setup(i):
            return None
        return self.result.vcp.setup(i, self.dates)

    def candidate(self, i: int) -> bool:
        """A setup inside the tradeable universe: the only stocks the model scores."""
        return bool(self.result.is_setup(i) and self.tradeable[i])

    def candidates(self) -> np.ndarray:
        """Rows of every candidate."""
        return np.flatnonzero(self.result.scoreable & self.result.vcp.detected & self.tradeable)

    def why_not(self, i: int) -> str | None:
        """Why stock ``i`` gets no probability: its features cannot be computed, it is
        outside the universe, or it is no setup (the first VCP rule it fails)."""
        if not self.result.scoreable[i]:
            return self.result.reasons[i]
        if not self.tradeable[i]:
            return self.universe_reasons[i]
        return self.result.why_not(i)

    def trend_template(self, i: int) -> dict[str, bool]:
        return self.result.trend_template(i)

    def features(self, i: int) -> dict[str, float | None]:
        v = self.result.values[i]
        return {name: (float(x) if np.isfinite(x) else None) for name, x in zip(FEATURES, v,
                                                                                 strict=True)}


def features_from_panel(panel: Panel, floors: Floors | None = None) -> DateFeatures:
    result = compute_features_at(panel.open, panel.high, panel.low, panel.close, panel.volume)
    last = np.array([panel.close.shape[1] - 1])
    value = median_traded_value_at(panel.close, panel.volume, last)[:, 0]
    ok, reasons = tradeable(ffill(panel.close, 10)[:, -1], value, floors or Floors())
    return DateFeatures(
        as_of=panel.as_of,
        dates=panel.dates,
        result=result,
        row_of={isin: i for i, isin in enumerate(panel.isins)},
        tradeable=ok,
        universe_reasons=reasons,
    )


class MarketSnapshot:
    def __init__(self, store: MarketStore, cache_dates: int = 16, floors: Floors | None = None):
        self.store = store
        self.cache_dates = cache_dates
        self.floors = floors or Floors()
        self._lock = threading.Lock()
        self._date_locks: dict[date, threading.Lock] = {}
        self._cache: OrderedDict[date, DateFeatures] = OrderedDict()
        self.master: StockMaster | None = None
        self.latest: DateFeatures | None = None
        self.calendar: np.ndarray = np.array([], dtype="datetime64[D]")
        self.meta: dict[str, str] = {}

    # -- loading -----------------------------------------------------------------------------
    def load(self) -> None:
        meta = self.store.get_meta()
        master = self.store.master()
        calendar = self.store.calendar()
        panel = self.store.load_panel(None, HISTORY_WINDOW)
        latest = features_from_panel(panel, self.floors)
        with self._lock:
            self.meta, self.master, self.calendar, self.latest = meta, master, calendar, latest
            self._cache = OrderedDict({latest.as_of: latest})

    def maybe_refresh(self) -> bool:
        """Reload when the store changed since the last load; True when it did."""
        try:
            updated = self.store.get_meta().get("updated_at")
        except Exception:  # a store being replaced: try again on the next tick
            return False
        if updated == self.meta.get("updated_at"):
            return False
        self.load()
        return True

    @property
    def ready(self) -> bool:
        return self.latest is not None

    @property
    def data_source(self) -> str:
        return self.meta.get("source", "unknown")

    # -- lookups -----------------------------------------------------------------------------
    def resolve(self, wanted: date | None) -> Session:
        """The session for `wanted` (see inference.sessions for the date policy)."""
        if self.latest is None:
            raise MarketDataLoading("market data is still loading")
        return resolve_session(self.calendar, wanted)

    def at(self, as_of: date) -> DateFeatures:
        """Features of every stock at the session `as_of` (computed once, then cached)."""
        with self._lock:
            hit = self._cache.get(as_of)
            if hit is not None:
                self._cache.move_to_end(as_of)
                return hit
            date_lock = self._date_locks.setdefault(as_of, threading.Lock())
        with date_lock:  # one computation per date, however many requests wait for it
            with self._lock:
                hit = self._cache.get(as_of)
            if hit is not None:
                return hit
            computed = features_from_panel(self.store.load_panel(as_of, HISTORY_WINDOW),
                                           self.floors)
            with self._lock:
                self._cache[as_of] = computed
                latest = self.latest.as_of if self.latest is not None else None
                while len(self._cache) > self.cache_dates:  # evict LRU, never the latest date
                    del self._cache[next(d for d in self._cache if d != latest)]
                self._date_locks.pop(as_of, None)
            return computed

    def warm(self, sessions: int) -> None:
        """Precompute the most recent sessions (run in the background after start-up)."""
        for d in self.calendar[-sessions - 1:-1][::-1]:
            self.at(day(d))
