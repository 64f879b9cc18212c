"""Deterministic simulated market (SIMULATED DATA, not real companies) for the offline demo.

Everything is driven by one seed. Planted VCP bases differ from the rest of the market only by
their structure: every stock, planted or not, follows the same price and volume process
(``market/sim/process.py``), and a planted base only steers that process's drift, volatility
regime and volume regime (``market/sim/plan.py``).

* **Calendar**: weekdays from `start` to `end` minus three fixed national holidays
  (26 Jan, 15 Aug, 2 Oct): about 1,040 sessions over four years.
* **Universe**: `n_stocks` (default 11,000). About 2,000 are listed on both exchanges (NSE
  symbol and BSE code), the rest on BSE only. Symbols are made-up pronounceable words, BSE
  codes sit in the unused 7xxxxx range, ISINs use the `INEZ` issuer prefix with a valid check
  digit, and every name ends in "(simulated)". 12 sectors. Typical traded value is lognormal
  (median about Rs 60 lakh a day, from a few thousand rupees to hundreds of crores), and smaller
  stocks are more volatile (1.0-3.5% a day idiosyncratic). About 0.4% of stock-days are missing
  (3% for the least liquid tenth); ~8% of stocks list during the period and ~3% delist.
* **Process** (every stock): market factor (GARCH, with a slow bull/bear drift regime), sector
  factors, and an idiosyncratic part with Student-t innovations, GARCH clustering, slow
  volatility, drift and volume regimes; bars and volume from the same mapping for all stocks.
* **Planted structures** (about 0.55 per stock, in sequence): 72% VCP bases (a 30-100% prior
  advance, 2-6 contractions each 40-75% as deep as the one before with volatility and volume
  contracting, highs near the base high, a pivot at the high of the last one), and look-alikes
  that fail the book: widening contractions, bases without volume dry-up, and partial bases
  that break down. Free stocks make natural look-alikes of their own.
* **Breakouts**: after a base the stock keeps following the same process for 80 sessions with a
  drift set by a latent quality ``z`` (``market/sim/plan.py: quality``): a documented function
  of the realized depth of the last contraction, the mean contraction ratio, the volume
  dry-up, the prior advance, the relative-strength percentile and the market regime, plus
  irreducible noise. No path is smoothed or scripted: whether the stock breaks out and whether
  the trade works is left to the noise, so early on a future success and a future failure look
  alike.
* **The oracle**: for each base the side table ``sim_episodes`` records ``p_oracle``, the true
  probability that the breakout trade (``features.labels``: buy-stop at the pivot, +20% target,
  the tighter of the last contraction's low and -8% as the stop, 60 sessions) succeeds, by Monte
  Carlo of the process from the base's last session with its latent state. It is the ceiling
  for any model on this market. Only tests, benchmarks and the training report read it.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from market.sim import process as P
from market.sim.plan import (
    ADV,
    BRK,
    DEC,
    NATURAL_VOL_SD,
    NATURAL_VOLUME_SD,
    POST,
    POST_VOL_LEVEL,
    REC,
    Leg,
    NaturalLegs,
    Structure,
    plan_market,
    post_drift,
    quality,
)
from market.store import MarketStore

SECTORS = [
    "Financials", "Information Technology", "Consumer Staples", "Consumer Discretionary",
    "Industrials", "Materials", "Health Care", "Energy", "Utilities", "Real Estate",
    "Communication Services", "Chemicals",
]
HOLIDAYS_MD = {(1, 26), (8, 15), (10, 2)}
DEFAULT_START = date(2022, 11, 1)
DEFAULT_END = date(2026, 10, 30)
SIMULATOR_VERSION = "market.simulator v2"
SYLLABLES = [
    "ka", "ri", "to", "ven", "sha", "mi", "ra", "dex", "lo", "na", "pra", "ti", "su", "vik",
    "ar", "zen", "mo", "bha", "tek", "li", "go", "dha", "ni", "yan", "kor", "sa", "ve", "ut",
]
NAME_SUFFIXES = ["Industries", "Ltd", "Finance", "Tech", "Pharma", "Motors", "Infra", "Foods"]
BARS_WITHOUT_KEY = """CREATE TABLE bars (isin VARCHAR NOT NULL, date DATE NOT NULL, open DOUBLE,
    high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE, exchange VARCHAR NOT NULL)"""
RS_LOOKBACK = 252
REGIME_LOOKBACK = 63
ADVANCE_LOOKBACK = 126
MIN_AIM = 3
ORACLE_FROM = 250  # sessions of history before any feature, detection or label is used
POST_JUMP = True
BASE_SCALE = (0.7, 1.5)  # a base's depths scale with its volatility regime, within these


@dataclass(frozen=True)
class SimConfig:
    n_stocks: int = 11_000
    n_dual: int = 2_000
    seed: int = 42
    start: date = DEFAULT_START
    end: date = DEFAULT_END
    structures_per_stock: float = 1.2
    oracle_paths: int = 64


def trading_days(start: date, end: date) -> np.ndarray:
    days = pd.bdate_range(start, end)
    keep = [(d.month, d.day) not in HOLIDAYS_MD for d in days]
    return days[keep].values.astype("datetime64[D]")


def _isin_check_digit(body: str) -> str:
    digits = "".join(str(int(ch, 36)) for ch in body)
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def _make_master(cfg: SimConfig, rng: np.random.Generator, days: np.ndarray) -> pd.DataFrame:
    n = cfg.n_stocks
    alnum = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    symbols: list[str] = []
    seen: set[str] = set()
    while len(symbols) < n:
        k = rng.integers(2, 4)
        word = "".join(rng.choice(SYLLABLES, size=k)).upper()
        if len(word) < 4 or word in seen:
            word = word + str(rng.integers(10, 99))
        if word in seen or len(word) > 10:
            continue
        seen.add(word)
        symbols.append(word)
    # Issuer codes "Z" + 3 base-36 chars from a permutation: unique, and not real issuers.
    issuer_ids = rng.permutation(36**3)[:n]
    isins = []
    for k in issuer_ids:
        issuer = "Z" + "".join(alnum[(k // 36**p) % 36] for p in (2, 1, 0))
        body = f"INE{issuer}0101"
        isins.append(body + _isin_check_digit(body))
    dual = np.zeros(n, dtype=bool)
    dual[rng.choice(n, size=min(cfg.n_dual, n), replace=False)] = True
    bse_codes = [f"{700001 + i:06d}" for i in range(n)]
    sectors = rng.integers(0, len(SECTORS), size=n)
    suffix = rng.choice(NAME_SUFFIXES, size=n)
    # Listings during the period (~8%) start later; delistings (~3%) stop early.
    listing_idx = np.zeros(n, dtype=int)
    late = rng.random(n) < 0.08
    listing_idx[late] = rng.integers(20, len(days) - 30, size=late.sum())
    delist_idx = np.full(n, len(days), dtype=int)
    gone = (rng.random(n) < 0.03) & ~late
    delist_idx[gone] = rng.integers(300, len(days) - 20, size=gone.sum())
    return pd.DataFrame(
        {
            "isin": isins,
            "nse_symbol": [s if d else None for s, d in zip(symbols, dual, strict=True)],
            "bse_code": bse_codes,
            "name": [
                f"{s.title()} {x} (simulated)" for s, x in zip(symbols, suffix, strict=True)
            ],
            "sector": [SECTORS[k] for k in sectors],
            "listing_date": [pd.Timestamp(days[i]).date() for i in listing_idx],
            "active": delist_idx >= len(days),
            "delisting_date": [pd.Timestamp(days[i]).date() if i < len(days) else None
                               for i in delist_idx],
            "_sector_idx": sectors,
            "_listing_idx": listing_idx,
            "_delist_idx": delist_idx,
            "_dual": dual,
        }
    )


class _Legs:
    """Every stock's current leg: its free clock (``NaturalLegs``) and, on planted stocks, the
    structure's legs, which start and end on schedule and re-aim their drift at the free
    clock's leg changes."""

    def __init__(self, structures: list[Structure], sigma: np.ndarray, n_sessions: int,
                 rng: np.random.Generator):
        self.starts: dict[int, list[tuple[Structure, Leg]]] = defaultdict(list)
        self.reaims: dict[int, list[int]] = defaultdict(list)
        for s in structures:
            for leg in s.legs:
                if leg.start < n_sessions:
                    self.starts[leg.start].append((s, leg))
                if leg.kind != POST:  # also re-aim half- and three-quarters-way
                    for t in {leg.start + leg.length // 2, leg.start + 3 * leg.length // 4}:
                        if leg.start < t < leg.end - 1:
                            self.reaims[t].append(s.stock)
        n = len(sigma)
        self.rng = rng
        self.natural = NaturalLegs(rng, sigma)
        self.planted = np.zeros(n, dtype=bool)
        self.p_drift, self.v_off, self.w_off = np.zeros(n), np.zeros(n), np.zeros(n)
        self.target = np.full(n, np.nan)
        self.p_end = np.zeros(n, dtype=np.int64)
        self.drift, self.v_target, self.w_target = np.zeros(n), np.zeros(n), np.zeros(n)

    def advance(self, t: int, sim: _Simulation) -> None:
        self.planted &= self.p_end > t
        for s, leg in self.starts.get(t, ()):
            self._begin(s, leg, t, sim)
        changed = self.natural.tick(t, self.rng)
        # Planted legs re-aim from where the stock really is when the free clock changes leg
        # and half- and three-quarters-way; never over fewer than MIN_AIM sessions (no jump).
        changed = np.union1d(changed, np.asarray(self.reaims.get(t, []), dtype=np.int64))
        re = changed[self.planted[changed] & np.isfinite(self.target[changed])]
        self.p_drift[re] = (self.target[re] - sim.rows.x[re]) / np.maximum(self.p_end[re] - t,
                                                                           MIN_AIM)
        nat = self.natural
        # Base legs replace the free drift with their aimed one; after the base the quality's
        # drift is a bias on the free legs, which go on varying as any stock's do.
        after_base = self.planted & ~np.isfinite(self.target)
        self.drift = np.where(self.planted, self.p_drift, nat.drift)
        self.drift[after_base] += nat.drift[after_base]
        self.v_target = nat.v + np.where(self.planted, self.v_off, 0.0)
        self.w_target = nat.w + np.where(self.planted, self.w_off, 0.0)

    def _begin(self, s: Structure, leg: Leg, t: int, sim: _Simulation) -> None:
        i = s.stock
        x = float(sim.rows.x[i])
        r = s.realized
        # A contraction is measured from the highest high before it, as a chart reader sees it.
        peak = float(np.log(np.max(sim.high[i, r.get("leg_start", t - 1):t]))) if t else x
        r["leg_start"] = t
        if leg.kind == ADV:
            r["x_start"] = x
            target = x + np.log1p(leg.param)
        elif leg.kind == DEC:
            if "x_top" not in r:  # the base starts: its depths follow the stock's volatility now
                r["x_top"] = peak
                r["scale"] = float(np.clip(np.exp(sim.rows.v[i]), *BASE_SCALE))
            r["x_last_start"] = peak
            target = peak + np.log(1 - min(leg.param * r["scale"], 0.45))
        elif leg.kind == REC:
            if leg.ref == "half":
                r["x_first_low"] = x
                target = x + leg.param * (r["x_top"] - x)
            else:
                ref = r["x_top"] if leg.ref == "top" else r["x_last_start"]
                target = ref + np.log(1 - (1 - leg.param) * r["scale"])
        elif leg.kind == BRK:
            target = r["x_first_low"] + np.log(1 - leg.param * r["scale"])
        else:  # POST: the base is done; its realized shape sets the drift
            obs = sim.observe(s, t)
            z = quality(obs, s.noise)
            r.update(obs, z=z, post_drift=post_drift(z))
            if POST_JUMP:  # the base's calm ends with it: volatility jumps back
                sim.rows.v[i] = self.natural.v[i] + POST_VOL_LEVEL
            sim.snapshot(s, self.natural.take(np.array([i]), t))
            self._set(i, leg, r["post_drift"], np.nan)
            return
        self._set(i, leg, (target - x) / leg.length, target)

    def _set(self, i: int, leg: Leg, drift: float, target: float) -> None:
        self.planted[i] = True
        self.p_drift[i], self.target[i], self.p_end[i] = drift, target, leg.end
        self.v_off[i], self.w_off[i] = leg.v_target, leg.w_target


class _Simulation:
    """The main run: every stock, session by session, with the arrays it produces."""

    def __init__(self, cfg: SimConfig, rng: np.random.Generator, master: pd.DataFrame,
                 n_sessions: int):
        n = cfg.n_stocks
        self.rng, self.n, self.t_total = rng, n, n_sessions
        self.sector = master["_sector_idx"].to_numpy()
        self.listing = master["_listing_idx"].to_numpy()
        # Traded value per day: lognormal, median about Rs 60 lakh; small stocks move more.
        log_turnover = rng.normal(np.log(6e6), 1.6, size=n)
        size_rank = (log_turnover - log_turnover.min()) / np.ptp(log_turnover)
        sigma = np.clip(0.028 - 0.016 * size_rank + rng.normal(0, 0.002, size=n), 0.009, 0.035)
        log_p0 = rng.normal(np.log(150), 1.1, size=n)
        self.size_rank = size_rank
        self.rows = P.Rows(
            beta=rng.uniform(0.6, 1.4, size=n),
            sigma=sigma,
            drift=rng.normal(0.0001, 0.0002, size=n),
            level=log_turnover - log_p0,
            x=log_p0,
            h=np.ones(n),
            v=rng.normal(0, NATURAL_VOL_SD, size=n),
            w=rng.normal(0, NATURAL_VOLUME_SD, size=n),
        )
        self.market = P.Market(np.array([P.MARKET_SIGMA**2]), np.array([0.0]))
        shape = (n, n_sessions)
        self.open, self.high, self.low, self.close, self.volume = (
            np.empty(shape) for _ in range(5)
        )
        self.market_index = np.zeros(n_sessions)
        self.snapshots: dict[int, tuple[P.Rows, P.Market, NaturalLegs]] = {}
        self._rs_cache: tuple[int, np.ndarray] | None = None
        self.t = 0

    def run(self, legs: _Legs) -> None:
        level = 0.0
        for t in range(self.t_total):
            self.t = t
            legs.advance(t, self)
            u = P.draws(self.rng, self.n)
            mz = self.rng.standard_normal(2)
            m_ret, m_sd = P.market_step(self.market, mz[:1], mz[1:])
            sector_ret = self.rng.normal(0, P.SECTOR_SD, len(SECTORS))[self.sector]
            _, o, h, lo, c, v = P.step(
                self.rows, u, m_ret, m_sd, sector_ret, legs.drift, legs.v_target, legs.w_target
            )
            self.open[:, t], self.high[:, t], self.low[:, t] = o, h, lo
            self.close[:, t], self.volume[:, t] = c, v
            level += float(m_ret[0])
            self.market_index[t] = level

    def _rs_pct(self, t: int) -> np.ndarray:
        """Percentile (0-1) of each stock's RS_LOOKBACK-session return at the last close."""
        if self._rs_cache is not None and self._rs_cache[0] == t:
            return self._rs_cache[1]
        last, first = t - 1, max(t - 1 - RS_LOOKBACK, 0)
        pct = np.full(self.n, np.nan)
        if last > first:
            ok = self.listing <= first
            ret = np.log(self.close[ok, last] / self.close[ok, first])
            pct[ok] = (np.argsort(np.argsort(ret)) + 0.5) / ok.sum()
        self._rs_cache = (t, pct)
        return pct

    def observe(self, s: Structure, t: int) -> dict[str, float]:
        """The base's realized observables at its last session (t - 1), as a screener sees them."""
        i, ready = s.stock, t - 1
        hi, lo, vol = self.high[i], self.low[i], self.volume[i]
        depths = []
        for dec, rec in s.contraction_legs:
            a, b = max(dec.start - 1, 0), min(rec.end, t)
            depths.append(1.0 - lo[a:b].min() / hi[a:b].max())
        last_dec = s.contraction_legs[-1][0]
        a = max(last_dec.start - 1, 0)
        pivot = float(hi[a:t].max())
        floor_ = float(lo[last_dec.start:t].min())
        ratios = [b / a for a, b in zip(depths, depths[1:], strict=False) if a > 0]
        base_vol = vol[max(0, t - 50):t].mean()
        regime_first = ready - REGIME_LOOKBACK
        return {
            "pivot": pivot,
            "stop_floor": floor_,
            "pivot_col": float(a + int(np.argmax(hi[a:t]))),
            "last_depth": 1.0 - floor_ / pivot,
            "contraction_ratio": float(np.mean(ratios)) if ratios else np.nan,
            "dryup": float(vol[last_dec.start:t].mean() / base_vol),
            "prior_advance": self._advance(i, s.legs[0]),
            "rs_pct": float(self._rs_pct(t)[i]),
            "market_regime": float(
                (self.market_index[ready] - self.market_index[regime_first])
                / (P.MARKET_SIGMA * np.sqrt(REGIME_LOOKBACK))
            ) if regime_first >= 0 else 0.0,
            "realized_depths": depths,  # type: ignore[dict-item]
        }

    def _advance(self, i: int, adv: Leg) -> float:
        """The advance into the base as the detector measures it: the peak high over the
        lowest low of the ADVANCE_LOOKBACK sessions before it."""
        top = adv.start + int(np.argmax(self.high[i, adv.start:adv.end]))
        return float(self.high[i, top] / self.low[i, max(top - ADVANCE_LOOKBACK, 0):top + 1].min()
                     - 1.0)

    def snapshot(self, s: Structure, natural: NaturalLegs) -> None:
        idx = np.array([s.stock])
        self.snapshots[id(s)] = (self.rows.copy_rows(idx), self.market.copy_rows(np.array([0])),
                                 natural)


def _oracle(structures: list[Structure], sim: _Simulation, paths: int, seed: int,
            chunk: int = 400) -> None:
    """p_oracle of every base whose breakout lies inside the data: Monte Carlo of the same
    process from the base's last session (its own state, a fresh market), then the trade."""
    from features.labels import TradeParams, breakout_trades

    params = TradeParams()
    # Bases that end before the features' warm-up are never evaluated; look-alikes need less
    # precision than VCPs (they only fill the oracle's lower ranks).
    todo = [s for s in structures if id(s) in sim.snapshots and (s.ready or 0) >= ORACLE_FROM]
    rng = np.random.default_rng([seed, 1])
    for c0 in range(0, len(todo), chunk):
        part = todo[c0:c0 + chunk]
        n_paths = np.array([paths if s.kind == "vcp" else paths // 2 for s in part])
        rep = np.repeat(np.arange(len(part)), n_paths)
        snaps = [sim.snapshots[id(s)] for s in part]
        rows = P.Rows(**{
            k: np.concatenate([getattr(r, k) for r, _, _ in snaps])[rep]
            for k in P.Rows.__dataclass_fields__
        })
        market = P.Market(np.concatenate([m.h for _, m, _ in snaps])[rep],
                          np.concatenate([m.d for _, m, _ in snaps])[rep])
        natural = NaturalLegs.concat([nat for _, _, nat in snaps], rep)
        drift = np.array([s.realized["post_drift"] for s in part])[rep]
        m = len(rep)
        bars = np.empty((4, m, params.horizon))
        for j in range(params.horizon):
            natural.tick(j, rng)  # the free clock runs on under the POST leg, as in the run
            v_t, w_t = natural.v + POST_VOL_LEVEL, natural.w
            u = P.draws(rng, m)
            mz = rng.standard_normal((2, m), dtype=np.float32)
            m_ret, m_sd = P.market_step(market, mz[0], mz[1])
            sector = P.SECTOR_SD * rng.standard_normal(m, dtype=np.float32)
            _, o, h, lo, c, _ = P.step(rows, u, m_ret, m_sd, sector, drift + natural.drift,
                                       v_t, w_t, with_volume=False)
            bars[:, :, j] = o, h, lo, c
        pivot = np.array([s.realized["pivot"] for s in part])[rep]
        floor_ = np.array([s.realized["stop_floor"] for s in part])[rep]
        res = breakout_trades(bars[0], bars[1], bars[2], bars[3], pivot, floor_, params)
        wins = np.bincount(rep, weights=res.label, minlength=len(part))
        for s, w, k in zip(part, wins, n_paths, strict=True):
            s.realized["p_oracle"] = float(w / k)


def _finish_bars(sim: _Simulation, master: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Round to the tick, keep bars consistent, and mark the stock-days that traded."""
    for a in (sim.open, sim.high, sim.low, sim.close):
        np.round(a, 2, out=a)
        np.maximum(a, 0.01, out=a)
    np.maximum.reduce([sim.high, sim.open, sim.close], out=sim.high)
    np.minimum.reduce([sim.low, sim.open, sim.close], out=sim.low)
    np.maximum(np.round(sim.volume), 1.0, out=sim.volume)
    n, t = sim.close.shape
    miss_p = np.where(sim.size_rank < 0.1, 0.03, 0.004)
    traded = rng.random((n, t)) >= miss_p[:, None]
    cols = np.arange(t)
    traded &= cols[None, :] >= master["_listing_idx"].to_numpy()[:, None]
    traded &= cols[None, :] < master["_delist_idx"].to_numpy()[:, None]
    return traded


def _episode_table(structures: list[Structure], master: pd.DataFrame, days: np.ndarray,
                   bars: list[np.ndarray]) -> pd.DataFrame:
    """The side table: one row per planted structure, with its realized shape, the oracle's
    probability and how its breakout trade (from the base's last session) really went."""
    from features.labels import OUTCOMES, setup_trades

    t_total = len(days)

    def day(col: float | int | None):
        if col is None or not np.isfinite(col) or col < 0 or col >= t_total:
            return None
        return pd.Timestamp(days[int(col)]).date()

    records = []
    for s in structures:
        r = s.realized
        ready = s.ready
        rec: dict[str, object] = {
            "isin": master["isin"].iat[s.stock],
            "kind": s.kind,
            "start_date": day(s.t0),
            "base_start_date": day(s.legs[1].start - 1),
            "ready_date": day(ready) if ready is not None else None,
            "end_date": day(min(s.end, t_total) - 1),
            "pivot_date": day(r.get("pivot_col")),
            "breakout_date": None,
            "n_contractions": len(s.depths),
            "depths": ",".join(f"{d:.4f}" for d in s.depths),
            "realized_depths": ",".join(f"{d:.4f}" for d in r.get("realized_depths", [])),
            "planned_dryup": s.dryup,
            "planned_advance": s.advance,
        }
        for key in ("pivot", "stop_floor", "last_depth", "contraction_ratio", "dryup",
                    "prior_advance", "rs_pct", "market_regime", "z", "post_drift", "p_oracle"):
            rec[key] = r.get(key)
        rec["trade_outcome"] = None
        rec["trade_return"] = None
        records.append(rec)
    table = pd.DataFrame.from_records(records)
    # The real trade from each finished base's last session, all in one call.
    done = [k for k, s in enumerate(structures)
            if "pivot" in s.realized and s.ready is not None and s.ready < t_total - 1]
    if done:
        rows = np.array([structures[k].stock for k in done])
        ready_cols = np.array([structures[k].ready for k in done])
        pivot = np.array([structures[k].realized["pivot"] for k in done])
        floor_ = np.array([structures[k].realized["stop_floor"] for k in done])
        res = setup_trades(bars[0], bars[1], bars[2], bars[3], rows, ready_cols, pivot, floor_)
        known = res.outcome >= 0
        idx = np.array(done)
        table.loc[idx[known], "trade_outcome"] = np.array(OUTCOMES, dtype=object)[
            res.outcome[known]]
        table.loc[idx[known], "trade_return"] = res.ret[known]
        close = bars[3]
        after = np.arange(1, 11)
        cols = np.minimum(ready_cols[:, None] + after[None, :], t_total - 1)
        above = (close[rows[:, None], cols] > pivot[:, None]) & (
            ready_cols[:, None] + after[None, :] < t_total)
        hit = above.any(axis=1)
        table.loc[idx[hit], "breakout_date"] = [
            day(int(rd + 1 + np.argmax(a)))
            for rd, a in zip(ready_cols[hit], above[hit], strict=True)]
    return table


def simulate(cfg: SimConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Return (master, bars, episodes, days) for the configuration. Pure and deterministic."""
    rng = np.random.default_rng(cfg.seed)
    days = trading_days(cfg.start, cfg.end)
    master = _make_master(cfg, rng, days)
    sim = _Simulation(cfg, rng, master, len(days))
    structures = plan_market(rng, master["_listing_idx"].to_numpy(),
                             master["_delist_idx"].to_numpy(), sim.rows.sigma, len(days),
                             cfg.structures_per_stock)
    sim.run(_Legs(structures, sim.rows.sigma, len(days), rng))
    _oracle(structures, sim, cfg.oracle_paths, cfg.seed)
    traded = _finish_bars(sim, master, rng)
    masked = [np.where(traded, a, np.nan) for a in (sim.open, sim.high, sim.low, sim.close)]
    episodes = _episode_table(structures, master, days, masked)
    del masked
    sid, col = np.nonzero(traded)
    exchange = pd.Categorical.from_codes(master["_dual"].to_numpy().astype(np.int8)[sid],
                                         categories=["BSE", "NSE"])
    bars = pd.DataFrame(
        {
            "isin": pd.Categorical.from_codes(sid, categories=master["isin"].to_numpy()),
            "date": days[col],
            "open": sim.open[sid, col],
            "high": sim.high[sid, col],
            "low": sim.low[sid, col],
            "close": sim.close[sid, col],
            "volume": sim.volume[sid, col],
            "exchange": exchange,
        }
    )
    return master, bars, episodes, days


def build_demo_store(path: Path, cfg: SimConfig, progress=None) -> dict[str, object]:
    """Generate the simulated market and write it as a new DuckDB file, atomically.

    The file is built beside the target and renamed into place, so a crash leaves no
    half-written store and readers see either the old file or the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    step = progress or (lambda _msg: None)
    step("simulating prices")
    master, bars, episodes, days = simulate(cfg)
    step(f"writing {len(bars):,} bars")
    fd, tmp_name = tempfile.mkstemp(prefix=".market-", suffix=".duckdb", dir=path.parent)
    os.close(fd)
    os.unlink(tmp_name)  # DuckDB wants to create the file itself
    tmp = MarketStore(tmp_name)
    try:
        # The simulated store is written once and never upserted (ingest refuses it), so its
        # bars table goes without the (isin, date) key, whose index would double the write.
        with duckdb.connect(tmp_name) as con:
            con.execute(BARS_WITHOUT_KEY)
        with tmp.connect(read_only=False) as con:
            con.execute("BEGIN")
            MarketStore.upsert_stocks(con, master)
            con.register("sim_delisted", master.loc[master["delisting_date"].notna(),
                                                    ["isin", "delisting_date"]])
            con.execute("UPDATE stocks SET delisting_date = d.delisting_date FROM sim_delisted d "
                        "WHERE stocks.isin = d.isin")
            con.unregister("sim_delisted")
            con.register("sim_bars", bars)
            con.execute(
                "INSERT INTO bars SELECT isin::VARCHAR, date, open, high, low, close, volume, "
                "exchange::VARCHAR FROM sim_bars"
            )
            con.execute("INSERT INTO calendar SELECT UNNEST(?::DATE[])",
                        [[pd.Timestamp(d).date() for d in days]])
            con.unregister("sim_bars")
            con.register("sim_eps", episodes)
            con.execute("CREATE TABLE sim_episodes AS SELECT * FROM sim_eps")
            con.unregister("sim_eps")
            MarketStore.set_meta(
                con,
                source="simulated",
                seed=str(cfg.seed),
                n_stocks=str(cfg.n_stocks),
                simulator=SIMULATOR_VERSION,
                start=str(cfg.start),
                end=str(cfg.end),
            )
            con.execute("COMMIT")
            con.execute("CHECKPOINT")
        os.replace(tmp_name, path)
    finally:
        for leftover in (tmp_name, tmp_name + ".wal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return {"stocks": len(master), "bars": len(bars), "episodes": len(episodes),
            "sessions": len(days)}
