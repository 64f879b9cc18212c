"""Deterministic simulated market (SIMULATED DATA, not real companies) for the offline demo.

Rules, all driven by one seed:

* **Calendar**: weekdays from `start` to `end` minus three fixed national holidays
  (26 Jan, 15 Aug, 2 Oct); about 780 sessions for three years.
* **Universe**: `n_stocks` (default 11,000). About 2,000 are listed on both exchanges (NSE
  symbol and BSE code), the rest on BSE only. Symbols are made-up pronounceable words, BSE
  codes sit in the unused 7xxxxx range, ISINs use the `INEZ` issuer prefix with a valid check
  digit, and every name ends in "(simulated)". 12 sectors.
* **Returns**: log return = beta x market factor + sector factor + idiosyncratic noise. The
  market and each stock's noise follow GARCH(1,1) (volatility clustering); per-stock drift,
  beta (0.6-1.4) and idiosyncratic volatility (1.2%-3.2% a day, higher for small caps).
* **Bars**: open gaps from the previous close, high/low stretch beyond the open/close by a
  half-volatility draw; volume is lognormal around a per-stock level (turnover from about
  Rs 5 lakh to Rs 50 crore a day), louder on big moves. About 0.4% of stock-days are missing
  (3% for illiquid names); ~8% of stocks list during the period, ~3% delist (inactive).
* **Planted VCP episodes**: about 30% of stocks get one or two episodes: a prior advance of
  30-90% over 30-60 sessions, then 2-5 contractions, each 40-70% as deep as the one before
  (the first 12-35%), highs near the base high and volume drying up; then a breakout above the
  pivot on heavy volume that succeeds (runs +25-50%) or fails (falls 10-20%). The odds of
  success are logistic in measurable properties plus noise:
  ``z = -0.3 + 2.0*(0.09 - last_depth)/0.05 + 1.2*(0.6 - dryup)/0.25 + 0.8*(advance - 0.6)/0.3
  + N(0, 0.8)``; success when ``U < sigmoid(z)``. So a tighter last contraction, stronger volume
  dry-up and a stronger prior trend (hence RS) help: a real but imperfect signal.
* The episodes are kept in the side table `sim_episodes` for tests only: no feature, model or
  service reads it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from market.store import MarketStore

SECTORS = [
    "Financials", "Information Technology", "Consumer Staples", "Consumer Discretionary",
    "Industrials", "Materials", "Health Care", "Energy", "Utilities", "Real Estate",
    "Communication Services", "Chemicals",
]
HOLIDAYS_MD = {(1, 26), (8, 15), (10, 2)}
DEFAULT_START = date(2023, 11, 1)
DEFAULT_END = date(2026, 10, 30)
SYLLABLES = [
    "ka", "ri", "to", "ven", "sha", "mi", "ra", "dex", "lo", "na", "pra", "ti", "su", "vik",
    "ar", "zen", "mo", "bha", "tek", "li", "go", "dha", "ni", "yan", "kor", "sa", "ve", "ut",
]
NAME_SUFFIXES = ["Industries", "Ltd", "Finance", "Tech", "Pharma", "Motors", "Infra", "Foods"]


@dataclass(frozen=True)
class SimConfig:
    n_stocks: int = 11_000
    n_dual: int = 2_000
    seed: int = 42
    start: date = DEFAULT_START
    end: date = DEFAULT_END
    episode_share: float = 0.30


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
            "_sector_idx": sectors,
            "_listing_idx": listing_idx,
            "_delist_idx": delist_idx,
            "_dual": dual,
            "_symbol": symbols,
        }
    )


def _garch(rng: np.random.Generator, shape: tuple[int, int], sigma: np.ndarray) -> np.ndarray:
    """GARCH(1,1) noise with long-run volatility `sigma` per row (vectorized over rows)."""
    n, t = shape
    alpha, beta = 0.08, 0.90
    omega = sigma**2 * (1 - alpha - beta)
    z = rng.standard_normal((n, t))
    out = np.empty((n, t))
    h = sigma**2
    for j in range(t):
        eps = np.sqrt(h) * z[:, j]
        out[:, j] = eps
        h = omega + alpha * eps**2 + beta * h
    return out


def _plant_episode(
    rng: np.random.Generator, t0: int, t_max: int
) -> dict[str, object] | None:
    """Build one VCP episode's log-price path (relative to its start) and volume multipliers."""
    adv_len = int(rng.integers(30, 61))
    advance = float(rng.uniform(0.30, 0.90))
    n_con = int(rng.choice([2, 3, 4, 5], p=[0.25, 0.4, 0.25, 0.10]))
    depths = [float(rng.uniform(0.12, 0.35))]
    for _ in range(n_con - 1):
        depths.append(depths[-1] * float(rng.uniform(0.40, 0.70)))
    dryup = float(rng.uniform(0.30, 0.95))
    path = list(np.linspace(0, np.log1p(advance), adv_len + 1)[1:])
    vol_mult = list(np.full(adv_len, 1.3))
    top = path[-1]
    starts, lows = [], []
    for i, depth in enumerate(depths):
        down = int(rng.integers(6, 11))
        up = int(rng.integers(6, 11))
        high_here = path[-1]
        low = high_here + np.log(1 - depth)
        starts.append(len(path) - 1)
        lows.append(low)
        # Volume fades from ~1.0 to `dryup` across the contractions.
        frac = i / max(n_con - 1, 1)
        v = 1.0 + (dryup - 1.0) * frac
        path += list(np.linspace(high_here, low, down + 1)[1:])
        vol_mult += [v] * down
        recover = top + np.log(rng.uniform(0.97, 0.995)) if i < n_con - 1 else top + np.log(
            rng.uniform(0.985, 0.998)
        )
        path += list(np.linspace(low, recover, up + 1)[1:])
        vol_mult += [v * 0.9] * up
    breakout_idx = len(path)
    path.append(top + np.log(rng.uniform(1.02, 1.04)))
    vol_mult.append(float(rng.uniform(2.0, 3.2)))
    z = (
        -0.3
        + 2.0 * (0.09 - depths[-1]) / 0.05
        + 1.2 * (0.6 - dryup) / 0.25
        + 0.8 * (advance - 0.6) / 0.3
        + rng.normal(0, 0.8)
    )
    p_success = float(1 / (1 + np.exp(-z)))
    success = bool(rng.random() < p_success)
    if success:
        run_len = int(rng.integers(20, 51))
        gain = float(rng.uniform(0.25, 0.50))
        path += list(path[-1] + np.linspace(0, np.log1p(gain), run_len + 1)[1:])
        vol_mult += [1.5] * run_len
    else:
        run_len = int(rng.integers(5, 21))
        loss = float(rng.uniform(0.10, 0.20))
        path += list(path[-1] + np.linspace(0, np.log(1 - loss), run_len + 1)[1:])
        vol_mult += [1.6] * run_len
    if t0 + len(path) >= t_max:
        # Truncate: a setup still forming (or breaking out) at the end of the data is fine.
        path = path[: t_max - t0 - 1]
        vol_mult = vol_mult[: len(path)]
        if len(path) < adv_len + 10:
            return None
    return {
        "t0": t0,
        "path": np.asarray(path),
        "vol_mult": np.asarray(vol_mult),
        "advance": advance,
        "depths": depths,
        "dryup": dryup,
        "base_start": t0 + adv_len,
        "breakout": t0 + breakout_idx + 1,
        "p_success": p_success,
        "success": success,
        "contraction_starts": [t0 + s + 1 for s in starts],
    }


