"""The model artifact: what a `vcp_breakout` model folder in the BentoML store holds.

This module is the one contract between training (which writes) and serving (which reads):

    model.json         xgboost Booster (raw margin model)
    calibration.json   isotonic map raw probability -> calibrated probability
    validation.npz     the untouched last fold's features and calibrated predictions
    report.html        the evaluation report

Saved with `bentoml.models.create()` and `Booster.save_model`: `bentoml.xgboost` needs the
`xgboost` distribution, and we ship `xgboost-cpu` (same module, no CUDA libraries).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported where used: the API workers and the CLI never load a booster
    import xgboost as xgb

MODEL_NAME = "vcp_breakout"
BOOSTER_FILE = "model.json"
CALIBRATION_FILE = "calibration.json"
VALIDATION_FILE = "validation.npz"
REPORT_FILE = "report.html"
CONFIDENCE_LEVELS = ("HIGH", "MEDIUM", "LOW")


class ArtifactError(RuntimeError):
    """A model folder is missing a file, is corrupted, or does not match the code."""


@dataclass
class Calibrator:
    """Piecewise-linear isotonic map fitted by scikit-learn, applied with np.interp."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "isotonic", "x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        x, y = np.asarray(data["x"], dtype=float), np.asarray(data["y"], dtype=float)
        if data.get("method") != "isotonic" or x.shape != y.shape or x.size < 2:
            raise ArtifactError("calibration.json is not a valid isotonic map")
        return cls(x, y)


@dataclass
class ModelArtifact:
    booster: xgb.Booster
    calibrator: Calibrator
    features: list[str]
    thresholds: dict[str, float]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Calibrated success probabilities for rows of the feature matrix."""
        raw = self.predict_raw(features)
        return self.calibrator(raw)

    def _dmatrix(self, features: np.ndarray) -> xgb.DMatrix:
        import xgboost as xgb

        return xgb.DMatrix(np.asarray(features, dtype=np.float32), missing=np.nan,
                           feature_names=self.features)

    def predict_raw(self, features: np.ndarray) -> np.ndarray:
        # inplace_predict skips building a DMatrix: most calls score a handful of rows.
        return self.booster.inplace_predict(np.asarray(features, dtype=np.float32),
                                            missing=np.nan)

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions in log-odds; the last column is the bias."""
        return self.booster.predict(self._dmatrix(features), pred_contribs=True)

    def confidence(self, probability: np.ndarray) -> np.ndarray:
        p = np.asarray(probability)
        return np.where(
            p >= self.thresholds["HIGH"], "HIGH",
            np.where(p >= self.thresholds["MEDIUM"], "MEDIUM", "LOW"),
        )


def write_artifact(
    folder: Path,
    booster: xgb.Booster,
    calibrator: Calibrator,
    validation: dict[str, np.ndarray] | None = None,
) -> None:
    booster.save_model(str(folder / BOOSTER_FILE))
    (folder / CALIBRATION_FILE).write_text(json.dumps(calibrator.to_dict()))
    if validation is not None:
        arrays: dict[str, Any] = validation  # numpy's stub reads **kwargs as its own options
        np.savez_compressed(folder / VALIDATION_FILE, **arrays)


def read_artifact(
    folder: Path, metadata: dict[str, Any], code_features: list[str]
) -> ModelArtifact:
    """Load a model folder; refuse one whose feature list differs from the code's."""
    features = list(metadata.get("features") or [])
    if features != list(code_features):
        raise ArtifactError(
            "model feature list differs from the code's FEATURES "
            f"(model has {len(features)}, code has {len(code_features)}); retrain the model"
        )
    thresholds = metadata.get("thresholds") or {}
    if not {"HIGH", "MEDIUM"} <= set(thresholds):
        raise ArtifactError("model metadata lacks confidence thresholds HIGH/MEDIUM")
    import xgboost as xgb

    try:
        booster = xgb.Booster()
        booster.load_model(str(folder / BOOSTER_FILE))
        # Serving predicts a few rows at a time: one thread avoids OpenMP start-up and
        # spin-waiting that would steal the second core from the API process.
        booster.set_param({"nthread": 1})
        calibrator = Calibrator.from_dict(json.loads((folder / CALIBRATION_FILE).read_text()))
    except (OSError, ValueError, xgb.core.XGBoostError) as exc:
        raise ArtifactError(f"cannot load model files in {folder}: {exc}") from exc
    if booster.feature_names != list(code_features):
        raise ArtifactError("the booster's feature names differ from the code's FEATURES")
    return ModelArtifact(
        booster=booster,
        calibrator=calibrator,
        features=features,
        thresholds={k: float(v) for k, v in thresholds.items()},
    )
