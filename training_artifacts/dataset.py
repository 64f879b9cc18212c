"""Training rows: every VCP setup in the tradeable universe on every sampled session, with the
outcome of its breakout trade.

A row is a (stock, date D) where the detector finds a setup (features/vcp.py), the stock is
scoreable and inside the universe's liquidity and price floors (features/universe.py). Its
label is the breakout trade from D (features/labels.py): win or not, with the realized return,
R, and the fill and exit sessions the trade simulation replays. Only dates whose whole trade
window (entry 10 + hold 60 sessions) lies inside the data are kept, so no label depends on
where the data ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from features import FEATURES, TradeParams, compute_features_all, setup_trades
from features.indicators import ffill
from features.labels import OUTCOMES
from features.universe import Floors, median_traded_value_at
from market.store import Panel


class DatasetError(ValueError):
    """The store cannot give a training set (empty, too short, or no label variety)."""


@dataclass
class SetupRows:
    """Rows of setups; arrays share their first axis. Column indices are panel columns."""

    X: np.ndarray  # [m, 25] float32
    y: np.ndarray  # [m] int8, 1 = the trade won
    date_idx: np.ndarray
    stock_idx: np.ndarray
    outcome: np.ndarray  # index into features.labels.OUTCOMES
    ret: np.ndarray  # realized return of the trade (0 for no fill)
    r_multiple: np.ndarray
    fill_col: np.ndarray  # -1 for no fill
    exit_col: np.ndarray
    fill: np.ndarray
    stop: np.ndarray
    exit_price: np.ndarray
    rs_rating: np.ndarray  # the rule's score
    oracle: np.ndarray  # the simulator's true probability (NaN outside planted bases / real data)
    dates: np.ndarray = field(repr=False)
    isins: np.ndarray = field(repr=False)
    params: TradeParams = field(default_factory=TradeParams)
    counts: dict[str, Any] = field(default_factory=dict)

    _ROW_FIELDS = ("X", "y", "date_idx", "stock_idx", "outcome", "ret", "r_multiple",
                   "fill_col", "exit_col", "fill", "stop", "exit_price", "rs_rating", "oracle")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, mask: np.ndarray) -> SetupRows:
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in self._ROW_FIELDS:
            kw[name] = kw[name][mask]
        return SetupRows(**kw)

    @property
    def base_rate(self) -> float:
        return float(self.y.mean()) if len(self.y) else float("nan")

    def outcome_shares(self) -> dict[str, float]:
        return {name: float(np.mean(self.outcome == k)) for k, name in enumerate(OUTCOMES)}


MIN_SESSIONS = 260 + 70 + 120  # detector history + trade window + room for folds


def build_setups(
    panel: Panel,
    params: TradeParams | None = None,
    floors: Floors | None = None,
    date_step: int = 1,
    oracle: pd.DataFrame | None = None,
    progress=None,
) -> SetupRows:
    params = params or TradeParams()
    floors = floors or Floors()
    n, t = panel.close.shape
    if n == 0 or t < MIN_SESSIONS:
        raise DatasetError(
            f"the store holds {n} stocks over {t} sessions; training needs at least "
            f"{MIN_SESSIONS} sessions (about 260 for the detector's history, "
            f"{params.horizon} for the trade, and room for walk-forward folds). Ingest more "
            "history or run `data demo`."
        )
    step = progress or (lambda *_a, **_k: None)
    last_labelled = t - 1 - params.horizon
    sampled = np.zeros(t, dtype=bool)
    sampled[last_labelled::-date_step] = True  # anchored on the last labelled session
    step("computing features and setups for all dates")
    feats = compute_features_all(panel.open, panel.high, panel.low, panel.close, panel.volume,
                                 dates_mask=sampled, dtype=np.float32)
    cols = feats.columns
    step("applying the universe floors")
    close_ref = ffill(panel.close, 10)
    value = median_traded_value_at(panel.close, panel.volume, cols)
    with np.errstate(invalid="ignore"):
        liquid = value >= floors.min_traded_value
        priced = close_ref[:, cols] >= floors.min_price
    scoreable = feats.scoreable
    setup = feats.vcp_detected & liquid & priced
    counts = {
        "sessions": int(len(cols)),
        "scoreable_per_day": float(scoreable.sum(0).mean()),
        "illiquid_per_day": float((scoreable & ~liquid).sum(0).mean()),
        "below_price_floor_per_day": float((scoreable & liquid & ~priced).sum(0).mean()),
        "tradeable_per_day": float((scoreable & liquid & priced).sum(0).mean()),
        "setups_before_floors_per_day": float(feats.vcp_detected.sum(0).mean()),
        "setups_per_day": float(setup.sum(0).mean()),
        "floors": {"min_traded_value": floors.min_traded_value,
                   "min_price": floors.min_price},
    }
    stock_idx, k = np.nonzero(setup)
    if len(stock_idx) == 0:
        raise DatasetError("no VCP setup in the tradeable universe on any labelled session: "
                           "nothing to learn from (check the universe floors: "
                           "VCP_MIN_TRADED_VALUE, VCP_MIN_PRICE)")
    date_idx = cols[k]
    step(f"labelling {len(stock_idx):,} setups (breakout trades)")
    trades = setup_trades(panel.open, panel.high, panel.low, panel.close, stock_idx, date_idx,
                          feats.pivot[stock_idx, k], feats.stop[stock_idx, k], params)
    y = trades.label
    if np.isnan(y).any():  # cannot happen for dates with a complete window; a guard anyway
        raise DatasetError("a setup's trade window runs past the data")
    y = y.astype(np.int8)
    if y.min() == y.max():
        raise DatasetError(f"every one of the {len(y):,} setups has the same outcome; the data "
                           "cannot teach a classifier")
    rs_col = FEATURES.index("rs_rating")
    X = feats.values[stock_idx, k]
    return SetupRows(
        X=X, y=y, date_idx=date_idx, stock_idx=stock_idx, outcome=trades.outcome,
        ret=trades.ret, r_multiple=trades.r_multiple,
        fill_col=np.where(trades.fill_col >= 0, date_idx + 1 + trades.fill_col, -1),
        exit_col=np.where(trades.exit_col >= 0, date_idx + 1 + trades.exit_col, -1),
        fill=trades.fill, stop=trades.stop, exit_price=trades.exit_price,
        rs_rating=np.nan_to_num(X[:, rs_col].astype(np.float64), nan=0.0),
        oracle=_oracle_scores(oracle, panel, stock_idx, date_idx),
        dates=panel.dates, isins=panel.isins, params=params, counts=counts,
    )


def _oracle_scores(episodes: pd.DataFrame | None, panel: Panel, stock_idx: np.ndarray,
                   date_idx: np.ndarray) -> np.ndarray:
    """The simulator's true probability for setups inside a planted base (its start to 10
    sessions after its end); NaN elsewhere and on real data."""
    out = np.full(len(stock_idx), np.nan)
    if episodes is None or not len(episodes):
        return out
    eps = episodes[episodes["p_oracle"].notna()]
    row = {isin: i for i, isin in enumerate(panel.isins)}
    col = {d: j for j, d in enumerate(pd.to_datetime(panel.dates).date)}
    spans: dict[int, list[tuple[int, int, float]]] = {}
    for isin, a, b, p in zip(eps["isin"], eps["base_start_date"], eps["ready_date"],
                             eps["p_oracle"], strict=True):
        i = row.get(isin)
        a_col, b_col = col.get(pd.Timestamp(a).date()), col.get(pd.Timestamp(b).date())
        if i is not None and a_col is not None and b_col is not None:
            spans.setdefault(i, []).append((a_col, b_col + 10, float(p)))
    for m, (i, d) in enumerate(zip(stock_idx, date_idx, strict=True)):
        for a, b, p in spans.get(int(i), ()):
            if a <= d <= b:
                out[m] = p
                break
    return out
