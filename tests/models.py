"""Model versions for tests: a small real model made in well under a second, and copies of a
stored version (loadable, or with a corrupted booster)."""

from __future__ import annotations

import shutil
from pathlib import Path

import bentoml
import numpy as np
import xgboost as xgb

from features import FEATURES
from training_artifacts import model_store
from training_artifacts.artifact import MODEL_NAME, Calibrator, write_artifact


def small_model(X: np.ndarray, y: np.ndarray) -> str:
    """A new store version: 5 trees of depth 2 on (X, y), an identity calibration map and
    fixed confidence thresholds. A real artifact for the serving paths, not a good model."""
    train = xgb.DMatrix(np.asarray(X, dtype=np.float32), label=y, missing=np.nan,
                        feature_names=list(FEATURES))
    booster = xgb.train({"max_depth": 2, "objective": "binary:logistic", "nthread": 1,
                         "seed": 0}, train, num_boost_round=5)
    meta = {"features": list(FEATURES), "thresholds": {"HIGH": 0.6, "MEDIUM": 0.45, "LOW": 0.0},
            "data_source": "simulated", "quick": True}
    with bentoml.models.create(MODEL_NAME, metadata=meta) as model:
        write_artifact(Path(model.path), booster, Calibrator(np.array([0.0, 1.0]),
                                                             np.array([0.0, 1.0])))
    return model_store.version_of(model)


def clone_model(version: str, corrupt: bool = False) -> str:
    """A new store version with the files of `version` (its booster broken when `corrupt`)."""
    source = model_store.get_model(version)
    with bentoml.models.create("vcp_breakout", metadata=model_store.metadata_of(source)) as new:
        for f in Path(source.path).iterdir():
            if f.is_file() and f.name != "model.yaml":
                shutil.copy(f, Path(new.path) / f.name)
        if corrupt:
            (Path(new.path) / "model.json").write_text('{"learner": corrupted')
    return new.tag.version
