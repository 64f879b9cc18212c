"""How models are judged: purged walk-forward folds, a sealed final holdout, metrics among
setups with date-block bootstrap confidence intervals, and confidence thresholds.

* **Holdout**: the last ``HOLDOUT_SHARE`` of the labelled sessions. ``split_holdout`` seals it:
  everything that chooses (features, hyperparameters, calibration, thresholds) sees only the
  development rows; the holdout is opened once, to judge the finished model (``Sealed.open``
  refuses a second read). Rows in the ``horizon`` sessions before it are dropped (purge), so no
  development label overlaps the holdout's trades.
* **Walk-forward**: expanding folds over the development dates, each trained on rows dated at
  or before ``test_start - horizon - 1``.
* **Metrics among setups**: ROC-AUC and Brier over rows; per-day precision@k for k = 5, 10, 20
  (the mean, over days with at least k setups, of the hit rate of the day's top k).
* **Confidence intervals**: 95% percentile intervals from a bootstrap that resamples blocks of
  ``BLOCK`` consecutive sessions (setups persist for days, so rows are not independent).
  Differences between scorers use the same resampled blocks (paired).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

HOLDOUT_SHARE = 0.20
BLOCK = 10
BOOTSTRAP = 400
KS = (5, 10, 20)

T = TypeVar("T")


@dataclass(frozen=True)
class Fold:
    """Date-index ranges (inclusive) on the trading calendar."""

    number: int
    train_end: int  # last date index whose row may be trained on
    test_start: int
    test_end: int

    def to_dict(self) -> dict[str, int]:
        return {"fold": self.number, "train_end": self.train_end,
                "test_start": self.test_start, "test_end": self.test_end}


class HoldoutAlreadyRead(RuntimeError):
    """The final holdout was opened a second time: it would no longer be a holdout."""


class Sealed(Generic[T]):
    """A value that can be read once."""

    def __init__(self, value: T, description: str):
        self._value: T | None = value
        self.description = description
        self.opened = False

    def open(self) -> T:
        if self.opened or self._value is None:
            raise HoldoutAlreadyRead(f"{self.description} was already read once")
        self.opened = True
        value, self._value = self._value, None
        return value


def holdout_start(date_idx: np.ndarray, share: float = HOLDOUT_SHARE) -> int:
    """First date index of the holdout: the last `share` of the labelled sessions."""
    days = np.unique(date_idx)
    return int(days[int(np.floor(len(days) * (1 - share)))])


def purged_walk_forward(
    first: int, last: int, n_folds: int, horizon: int, min_train: int
) -> list[Fold]:
    """Expanding-window folds over date indices [first, last]; training stops at
    test_start - horizon - 1, so no training label overlaps the test period."""
    if last - first + 1 < min_train + n_folds * 5:
        raise ValueError(
            f"{last - first + 1} labelled dates are too few for {n_folds} folds after "
            f"{min_train} training dates"
        )
    edges = np.linspace(first + min_train, last + 1, n_folds + 1).astype(int)
    return [Fold(k + 1, int(edges[k]) - horizon - 1, int(edges[k]), int(edges[k + 1]) - 1)
            for k in range(n_folds)]


# -- metrics ---------------------------------------------------------------------------------
def precision_at_k(score: np.ndarray, y: np.ndarray, day: np.ndarray, k: int) -> float:
    """Mean over days with at least k rows of the hit rate of the day's top k by score."""
    order = np.lexsort((-score, day))
    d = day[order]
    starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
    sizes = np.diff(np.r_[starts, len(d)])
    rank = np.arange(len(d)) - np.repeat(starts, sizes)
    full = np.repeat(sizes >= k, sizes)
    top = order[(rank < k) & full]
    if not len(top):
        return float("nan")
    _, inv = np.unique(day[top], return_inverse=True)
    return float((np.bincount(inv, weights=y[top]) / np.bincount(inv)).mean())


def metrics(y: np.ndarray, score: np.ndarray, day: np.ndarray,
            probability: bool = True) -> dict[str, float]:
    y = np.asarray(y, dtype=float)
    out: dict[str, float] = {"rows": float(len(y)), "days": float(len(np.unique(day))),
                             "base_rate": float(y.mean()) if len(y) else float("nan")}
    both = 0 < y.sum() < len(y)
    out["roc_auc"] = float(roc_auc_score(y, score)) if both else float("nan")
    out["brier"] = (float(brier_score_loss(y, np.clip(score, 0, 1))) if probability and len(y)
                    else float("nan"))
    for k in KS:
        out[f"precision_at_{k}"] = precision_at_k(score, y, day, k)
    return out


