"""Expected scores computed without the project's scoring code: the booster, the calibration
map and the thresholds read straight from a model folder in the BentoML store, and the features
straight from `features.compute_features_at`. Tests compare the API's and the batch's answers
with these, so a misaligned row or a wrong model shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import bentoml
import numpy as np
import xgboost as xgb

from features import compute_features_at
from market.store import MarketStore


@dataclass
class Features:
    isins: np.ndarray
    values: np.ndarray  # [n, 25]
    scoreable: np.ndarray  # [n] bool
    reasons: list[str | None]

    def row(self, isin: str) -> int:
        return int(np.flatnonzero(self.isins == isin)[0])


def features_at(store: MarketStore, as_of=None) -> Features:
    panel = store.load_panel(as_of, 400)
    r = compute_features_at(panel.open, panel.high, panel.low, panel.close, panel.volume)
    return Features(np.asarray(panel.isins), r.values, np.asarray(r.scoreable), r.reasons)


def expected_scores(version: str, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and confidence levels of `version` for the rows of X."""
    model = bentoml.models.get(f"vcp_breakout:{version}")
    folder = Path(model.path)
    booster = xgb.Booster()
    booster.load_model(str(folder / "model.json"))
    raw = booster.predict(xgb.DMatrix(np.asarray(X, dtype=np.float32), missing=np.nan,
                                      feature_names=booster.feature_names))
    cal = json.loads((folder / "calibration.json").read_text())
    p = np.interp(raw, cal["x"], cal["y"])
    t = model.info.metadata["thresholds"]
    conf = np.where(p >= t["HIGH"], "HIGH", np.where(p >= t["MEDIUM"], "MEDIUM", "LOW"))
    return p, conf
