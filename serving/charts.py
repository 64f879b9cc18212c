"""GET /api/v1/chart: one stock's setup chart as PNG, rendered off the event loop and kept in
a bounded per-worker cache keyed by (isin, session, model version).

The bars come from the market store (one stock, the feature window ending at the session), so
the snapshot keeps features only; the setup drawn is the one the snapshot's detector found,
on the same session dates.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import date

from inference.charts import render_setup_chart
from inference.scoring import ScoreResult
from inference.snapshot import DateFeatures
from market.master import Stock
from market.store import MarketStore

CACHE_CHARTS = 256  # about 80 KB each: ~20 MB per worker at most

ChartKey = tuple[str, date, str | None]


class ChartCache:
    """A thread-safe LRU of rendered PNGs."""

    def __init__(self, size: int = CACHE_CHARTS):
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[ChartKey, bytes] = OrderedDict()

    def get(self, key: ChartKey) -> bytes | None:
        with self._lock:
            png = self._items.get(key)
            if png is not None:
                self._items.move_to_end(key)
            return png

    def put(self, key: ChartKey, png: bytes) -> None:
        with self._lock:
            self._items[key] = png
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def chart_title(stock: Stock, at: DateFeatures, scored: ScoreResult | None) -> str:
    label = stock.nse_symbol or stock.bse_code or stock.isin
    title = f"{label}  {stock.name[:40]}  {at.as_of}"
    if scored is not None and scored.probability is not None:
        title += f"  p(win) {scored.probability:.0%} {scored.confidence}"
    return title


def render_stock_chart(store: MarketStore, stock: Stock, at: DateFeatures, row: int,
                       scored: ScoreResult | None, simulated: bool) -> bytes:
    """The full-size chart of `stock` as of `at` (blocking: call it in a thread)."""
    panel = store.load_panel(at.as_of, len(at.dates), isins=[stock.isin])
    return render_setup_chart(panel.dates, panel.open[0], panel.high[0], panel.low[0],
                              panel.close[0], panel.volume[0], at.setup(row), at.why_not(row),
                              chart_title(stock, at, scored), simulated)
