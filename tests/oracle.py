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
from features.indicators import ffill
from features.universe import Floors, median_traded_value_at, tradeable
from features.vector import HISTORY_WINDOW
from market.store import MarketStore


@dataclass
class Features:
    isins: np.ndarray
    values: np.ndarray  # [n, 25]
    scoreable: np.ndarray  # [n] bool
    reasons: list[str | None]
    setup: np.ndarray  # [n] bool: scoreable and the detector finds a VCP
    tradeable: np.ndarray  # [n] bool: inside the default liquidity and price floors
    as_of: object = None

    def row(self, isin: str) -> int:
        return int(np.flatnonzero(self.isins == isin)[0])

    @property
    def candidate(self) -> np.ndarray:
        """The stocks the model scores: setups inside the universe."""
        return self.setup & self.tradeable


def features_at(store: MarketStore, as_of=None, floors: Floors | None = None) -> Features:
    panel = store.load_panel(as_of, HISTORY_WINDOW)
    r = compute_features_at(panel.open, panel.high, panel.low, panel.close, panel.volume)
    value = median_traded_value_at(panel.close, panel.volume,
                                   np.array([panel.close.shape[1] - 1]))[:, 0]
    inside, _ = tradeable(ffill(panel.close, 10)[:, -1], value, floors or Floors())
    scoreable = np.asarray(r.scoreable)
    return Features(np.asarray(panel.isins), r.values, scoreable, r.reasons,
                    scoreable & np.asarray(r.vcp.detected), inside, panel.as_of)


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