def _blocks(day: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Block id of every row and the list of block ids (blocks of `block` distinct days)."""
    days, inv = np.unique(day, return_inverse=True)
    ids = np.arange(len(days)) // block
    return ids[inv], np.unique(ids)


def bootstrap(
    fn: Callable[[np.ndarray], dict[str, float]], day: np.ndarray, n: int = BOOTSTRAP,
    block: int = BLOCK, seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% intervals of each value `fn(row index)` returns, over date-block resamples."""
    row_block, blocks = _blocks(day, block)
    by_block = [np.flatnonzero(row_block == b) for b in blocks]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n):
        pick = rng.choice(len(blocks), len(blocks), replace=True)
        idx = np.concatenate([by_block[b] for b in pick])
        for key, value in fn(idx).items():
            draws.setdefault(key, []).append(value)
    out = {}
    for k, v in draws.items():
        arr = np.asarray(v, dtype=float)
        arr = arr[np.isfinite(arr)]  # precision@k is undefined on resamples without k setups
        out[k] = ((float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5)))
                  if len(arr) else (float("nan"), float("nan")))
    return out


def judge(
    y: np.ndarray, day: np.ndarray, scores: dict[str, np.ndarray],
    probabilities: tuple[str, ...] = ("model",), seed: int = 0,
    against: str | None = "rule",
) -> dict[str, Any]:
    """Metrics of every scorer with 95% intervals, and the model minus `against` (paired)."""
    names = list(scores)
    keys = ["roc_auc", "brier"] + [f"precision_at_{k}" for k in KS]

    def all_metrics(idx: np.ndarray) -> dict[str, float]:
        out = {}
        for name in names:
            m = metrics(y[idx], scores[name][idx], day[idx], name in probabilities)
            out.update({f"{name}:{k}": m[k] for k in keys})
        if against in scores and "model" in scores:
            for k in keys[2:] + ["roc_auc"]:
                out[f"model-{against}:{k}"] = out[f"model:{k}"] - out[f"{against}:{k}"]
        return out

    point = all_metrics(np.arange(len(y)))
    ci = bootstrap(all_metrics, day, seed=seed)
    result: dict[str, Any] = {}
    for name in names:
        m: dict[str, Any] = dict(metrics(y, scores[name], day, name in probabilities))
        m["ci95"] = {k: ci[f"{name}:{k}"] for k in keys}
        result[name] = m
    if against in scores and "model" in scores:
        diff: dict[str, Any] = {k: point[f"model-{against}:{k}"] for k in keys[2:] + ["roc_auc"]}
        diff["ci95"] = {k: ci[f"model-{against}:{k}"] for k in keys[2:] + ["roc_auc"]}
        result[f"model_minus_{against}"] = diff
    return result


# -- confidence levels -----------------------------------------------------------------------
THRESHOLD_RULE = (
    "HIGH: the lowest calibrated probability above which out-of-sample precision is at least "
    "50% and at least 1.5x the setups' base rate; MEDIUM: at least 1.2x the base rate; LOW: "
    "the other setups; NONE: no setup. At least 30 out-of-sample rows behind each level."
)


def choose_thresholds(y: np.ndarray, p: np.ndarray, min_rows: int = 30) -> dict[str, Any]:
    """Confidence cut-offs from out-of-sample calibrated probabilities of setups, with the
    precision behind each. A level nobody reaches gets a cut-off above 1 (never given)."""
    y = np.asarray(y, dtype=float)
    base = float(y.mean())
    order = np.argsort(-p, kind="stable")
    hits = np.cumsum(y[order])
    count = np.arange(1, len(y) + 1)
    precision = hits / count
    p_sorted = p[order]
    # Only cut where the probability steps down, so a cut-off never splits tied rows.
    at_step = np.r_[p_sorted[1:] < p_sorted[:-1], True]

    def level(target: float) -> dict[str, float]:
        ok = (precision >= target) & (count >= min_rows) & at_step
        if not ok.any():
            return {"threshold": 1.01, "precision": float("nan"), "rows": 0}
        i = int(np.flatnonzero(ok)[-1])  # the most rows that still meet the target
        return {"threshold": float(p_sorted[i]), "precision": float(precision[i]),
                "rows": int(count[i])}

    high = level(max(0.5, 1.5 * base))
    medium = level(1.2 * base)
    if medium["threshold"] > high["threshold"]:
        medium = dict(high)
    return {"HIGH": high["threshold"], "MEDIUM": medium["threshold"], "LOW": 0.0,
            "detail": {"base_rate": base, "HIGH": high, "MEDIUM": medium,
                       "LOW": {"threshold": 0.0, "precision": base, "rows": int(len(y))}}}
