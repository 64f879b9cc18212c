"""Checks of the simulated market against its promises (tests and benchmarks only).

* ``fingerprint_auc``: can generic statistics that say nothing about the pattern tell the
  stock-days inside planted structures from the rest? (ROC-AUC of a gradient-boosted classifier
  on held-out stocks; 0.5 = no tell.)
* ``post_breakout_vol``: daily-return volatility in the 20 sessions after a breakout over the
  volatility before the base, for successes and failures.
* ``oracle_ceiling``: the oracle's per-day precision@k and ROC-AUC among live planted setups.
* ``stylized_facts``: the figures the README compares with published ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from market.store import MarketStore, Panel

FINGERPRINT_FEATURES = (
    "std20_over_atr14", "std60_over_atr14", "range_over_close20", "kurtosis60",
    "volume_autocorr60", "gap_std20",
)
POST_WINDOW = 20


@dataclass
class SimData:
    """The whole simulated store in memory: panel plus the episodes side table."""

    panel: Panel
    episodes: pd.DataFrame

    @classmethod
    def load(cls, store: MarketStore) -> SimData:
        panel = store.load_panel(None, lookback=100_000)
        with store.connect() as con:
            episodes = con.execute("SELECT * FROM sim_episodes").df()
        return cls(panel, episodes)

    def col(self, dates: pd.Series) -> np.ndarray:
        """Panel column of each date (-1 for missing)."""
        d = pd.to_datetime(dates).to_numpy().astype("datetime64[D]")
        idx = np.searchsorted(self.panel.dates, d)
        ok = ~pd.isna(dates).to_numpy()
        return np.where(ok, idx, -1)

    def row(self, isins: pd.Series) -> np.ndarray:
        return np.searchsorted(self.panel.isins, isins.to_numpy())


def _rolling(frame: pd.DataFrame, w: int):
    return frame.rolling(w, min_periods=int(0.8 * w))


def fingerprint_stats(panel: Panel) -> dict[str, np.ndarray]:
    """The generic statistics, [n, T] each, from trailing windows (nothing after the date)."""
    close = pd.DataFrame(panel.close.T)
    prev = close.ffill(limit=5).shift(1)
    r = np.log(close / prev)
    hi, lo = pd.DataFrame(panel.high.T), pd.DataFrame(panel.low.T)
    tr = np.maximum(hi, prev).fillna(hi) - np.minimum(lo, prev).fillna(lo)
    atr = _rolling(tr / close, 14).mean()
    logv = np.log(pd.DataFrame(panel.volume.T))
    gap = np.log(pd.DataFrame(panel.open.T) / prev)
    stats = {
        "std20_over_atr14": _rolling(r, 20).std() / atr,
        "std60_over_atr14": _rolling(r, 60).std() / atr,
        "range_over_close20": _rolling((hi - lo) / close, 20).mean(),
        "kurtosis60": _rolling(r, 60).kurt(),
        "volume_autocorr60": _rolling(logv, 60).corr(logv.shift(1)),
        "gap_std20": _rolling(gap, 20).std(),
    }
    return {k: v.to_numpy().T for k, v in stats.items()}


def structure_mask(data: SimData, kinds: tuple[str, ...] = ("vcp",)) -> np.ndarray:
    """[n, T] True inside planted VCP episodes (by default; look-alikes belong to the rest of
    the market): every planted leg, from the advance's start through the base and the 80
    sessions after it whose drift the base's quality sets."""
    n, t = data.panel.close.shape
    mask = np.zeros((n, t), dtype=bool)
    eps = data.episodes[data.episodes["kind"].isin(kinds)]
    rows = data.row(eps["isin"])
    start = data.col(eps["start_date"])
    end = data.col(eps["end_date"])
    for i, a, b in zip(rows, start, end, strict=True):
        mask[i, max(a, 0):(b + 1 if b >= 0 else t)] = True
    return mask


def fingerprint_auc(data: SimData, step: int = 5, max_rows: int = 400_000, seed: int = 0,
                    first_col: int = 300) -> dict[str, float]:
    """ROC-AUC on held-out stocks of a gradient-boosted classifier on the generic statistics,
    on the sessions from `first_col` on (where planting has reached its steady share)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    stats = fingerprint_stats(data.panel)
    y_full = structure_mask(data)
    n, t = y_full.shape
    cols = np.arange(first_col, t, step)
    X = np.stack([stats[k][:, cols] for k in FINGERPRINT_FEATURES], axis=-1).reshape(-1, 6)
    y = y_full[:, cols].reshape(-1)
    stock = np.repeat(np.arange(n), len(cols))
    ok = np.isfinite(X).all(axis=1)
    X, y, stock = X[ok], y[ok], stock[ok]
    rng = np.random.default_rng(seed)
    if len(y) > max_rows:
        keep = np.sort(rng.choice(len(y), max_rows, replace=False))
        X, y, stock = X[keep], y[keep], stock[keep]
    test_stock = np.asarray(rng.random(n) < 0.5)
    te = test_stock[stock]
    clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)
    clf.fit(X[~te], y[~te])
    auc = float(roc_auc_score(y[te], clf.predict_proba(X[te])[:, 1]))
    return {"roc_auc": auc, "rows": float(len(y)), "structure_share": float(y.mean())}


def post_breakout_vol(data: SimData, before: int = 40) -> dict[str, float]:
    """Median over VCP bases of std(returns, POST_WINDOW sessions after the breakout) / std(the
    `before` sessions before the base), split by the trade's outcome."""
    eps = data.episodes
    eps = eps[eps["breakout_date"].notna() & eps["trade_outcome"].isin(["win", "loss", "timeout"])]
    r = np.diff(np.log(data.panel.close), axis=1, prepend=np.nan)
    rows = data.row(eps["isin"])
    bo = data.col(eps["breakout_date"])
    adv = data.col(eps["start_date"])
    ratios = np.full(len(eps), np.nan)
    for k, (i, b, a) in enumerate(zip(rows, bo, adv, strict=True)):
        post = r[i, b + 1:b + 1 + POST_WINDOW]
        pre = r[i, max(a - before, 0):a]
        if np.isfinite(pre).sum() > 20 and np.isfinite(post).sum() > 1:
            ratios[k] = np.nanstd(post) / np.nanstd(pre)
    win = (eps["trade_outcome"] == "win").to_numpy()
    return {
        "success": float(np.nanmedian(ratios[win])),
        "failure": float(np.nanmedian(ratios[~win])),
        "n_success": float(win.sum()),
        "n_failure": float((~win).sum()),
    }


