"""Minervini's trend template: the 8 criteria (book values) as booleans and their count.

1. close > SMA150 and close > SMA200
2. SMA150 > SMA200
3. SMA200 rising for at least a month: SMA200 today > SMA200 21 sessions ago
4. SMA50 > SMA150 and SMA50 > SMA200
5. close > SMA50
6. close >= 1.30 x 52-week low
7. close >= 0.75 x 52-week high
8. RS rating >= 70

Any NaN input makes its criterion False.
"""

from __future__ import annotations

import numpy as np

CRITERIA = (
    "close_above_sma150_sma200",
    "sma150_above_sma200",
    "sma200_rising_1m",
    "sma50_above_sma150_sma200",
    "close_above_sma50",
    "close_30pct_above_52w_low",
    "close_within_25pct_of_52w_high",
    "rs_rating_70",
)
ABOVE_LOW = 1.30
NEAR_HIGH = 0.75
MIN_RS = 70.0
SLOPE_LAG = 21


def trend_template(
    close: np.ndarray,
    sma50: np.ndarray,
    sma150: np.ndarray,
    sma200: np.ndarray,
    sma200_prev: np.ndarray,
    low_52w: np.ndarray,
    high_52w: np.ndarray,
    rs: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (checks [8, ...] bool, count [...] float64) for same-shaped inputs.

    ``sma200_prev`` is SMA200 ``SLOPE_LAG`` sessions earlier.
    """
    with np.errstate(invalid="ignore"):
        checks = np.stack(
            [
                (close > sma150) & (close > sma200),
                sma150 > sma200,
                sma200 > sma200_prev,
                (sma50 > sma150) & (sma50 > sma200),
                close > sma50,
                close >= ABOVE_LOW * low_52w,
                close >= NEAR_HIGH * high_52w,
                rs >= MIN_RS,
            ]
        )
    return checks, checks.sum(axis=0).astype(np.float64)
