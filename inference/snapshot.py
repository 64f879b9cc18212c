"""Market data held in memory by an API worker: today's features for every stock, other
dates computed on demand and kept in a bounded cache.

The latest 400 sessions are read at start-up and the features of every stock at the latest
date computed once, so a default-date predict is a dictionary lookup. A newer store (after an
ingest) is noticed by its `updated_at` metadata on `maybe_refresh()` (called on a timer and on
reload) and swapped in whole, so readers never see half of two snapshots.

Other dates are kept within `cache_bytes` (their arrays and Python objects, measured once per
date; least recently used first out, the latest date never). At most `concurrency` requests
compute a date at once (`slots`), besides the warming of the recent sessions at start-up; each
computation reads a 400-session panel (about 180 MB on the full market), and the memory it
freed is handed back to the system after it. `computing` holds the dates being computed, so
a request for one of them can wait for it. When the store cannot be read
(deleted, locked by a writer, damaged) what is in memory is still served, a date that needs
the store raises MarketStoreUnavailable, and `store_problem()` says why until a read works.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb
import numpy as np

from features import FEATURES, FeatureResult, compute_features_at
from features.indicators import ffill
from features.universe import Floors, median_traded_value_at, tradeable
from features.vector import HISTORY_WINDOW
from inference.errors import MarketDataLoading, MarketStoreUnavailable, NoPriceData
from inference.feature_cache import FeatureCache
from inference.sessions import Session, day, resolve_session
from market.master import Stock, StockMaster
from market.store import MarketStore, Panel, StoreError

log = logging.getLogger("vcp.snapshot")

# What reading the store raises when it is missing, locked or damaged.
STORE_ERRORS = (StoreError, duckdb.Error, OSError)


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

    def features_list(self, i: int) -> list[float | None]:
        """Stock ``i``'s values in FEATURES order, None where missing (the runner's input)."""
        return [float(x) if np.isfinite(x) else None for x in self.result.values[i]]

    def features(self, i: int) -> dict[str, float | None]:
        return dict(zip(FEATURES, self.features_list(i), strict=True))


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


def footprint(obj: Any, _seen: set[int] | None = None) -> int:
    """Bytes held by `obj` and what it references: numpy buffers (a view counts its base
    once), dataclasses, containers and their items; shared objects are counted once."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
        size = sys.getsizeof(obj)  # the data too when the array owns it
        if base is not obj:
            return size + footprint(base, seen)
        if obj.dtype == object:
            size += sum(footprint(x, seen) for x in obj.flat)
        return size
    size = sys.getsizeof(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        size += sum(footprint(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    elif isinstance(obj, dict):
        size += sum(footprint(k, seen) + footprint(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(footprint(x, seen) for x in obj)
    return size


def store_problem(exc: BaseException) -> str:
    """What is wrong with the store, for users: no paths, no library internals."""
    text = str(exc).lower()
    if isinstance(exc, StoreError) and "does not exist" in text:
        return "the market store file is missing"
    if "lock" in text or "resource temporarily unavailable" in text:
        return "the market store is locked by another process (an ingest?)"
    return f"the market store cannot be read ({type(exc).__name__})"


def release_freed_memory() -> None:
    """Hand the heap memory freed by a computation back to the system (glibc keeps it in the
    thread's arena otherwise, and a worker's resident size only grows)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class MarketSnapshot:
    def __init__(self, store: MarketStore, cache_bytes: float = 512 * 2**20,
                 concurrency: int = 1, floors: Floors | None = None, disk_cache: bool = True):
        self.store = store
        self.cache_bytes = cache_bytes
        self.concurrency = concurrency
        self.slots = threading.BoundedSemaphore(concurrency)  # dates computed at once
        self.floors = floors or Floors()
        self._lock = threading.Lock()
        self._date_locks: dict[date, threading.Lock] = {}
        self._cache: OrderedDict[date, DateFeatures] = OrderedDict()
        self._sizes: dict[date, int] = {}
        self.master: StockMaster | None = None
        self.latest: DateFeatures | None = None
        self.calendar: np.ndarray = np.array([], dtype="datetime64[D]")
        self.meta: dict[str, str] = {}
        self._store_error: str | None = None
        self.computing: set[date] = set()  # dates being computed now
        # The latest session's features on disk for restarts (None: always compute).
        self.disk = FeatureCache(store.path) if disk_cache else None
        self.loaded_from: str | None = None  # "cache" or "computed", after load()

    # -- loading -----------------------------------------------------------------------------
    def load(self) -> None:
        meta = self.store.get_meta()
        master = self.store.master()
        calendar = self.store.calendar()
        latest = self._latest_features(meta, calendar)
        with self._lock:
            self.meta, self.master, self.calendar, self.latest = meta, master, calendar, latest
            self._cache = OrderedDict({latest.as_of: latest})
            self._sizes = {}
        self._store_error = None

    def _latest_features(self, meta: dict[str, str], calendar: np.ndarray) -> DateFeatures:
        """The newest session's features: from the disk cache when its key matches (a
        restart), else computed and cached."""
        disk = self.disk if len(calendar) else None
        key = disk.key(meta.get("updated_at"), str(calendar[-1]), HISTORY_WINDOW,
                       self.floors) if disk is not None else None
        if disk is not None and key is not None:
            cached = disk.read(key)
            if isinstance(cached, DateFeatures) and cached.as_of == day(calendar[-1]):
                self.loaded_from = "cache"
                return cached
        latest = features_from_panel(self.store.load_panel(None, HISTORY_WINDOW), self.floors)
        self.loaded_from = "computed"
        if disk is not None and key is not None:
            disk.write(key, latest)
        return latest

    def maybe_refresh(self) -> bool:
        """Reload when the store changed since the last load; True when it did. A store that
        cannot be read keeps the previous snapshot (and is reported by `store_problem`)."""
        try:
            updated = self.store.get_meta().get("updated_at")
        except STORE_ERRORS as exc:  # a store being replaced, locked or gone
            self._failed(exc)
            return False
        self._store_error = None
        if updated == self.meta.get("updated_at"):
            return False
        try:
            self.load()
        except STORE_ERRORS as exc:
            self._failed(exc)
            return False
        return True

    def _failed(self, exc: BaseException) -> str:
        problem = store_problem(exc)
        if problem != self._store_error:
            log.warning("market store %s: %s (%r); serving what is in memory",
                        self.store.path, problem, exc)
        self._store_error = problem
        return problem

    def store_problem(self) -> str | None:
        """Why the store cannot be read now (None: it could be at the last try and is
        still there)."""
        if not os.path.exists(self.store.path):
            return "the market store file is missing"
        return self._store_error

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

    def cached(self, as_of: date) -> DateFeatures | None:
        """The features at `as_of` when they are in memory (no computation)."""
        with self._lock:
            hit = self._cache.get(as_of)
            if hit is not None:
                self._cache.move_to_end(as_of)
            return hit

    @property
    def cache_nbytes(self) -> int:
        """Bytes held by the cached dates other than the latest."""
        return sum(self._sizes.values())

    @property
    def cached_dates(self) -> int:
        return len(self._cache)

    def at(self, as_of: date) -> DateFeatures:
        """Features of every stock at the session `as_of` (computed once, then cached)."""
        hit = self.cached(as_of)
        if hit is not None:
            return hit
        with self._lock:
            date_lock = self._date_locks.setdefault(as_of, threading.Lock())
        with date_lock:  # one computation per date, however many requests wait for it
            with self._lock:
                hit = self._cache.get(as_of)
            if hit is not None:
                return hit
            self.computing.add(as_of)
            try:
                computed = self._compute(as_of)
            finally:
                self.computing.discard(as_of)
            self._keep(computed)
            with self._lock:
                self._date_locks.pop(as_of, None)
            return computed

    def _compute(self, as_of: date) -> DateFeatures:
        try:
            panel = self.store.load_panel(as_of, HISTORY_WINDOW)
        except STORE_ERRORS as exc:
            problem = self._failed(exc)
            raise MarketStoreUnavailable(
                f"{problem}: {as_of} is not in memory and cannot be read now; retry "
                "shortly (the latest session is still served)") from None
        self._store_error = None
        computed = features_from_panel(panel, self.floors)
        del panel
        release_freed_memory()
        return computed

    def _keep(self, computed: DateFeatures) -> None:
        """Cache `computed` within the byte budget, evicting least recently used dates (never
        the latest); a date larger than the whole budget is served but not kept."""
        size = footprint(computed)
        with self._lock:
            latest = self.latest.as_of if self.latest is not None else None
            if computed.as_of == latest or size > self.cache_bytes:
                return
            self._cache[computed.as_of] = computed
            self._sizes[computed.as_of] = size
            while self.cache_nbytes > self.cache_bytes:
                victim = next(d for d in self._cache if d != latest)
                del self._cache[victim]
                self._sizes.pop(victim, None)

    def warm(self, sessions: int) -> None:
        """Precompute the most recent sessions (run in the background after start-up), one
        at a time. Outside the slots: so the service is ready at once and requests are not
        refused for warming's sake (a request for a date being warmed waits for it)."""
        for d in self.calendar[-sessions - 1:-1][::-1]:
            self.at(day(d))
