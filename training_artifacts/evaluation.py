"""Purged walk-forward folds and the metrics every model and baseline is judged by."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score


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


def purged_walk_forward(
    first: int, last: int, n_folds: int, horizon: int, min_train: int
) -> list[Fold]:
    """Expanding-window folds over date indices [first, last].

    The test blocks split what follows the first `min_train` dates into `n_folds` equal parts.
    A training row at date d has a label window d+1..d+horizon, so training stops at
    test_start - horizon - 1: no training label overlaps the test period.
    """
    if last - first + 1 < min_train + n_folds * 5:
        raise ValueError(
            f"{last - first + 1} labelled dates are too few for {n_folds} folds after "
            f"{min_train} training dates"
        )
    edges = np.linspace(first + min_train, last + 1, n_folds + 1).astype(int)
    folds = []
    for k in range(n_folds):
        test_start, test_end = int(edges[k]), int(edges[k + 1]) - 1
        folds.append(Fold(k + 1, test_start - horizon - 1, test_start, test_end))
    return folds


def _per_date_top(
    score: np.ndarray, y: np.ndarray, r: np.ndarray, date_idx: np.ndarray, k: int
) -> tuple[float, float]:
    """Precision and mean realized R of the top-k rows per date, averaged over dates."""
    order = np.lexsort((-score, date_idx))
    d_sorted = date_idx[order]
    starts = np.flatnonzero(np.r_[True, d_sorted[1:] != d_sorted[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    top = order[rank < k]
    dates_top = date_idx[top]
    uniq, inv = np.unique(dates_top, return_inverse=True)
    prec = np.bincount(inv, weights=y[top]) / np.bincount(inv)
    mean_r = np.bincount(inv, weights=r[top]) / np.bincount(inv)
    return float(prec.mean()), float(mean_r.mean()) if len(uniq) else float("nan")


def evaluate(
    y: np.ndarray,
    score: np.ndarray,
    realized_r: np.ndarray,
    date_idx: np.ndarray,
    is_probability: bool = True,
) -> dict[str, float]:
    """ROC-AUC, PR-AUC, Brier, log loss, base rate, precision@20/@50, mean R of the top 50.

    A ranking-only score (the rule baseline) gets NaN for Brier and log loss.
    """
    y = np.asarray(y, dtype=float)
    out: dict[str, float] = {"n": float(len(y)), "base_rate": float(y.mean())}
    both = 0 < y.sum() < len(y)
    out["roc_auc"] = float(roc_auc_score(y, score)) if both else float("nan")
    out["pr_auc"] = float(average_precision_score(y, score)) if both else float("nan")
    if is_probability:
        p = np.clip(score, 1e-6, 1 - 1e-6)
        out["brier"] = float(brier_score_loss(y, p))
        out["log_loss"] = float(log_loss(y, p, labels=[0, 1]))
    else:
        out["brier"] = float("nan")
        out["log_loss"] = float("nan")
    out["precision_at_20"], _ = _per_date_top(score, y, realized_r, date_idx, 20)
    out["precision_at_50"], out["mean_r_top_50"] = _per_date_top(
        score, y, realized_r, date_idx, 50
    )
    return out


def precision_at_k_curve(
    y: np.ndarray, score: np.ndarray, date_idx: np.ndarray, ks: list[int]
) -> list[float]:
    r = np.zeros_like(y, dtype=float)
    return [_per_date_top(score, y.astype(float), r, date_idx, k)[0] for k in ks]


THRESHOLD_RULE = (
    "HIGH: the lowest calibrated probability above which precision >= 2x the base rate; "
    "MEDIUM: the same for 1.25x; LOW: the rest. Chosen on the calibration fold (>= 30 rows)."
)


def choose_thresholds(y: np.ndarray, p: np.ndarray, min_rows: int = 30) -> dict[str, float]:
    """Confidence cut-offs on held-out calibrated probabilities.

    HIGH: the lowest cut-off whose rows at or above it have precision >= 2x the base rate;
    MEDIUM: the same for 1.25x. At least `min_rows` rows must clear a cut-off; when no cut-off
    qualifies the level is set above every probability (it is never given).
    """
    y = np.asarray(y, dtype=float)
    base = float(y.mean())
    order = np.argsort(-p)
    cum_prec = np.cumsum(y[order]) / np.arange(1, len(y) + 1)
    p_sorted = p[order]

    def cut(mult: float) -> float:
        ok = (cum_prec >= mult * base) & (np.arange(1, len(y) + 1) >= min_rows)
        if not ok.any():
            return 1.01
        # The largest prefix meeting the rule, ending where the probability steps down.
        i = int(np.flatnonzero(ok)[-1])
        return float(p_sorted[i])

    high = cut(2.0)
    medium = min(cut(1.25), high)
    return {"HIGH": high, "MEDIUM": medium, "LOW": 0.0}