def live_setups(data: SimData, first_col: int, window: int = 10) -> pd.DataFrame:
    """Planted bases live on each session from `first_col`: the base finished in the last
    `window` sessions and the price has not reached the pivot since. One row per (base, day)."""
    eps = data.episodes[data.episodes["p_oracle"].notna()].reset_index(drop=True)
    rows = data.row(eps["isin"])
    ready = data.col(eps["ready_date"])
    high = data.panel.high
    t = high.shape[1]
    out = []
    for k, (i, rd) in enumerate(zip(rows, ready, strict=True)):
        pivot = eps["pivot"].iat[k]
        for d in range(max(rd, first_col), min(rd + window, t)):
            since = high[i, rd + 1:d + 1]
            if d > rd and np.isfinite(since).any() and np.nanmax(since) >= pivot:
                break
            out.append((k, i, d))
    frame = pd.DataFrame(out, columns=["episode", "row", "col"])
    for key in ("pivot", "stop_floor", "p_oracle", "kind"):
        frame[key] = eps[key].to_numpy()[frame["episode"]]
    return frame


def precision_at_k_by_day(score: np.ndarray, y: np.ndarray, day: np.ndarray, k: int) -> float:
    """Mean over days (with at least k rows) of the hit rate of the day's top k by score."""
    frame = pd.DataFrame({"s": score, "y": y, "d": day})
    per_day = []
    for _, g in frame.groupby("d"):
        if len(g) >= k:
            per_day.append(g.nlargest(k, "s")["y"].mean())
    return float(np.mean(per_day)) if per_day else float("nan")


def oracle_ceiling(data: SimData, share: float = 0.2, k: int = 10) -> dict[str, float]:
    """The oracle ranking live planted setups on each of the last `share` of sessions."""
    from sklearn.metrics import roc_auc_score

    from features.labels import setup_trades

    t = data.panel.close.shape[1]
    first = int(t * (1 - share))
    live = live_setups(data, first)
    p = data.panel
    res = setup_trades(p.open, p.high, p.low, p.close, live["row"].to_numpy(),
                       live["col"].to_numpy(), live["pivot"].to_numpy(),
                       live["stop_floor"].to_numpy())
    y = res.label
    ok = np.isfinite(y)
    live, y = live[ok], y[ok]
    score = live["p_oracle"].to_numpy()
    return {
        f"precision_at_{k}": precision_at_k_by_day(score, y, live["col"].to_numpy(), k),
        "roc_auc": float(roc_auc_score(y, score)),
        "base_rate": float(y.mean()),
        "rows": float(len(y)),
        "days": float(live["col"].nunique()),
        "mean_live_per_day": float(live.groupby("col").size().mean()),
    }


def stylized_facts(panel: Panel) -> dict[str, float]:
    """Per-stock statistics of daily returns and volume over the whole store (stocks with at
    least 200 returns), summarized by their cross-sectional median (and quartiles of vol)."""
    close = pd.DataFrame(panel.close.T)
    r = np.log(close / close.ffill(limit=5).shift(1))
    enough = r.notna().sum() >= 200
    r = r.loc[:, enough]
    logv = np.log(pd.DataFrame(panel.volume.T).loc[:, enough])
    vol = r.std()
    absr = r.abs()
    return {
        "stocks": float(enough.sum()),
        "daily_vol_q1": float(vol.quantile(0.25)),
        "daily_vol_median": float(vol.median()),
        "daily_vol_q3": float(vol.quantile(0.75)),
        "excess_kurtosis_median": float(r.kurt().median()),
        "return_autocorr_lag1_median": float(r.apply(lambda s: s.autocorr(1)).median()),
        "abs_return_autocorr_lag1_median": float(absr.apply(lambda s: s.autocorr(1)).median()),
        "abs_return_autocorr_lag20_median": float(absr.apply(lambda s: s.autocorr(20)).median()),
        "corr_logvolume_absreturn_median": float(logv.corrwith(absr).median()),
    }
