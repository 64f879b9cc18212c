"""The tradeable universe: which stocks a trader could buy at date D without moving the price.

* **Liquidity floor**: the median daily traded value (close x volume) over the last 50 sessions,
  sessions without a trade counting as zero, at least ``min_traded_value`` (default Rs 1 crore,
  the `VCP_MIN_TRADED_VALUE` setting). A median, so that one block deal does not make an
  illiquid stock look tradeable.
* **Price floor**: the last close at least ``min_price`` (default Rs 20, `VCP_MIN_PRICE`): penny
  stocks have tick sizes and circuit limits that break the trade's arithmetic.

Equity series only (no trade-for-trade or SME series) where the data names the series: that
filter belongs to ingest and the stock master, which keep only EQ/BE-style equity rows.

Reads only sessions up to D (no look-ahead).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LIQUIDITY_SESSIONS = 50
MIN_TRADED_VALUE = 1e7  # Rs 1 crore a day
MIN_PRICE = 20.0


@dataclass(frozen=True)
class Floors:
    min_traded_value: float = MIN_TRADED_VALUE
    min_price: float = MIN_PRICE


def median_traded_value_at(close: np.ndarray, volume: np.ndarray, cols: np.ndarray,
                           sessions: int = LIQUIDITY_SESSIONS) -> np.ndarray:
    """[n, k] median of close x volume over the `sessions` ending at each column (a missing
    session counts as zero traded value)."""
    value = np.nan_to_num(close * volume, nan=0.0)
    out = np.full((close.shape[0], len(cols)), np.nan)
    for j, c in enumerate(np.asarray(cols, dtype=np.int64)):
        a = max(0, int(c) - sessions + 1)
        out[:, j] = np.median(value[:, a:c + 1], axis=1)
    return out


def tradeable(close_now: np.ndarray, traded_value: np.ndarray,
              floors: Floors = Floors()) -> tuple[np.ndarray, list[str | None]]:
    """(mask [n], reason per stock: None when tradeable) for the stocks' last close and median
    traded value."""
    with np.errstate(invalid="ignore"):
        liquid = traded_value >= floors.min_traded_value
        priced = close_now >= floors.min_price
    reasons: list[str | None] = []
    for ok_l, ok_p, v, c in zip(liquid, priced, traded_value, close_now, strict=True):
        if not ok_l:
            reasons.append(f"illiquid: median traded value Rs {v / 1e5:,.1f} lakh a day over "
                           f"{LIQUIDITY_SESSIONS} sessions (floor Rs "
                           f"{floors.min_traded_value / 1e5:,.0f} lakh)")
        elif not ok_p:
            reasons.append(f"below the price floor: close Rs {c:,.2f} (floor Rs "
                           f"{floors.min_price:,.0f})")
        else:
            reasons.append(None)
    return liquid & priced, reasons
