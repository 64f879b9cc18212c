"""The one price-and-volume process every simulated stock follows, planted bases included.

One session for a set of rows (stocks, or Monte Carlo paths of the oracle) is one call of
``step``. A row's log return is

    r = beta * market + sector + drift + leg_drift + sigma * exp(v) * sqrt(h) * z

* ``z``: Student-t innovations (``T_DF`` degrees of freedom, unit variance): fat tails.
* ``h``: GARCH(1,1) variance of the standardized innovation (volatility clustering).
* Every stock moves in **legs** (``market/sim/plan.py``): a run of sessions with its own drift
  (``leg_drift``) and levels toward which the log-volatility regime ``v`` and the volume regime
  ``w`` are pulled (``PULL`` per session, plus small noise). A free stock draws its legs at
  random; a planted base is a particular sequence of legs. Noise, bars and volume come from the
  same code either way.

Returns stay inside the widest NSE/BSE price band (20% from the previous close). Bars come from
the return and the session's conditional volatility ``sd`` (idiosyncratic, market and sector
together), the same mapping for every row, inside the same band:

    open  = prev_close * exp(GAP_SD * sd * g)
    high  = max(open, close) * exp(WICK_SD * sd * |n1|)
    low   = min(open, close) * exp(-WICK_SD * sd * |n2|)
    log volume = level + w + VOLUME_SURPRISE * min(|r| / sd, 5) + VOLUME_NOISE * e
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

T_DF = 5.0
GARCH_ALPHA, GARCH_BETA = 0.07, 0.91
MAX_H = 9.0  # GARCH variance at most 9x its mean (volatility at most 3x)
CIRCUIT = float(np.log(1.2))  # the widest NSE/BSE price band: 20% a session
PULL = 0.15  # per session, of the volatility and volume regimes toward their leg's levels
REGIME_NOISE = 0.04  # per session, on both regimes
GAP_SD, WICK_SD = 0.30, 0.50
VOLUME_SURPRISE, VOLUME_NOISE = 0.30, 0.45
SECTOR_SD = 0.005
MARKET_SIGMA, MARKET_DRIFT = 0.009, 0.0002
MARKET_REGIME_PHI, MARKET_REGIME_SD = 0.995, 0.0006
N_DRAWS = 7  # standard draws per row and session, in this order: z, g, n1, n2, e, dv, dw
_T_SCALE = np.sqrt((T_DF - 2.0) / T_DF)


@dataclass
class Rows:
    """Per-row constants and state (all [m] arrays). ``x`` is the log close."""

    beta: np.ndarray
    sigma: np.ndarray
    drift: np.ndarray
    level: np.ndarray  # log of the typical volume in shares
    x: np.ndarray
    h: np.ndarray
    v: np.ndarray
    w: np.ndarray

    def copy_rows(self, idx: np.ndarray) -> Rows:
        return Rows(**{k: np.array(getattr(self, k)[idx]) for k in self.__dataclass_fields__})


@dataclass
class Market:
    """Market factor state ([m] arrays, so Monte Carlo paths each get their own market)."""

    h: np.ndarray  # GARCH variance (return units)
    d: np.ndarray  # drift regime

    def copy_rows(self, idx: np.ndarray) -> Market:
        return Market(np.array(self.h[idx]), np.array(self.d[idx]))


def draws(rng: np.random.Generator, m: int) -> np.ndarray:
    """The session's random draws for m rows, [N_DRAWS, m] (z is Student-t, unit variance).

    float32 draws: twice as fast, and ample for noise."""
    out = rng.standard_normal((N_DRAWS, m), dtype=np.float32)
    # Student-t as a normal over sqrt(chi2 / df), chi2 / 2 ~ Gamma(df / 2).
    chi2_over_df = rng.standard_gamma(T_DF / 2, m, dtype=np.float32) * (2 / T_DF)
    out[0] *= _T_SCALE / np.sqrt(chi2_over_df)
    return out


def market_step(state: Market, z: np.ndarray, dz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One market return per row and its conditional sd; advances the state in place."""
    sd = np.sqrt(state.h)
    ret = MARKET_DRIFT + state.d + sd * z
    state.h = MARKET_SIGMA**2 * (1 - GARCH_ALPHA - GARCH_BETA) + GARCH_ALPHA * (sd * z) ** 2 \
        + GARCH_BETA * state.h
    state.d = MARKET_REGIME_PHI * state.d + MARKET_REGIME_SD * np.sqrt(
        1 - MARKET_REGIME_PHI**2) * dz
    return ret, sd


def step(
    rows: Rows,
    u: np.ndarray,
    market_ret: np.ndarray,
    market_sd: np.ndarray,
    sector_ret: np.ndarray,
    leg_drift: np.ndarray,
    v_target: np.ndarray,
    w_target: np.ndarray,
    with_volume: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Advance every row one session; returns (ret, open, high, low, close, volume or None).

    ``u`` is ``draws(...)`` for these rows; the leg arrays are the rows' current legs.
    """
    z, g, n1, n2, e, dv, dw = u
    idio_sd = rows.sigma * np.exp(rows.v)
    sd_now = np.sqrt(idio_sd**2 * rows.h + (rows.beta * market_sd) ** 2 + SECTOR_SD**2)
    shock = np.sqrt(rows.h) * z
    ret = rows.beta * market_ret + sector_ret + rows.drift + leg_drift + idio_sd * shock
    # NSE/BSE price bands: no stock moves more than 20% from the previous close in a session.
    ret = np.clip(ret, -CIRCUIT, CIRCUIT)
    prev = np.exp(rows.x)
    rows.x = rows.x + ret
    close = np.exp(rows.x)
    open_ = prev * np.exp(GAP_SD * sd_now * g)
    band = np.exp(CIRCUIT)
    open_ = np.clip(open_, prev / band, prev * band)
    high = np.minimum(np.maximum(open_, close) * np.exp(WICK_SD * sd_now * np.abs(n1)), prev * band)
    low = np.maximum(np.minimum(open_, close) * np.exp(-WICK_SD * sd_now * np.abs(n2)), prev / band)
    volume = None
    if with_volume:
        surprise = np.minimum(np.abs(ret) / sd_now, 5.0)
        volume = np.exp(rows.level + rows.w + VOLUME_SURPRISE * surprise + VOLUME_NOISE * e)

    rows.h = np.minimum((1 - GARCH_ALPHA - GARCH_BETA) + GARCH_ALPHA * shock**2
                        + GARCH_BETA * rows.h, MAX_H)
    rows.v = rows.v + PULL * (v_target - rows.v) + REGIME_NOISE * dv
    rows.w = rows.w + PULL * (w_target - rows.w) + REGIME_NOISE * dw
    return ret, open_, high, low, close, volume