def simulate(cfg: SimConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Return (master, bars, episodes, days) for the configuration. Pure and deterministic."""
    rng = np.random.default_rng(cfg.seed)
    days = trading_days(cfg.start, cfg.end)
    n, t = cfg.n_stocks, len(days)
    master = _make_master(cfg, rng, days)
    sector = master["_sector_idx"].to_numpy()

    market_sigma = 0.009
    market = _garch(rng, (1, t), np.array([market_sigma]))[0] + 0.0003
    sector_f = rng.normal(0, 0.006, size=(len(SECTORS), t))
    beta = rng.uniform(0.6, 1.4, size=n)
    log_turnover = rng.normal(np.log(3e7), 1.4, size=n)  # Rs per day, median 3 crore
    size_rank = (log_turnover - log_turnover.min()) / np.ptp(log_turnover)
    idio_sigma = 0.032 - 0.020 * size_rank + rng.normal(0, 0.002, size=n)
    idio_sigma = np.clip(idio_sigma, 0.010, 0.035)
    drift = rng.normal(0.0002, 0.0006, size=n)
    idio = _garch(rng, (n, t), idio_sigma)
    rets = beta[:, None] * market[None, :] + sector_f[sector] + idio + drift[:, None]
    vol_mult = np.ones((n, t))

    episodes = []
    chosen = np.flatnonzero(rng.random(n) < cfg.episode_share)
    listing_idx = master["_listing_idx"].to_numpy()
    delist_idx = master["_delist_idx"].to_numpy()
    for i in chosen:
        lo = max(int(listing_idx[i]) + 210, 210)
        hi = int(delist_idx[i]) - 40
        n_ep = 2 if rng.random() < 0.25 else 1
        cursor = lo
        for _ in range(n_ep):
            if cursor >= hi:
                break
            t0 = int(rng.integers(cursor, max(cursor + 1, min(hi, cursor + 300))))
            ep = _plant_episode(rng, t0, min(t, int(delist_idx[i])))
            if ep is None:
                break
            path = ep["path"]
            span = slice(t0 + 1, t0 + 1 + len(path))
            steps = np.diff(np.concatenate([[0.0], path]))
            # Keep the market's moves and a little noise so the shape is not too clean.
            rets[i, span] = steps + beta[i] * market[span] + 0.35 * idio[i, span]
            vol_mult[i, span] = ep["vol_mult"]
            ep["stock"] = int(i)
            episodes.append(ep)
            cursor = t0 + len(path) + 20

    log_p0 = rng.normal(np.log(150), 1.1, size=n)
    log_close = log_p0[:, None] + np.cumsum(rets, axis=1)
    close = np.exp(log_close)
    day_sigma = np.sqrt(np.maximum(idio**2, (0.6 * idio_sigma[:, None]) ** 2))
    prev_close = np.concatenate([close[:, :1] / np.exp(rets[:, :1]), close[:, :-1]], axis=1)
    open_ = prev_close * np.exp(rng.normal(0, 0.3, size=(n, t)) * day_sigma)
    body_hi = np.maximum(open_, close)
    body_lo = np.minimum(open_, close)
    high = body_hi * np.exp(np.abs(rng.normal(0, 0.5, size=(n, t))) * day_sigma)
    low = body_lo * np.exp(-np.abs(rng.normal(0, 0.5, size=(n, t))) * day_sigma)
    shares_level = np.exp(log_turnover) / np.exp(log_p0)
    surprise = np.abs(rets) / idio_sigma[:, None]
    volume = (
        shares_level[:, None]
        * np.exp(0.25 * np.minimum(surprise, 4) + rng.normal(0, 0.35, size=(n, t)))
        * vol_mult
    )
    volume = np.maximum(np.round(volume), 1.0)
    open_, high, low, close = (np.round(a, 2) for a in (open_, high, low, close))
    high = np.maximum.reduce([high, open_, close])
    low = np.minimum.reduce([low, open_, close])

    traded = np.ones((n, t), dtype=bool)
    illiquid = size_rank < 0.1
    miss_p = np.where(illiquid, 0.03, 0.004)
    traded &= rng.random((n, t)) >= miss_p[:, None]
    cols = np.arange(t)
    traded &= cols[None, :] >= listing_idx[:, None]
    traded &= cols[None, :] < delist_idx[:, None]

    sid, col = np.nonzero(traded)
    exchange = np.where(master["_dual"].to_numpy(), "NSE", "BSE")
    bars = pd.DataFrame(
        {
            "isin": master["isin"].to_numpy()[sid],
            "date": days[col],
            "open": open_[sid, col],
            "high": high[sid, col],
            "low": low[sid, col],
            "close": close[sid, col],
            "volume": volume[sid, col],
            "exchange": exchange[sid],
        }
    )
    ep_rows = [
        {
            "isin": master["isin"].iat[ep["stock"]],
            "start_date": pd.Timestamp(days[ep["t0"]]).date(),
            "base_start_date": pd.Timestamp(days[min(ep["base_start"], t - 1)]).date(),
            "breakout_date": pd.Timestamp(days[ep["breakout"]]).date()
            if ep["breakout"] < min(t, int(delist_idx[ep["stock"]]))
            else None,
            "n_contractions": len(ep["depths"]),
            "depths": ",".join(f"{d:.4f}" for d in ep["depths"]),
            "last_depth": ep["depths"][-1],
            "dryup": ep["dryup"],
            "prior_advance": ep["advance"],
            "p_success": ep["p_success"],
            "planned_success": ep["success"],
        }
        for ep in episodes
    ]
    return master, bars, pd.DataFrame(ep_rows), days


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
        with tmp.connect(read_only=False) as con:
            con.execute("BEGIN")
            MarketStore.upsert_stocks(con, master)
            con.register("sim_bars", bars)
            con.execute(
                "INSERT INTO bars SELECT isin, date, open, high, low, close, volume, exchange "
                "FROM sim_bars ORDER BY isin, date"
            )
            con.execute("INSERT INTO calendar SELECT DISTINCT date FROM sim_bars")
            con.unregister("sim_bars")
            con.register("sim_eps", episodes)
            con.execute("CREATE TABLE sim_episodes AS SELECT * FROM sim_eps")
            con.unregister("sim_eps")
            MarketStore.set_meta(
                con,
                source="simulated",
                seed=str(cfg.seed),
                n_stocks=str(cfg.n_stocks),
                simulator="market.simulator v1",
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
