"""A bare model endpoint: the baseline benchmarks/bench_service.py --baseline compares the
service with (issue 15). Not used by the product.

    python -m bentoml serve benchmarks.baselines.bare_service:BareBooster --port 3001

A plain BentoML class service, two workers, one API: POST /predict with
`{"features": [25 numbers or null]}` answers `{"probability": p}`, the raw xgboost output of
the same booster the service serves (the active version of the model store, else the newest
one). No market data, no calibration, no validation beyond BentoML's own, no middleware.
Run it from the repository root (the module path is relative to it).
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import numpy as np

from features import FEATURES
from inference.registry import ModelRegistry
from training_artifacts import model_store
from training_artifacts.artifact import read_artifact
from vcp.settings import startup_settings

# The same model store as the service's (BENTOML_HOME from the settings, as its entry points).
startup_settings()


# Access log off, as the service's default: the comparison is of the serving paths.
@bentoml.service(name="bare_booster", workers=2, traffic={"timeout": 30},
                 logging={"access": {"enabled": False}})
class BareBooster:
    def __init__(self) -> None:
        model = model_store.get_model(
            # VCP_BARE_MODEL: the benchmark runs this on a BENTOML_HOME of its own (see there).
            os.environ.get("VCP_BARE_MODEL") or ModelRegistry.active_version())
        artifact = read_artifact(Path(model.path), model_store.metadata_of(model), FEATURES)
        # As the service holds it (read_artifact sets nthread=1).
        self.booster = artifact.booster
        self.version = model_store.version_of(model)

    @bentoml.api
    def predict(self, features: list[float | None]) -> dict:
        row = [np.nan if x is None else x for x in features]
        p = self.booster.inplace_predict(np.asarray([row], dtype=np.float32))
        return {"probability": float(p[0])}
