"""Trade simulation: a portfolio that takes each day's top-k setups by a score.

Each day's ranked setups become buy-stop orders (the breakout trade of features/labels.py,
already settled in the dataset: fill session and price, exit session and price). A filled order
becomes a position if fewer than ``max_positions`` are open and the stock is not already held
or ordered. Position size: ``risk_per_trade`` of equity at risk between the fill and the stop,
at most ``max_weight`` of equity and never more than the cash. Every order pays Indian delivery
costs (training_artifacts/costs.py). Equity is marked to market at each session's close.

Reported per strategy: the net equity curve, CAGR, maximum drawdown, hit rate (winning trades
over filled trades), average net R (net P&L over the rupees at risk), trades and costs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from features.labels import WIN
from training_artifacts.costs import CostModel
from training_artifacts.dataset import SetupRows

SESSIONS_PER_YEAR = 250


@dataclass(frozen=True)
class PortfolioRules:
    top_k: int = 10
    max_positions: int = 10
    risk_per_trade: float = 0.01
    max_weight: float = 0.20
    capital: float = 1e7  # Rs 1 crore

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class SimResult:
    equity: np.ndarray  # [sessions] net equity, marked to market
    dates: np.ndarray
    trades: int
    hit_rate: float
    avg_r: float
    cagr: float
    max_drawdown: float
    costs: float

    def summary(self) -> dict[str, float]:
        return {"trades": float(self.trades), "hit_rate": self.hit_rate, "avg_r": self.avg_r,
                "cagr": self.cagr, "max_drawdown": self.max_drawdown,
                "final_equity": float(self.equity[-1] / self.equity[0]) if len(self.equity)
                else float("nan"), "costs_pct_of_capital": self.costs}


def _stats(equity: np.ndarray) -> tuple[float, float]:
    years = max(len(equity) - 1, 1) / SESSIONS_PER_YEAR
    cagr = float((equity[-1] / equity[0]) ** (1 / years) - 1) if len(equity) > 1 else 0.0
    peak = np.maximum.accumulate(equity)
    return cagr, float((equity / peak - 1).min())


DEFAULT_RULES, DEFAULT_COSTS = PortfolioRules(), CostModel()


def simulate(rows: SetupRows, score: np.ndarray, close: np.ndarray, first: int, last: int,
             rules: PortfolioRules = DEFAULT_RULES, costs: CostModel = DEFAULT_COSTS,
             take_all: bool = False, seed: int = 0) -> SimResult:
    """Replay the strategy from column `first` to `last` (inclusive) of the panel's `close`
    (forward-filled for marking to market). `take_all`: every setup in random order."""
    rng = np.random.default_rng(seed)
    order_key = rng.random(len(rows)) if take_all else -score
    by_day: dict[int, np.ndarray] = {}
    for d in np.unique(rows.date_idx):
        idx = np.flatnonzero(rows.date_idx == d)
        idx = idx[np.argsort(order_key[idx], kind="stable")]
        by_day[int(d)] = idx if take_all else idx[:rules.top_k]
    fills: dict[int, list[int]] = {}
    held_or_ordered: dict[int, int] = {}  # stock -> session its order or position ends
    for d in range(first, last + 1):
        for r in by_day.get(d, ()):
            stock = int(rows.stock_idx[r])
            if held_or_ordered.get(stock, -1) >= d:
                continue
            if rows.fill_col[r] < 0:  # no fill: the order just expires
                held_or_ordered[stock] = d + rows.params.entry_window
                continue
            held_or_ordered[stock] = int(rows.exit_col[r])
            fills.setdefault(int(rows.fill_col[r]), []).append(r)
    cash = rules.capital
    positions: dict[int, tuple[int, float, float]] = {}  # row -> (stock, shares, buy cost)
    mark: dict[int, float] = {}  # row -> last known price (a stock may stop trading)
    exits: dict[int, list[int]] = {}
    equity = np.empty(last - first + 1)
    n_trades, wins, r_sum, paid = 0, 0, 0.0, 0.0
    for j, d in enumerate(range(first, last + 1)):
        for r in exits.pop(d, []):
            stock, shares, buy_cost = positions.pop(r)
            mark.pop(r, None)
            value = shares * float(rows.exit_price[r])
            cost = costs.side(value, buy=False)
            cash += value - cost
            paid += cost
            risk = shares * float(rows.fill[r] - rows.stop[r])
            pnl = value - cost - shares * float(rows.fill[r]) - buy_cost
            n_trades += 1
            wins += int(rows.outcome[r] == WIN)
            r_sum += pnl / risk if risk > 0 else 0.0
        for r, (stock, _, _) in positions.items():
            if np.isfinite(close[stock, d]):
                mark[r] = float(close[stock, d])
        mtm = sum(shares * mark[r] for r, (_, shares, _) in positions.items())
        for r in fills.get(d, []):
            if len(positions) >= rules.max_positions:
                continue
            equity_now = cash + mtm
            fill, stop = float(rows.fill[r]), float(rows.stop[r])
            shares = rules.risk_per_trade * equity_now / max(fill - stop, 1e-9)
            shares = min(shares, rules.max_weight * equity_now / fill)
            cost = costs.side(shares * fill, buy=True)
            if shares * fill + cost > cash:
                shares = max(cash - cost, 0.0) / fill
            if shares <= 0:
                continue
            cost = costs.side(shares * fill, buy=True)
            cash -= shares * fill + cost
            paid += cost
            positions[r] = (int(rows.stock_idx[r]), shares, cost)
            close_now = close[int(rows.stock_idx[r]), d]
            mark[r] = float(close_now) if np.isfinite(close_now) else fill
            exits.setdefault(int(rows.exit_col[r]), []).append(r)
            mtm += shares * mark[r]
        equity[j] = cash + mtm
    cagr, mdd = _stats(equity)
    return SimResult(equity=equity, dates=np.arange(first, last + 1), trades=n_trades,
                     hit_rate=wins / n_trades if n_trades else float("nan"),
                     avg_r=r_sum / n_trades if n_trades else float("nan"), cagr=cagr,
                     max_drawdown=mdd, costs=paid / rules.capital)


def universe_equity(close: np.ndarray, tradeable: np.ndarray, first: int, last: int,
                    capital: float = 1e7) -> np.ndarray:
    """The equal-weight universe: each session's mean return of the stocks tradeable at the
    session before (membership known before the return: no look-ahead), no costs,
    compounded."""
    prev = close[:, first - 1:last]
    cur = close[:, first:last + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(tradeable[:, first - 1:last] & (prev > 0), cur / prev - 1.0, np.nan)
    ok = np.isfinite(r)
    mean = np.where(ok.any(axis=0), np.where(ok, r, 0.0).sum(axis=0) / np.maximum(ok.sum(0), 1),
                    0.0)
    return capital * np.cumprod(1 + mean)


def summarize(name: str, result: SimResult) -> dict[str, Any]:
    return {"strategy": name, **result.summary()}
