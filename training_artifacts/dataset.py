"""Training rows: the 25 features of every scoreable stock on sampled dates, with labels.

Sampling: every `date_step`-th trading date (all stocks on each sampled date), so per-date
rankings (precision@k) are measured over whole cross-sections. Only rows whose label horizon
is complete inside the data are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features import FEATURES, LabelParams, compute_features_all, triple_barrier_labels
from market.store import Panel


class DatasetError(ValueError):
    """The store cannot give a training set (empty, too short, or no label variety)."""


@dataclass
class Dataset:
    X: np.ndarray  # [rows, 25] float32
    y: np.ndarray  # [rows] 0/1
    realized_r: np.ndarray
    date_idx: np.ndarray  # index into `dates`
    stock_idx: np.ndarray  # index into `isins`
    rule_pass: np.ndarray  # Trend Template passes and a VCP is detected
    rs_rating: np.ndarray
    dates: np.ndarray
    isins: np.ndarray
    label_params: LabelParams

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(
            X=self.X[mask], y=self.y[mask], realized_r=self.realized_r[mask],
            date_idx=self.date_idx[mask], stock_idx=self.stock_idx[mask],
            rule_pass=self.rule_pass[mask], rs_rating=self.rs_rating[mask],
            dates=self.dates, isins=self.isins, label_params=self.label_params,
        )


MIN_SESSIONS = 200 + 60 + 120  # feature history + label horizon + room for folds


def build_dataset(
    panel: Panel, params: LabelParams | None = None, date_step: int = 3, progress=None
) -> Dataset:
    params = params or LabelParams()
    n, t = panel.close.shape
    if n == 0 or t < MIN_SESSIONS:
        raise DatasetError(
            f"the store holds {n} stocks over {t} sessions; training needs at least "
            f"{MIN_SESSIONS} sessions (200 for the features, {params.horizon} for the labels, "
            "and room for walk-forward folds). Ingest more history or run `data demo`."
        )
    step = progress or (lambda *_a, **_k: None)
    step("computing features for all dates")
    sampled = np.zeros(t, dtype=bool)
    sampled[::-1][::date_step] = True  # anchor on the latest date
    feats = compute_features_all(
        panel.open, panel.high, panel.low, panel.close, panel.volume, dates_mask=sampled
    )
    step("labelling (triple barrier)")
    labels = triple_barrier_labels(
        panel.open, panel.high, panel.low, panel.close,
        target=params.target, stop=params.stop, horizon=params.horizon,
    )
    cols = feats.columns
    ok = feats.scoreable & np.isfinite(labels.label[:, cols])
    stock_idx, k = np.nonzero(ok)
    if len(stock_idx) == 0:
        raise DatasetError("no stock-date has both computable features and a complete label")
    date_idx = cols[k]
    X = feats.values[stock_idx, k].astype(np.float32)
    y = labels.label[stock_idx, date_idx].astype(np.int8)
    if y.min() == y.max():
        raise DatasetError("every label is the same; the data cannot teach a classifier")
    tt_col = FEATURES.index("trend_template_count")
    rs_col = FEATURES.index("rs_rating")
    return Dataset(
        X=X,
        y=y,
        realized_r=labels.r_multiple[stock_idx, date_idx].astype(np.float64),
        date_idx=date_idx,
        stock_idx=stock_idx,
        rule_pass=(X[:, tt_col] >= 8) & feats.vcp_detected[stock_idx, k],
        rs_rating=np.nan_to_num(X[:, rs_col], nan=0.0),
        dates=panel.dates,
        isins=panel.isins,
        label_params=params,
    )
