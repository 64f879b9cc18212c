"""The model runner's logic, shared by the BentoML runner service and the in-process batch."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, Field

from features import FEATURES
from inference.errors import InferenceError
from inference.registry import ModelRegistry
from training_artifacts import model_store
from training_artifacts.artifact import MODEL_NAME

log = logging.getLogger("vcp.scoring")

# A model version as a BentoML tag accepts it: anything else is a 422, not a store error.
MODEL_VERSION_PATTERN = model_store.VERSION_PATTERN

# xgboost reads features as float32: a value beyond its range (or inf) would fail the whole
# micro-batch, other callers' rows included, so it is refused at the boundary (400). Strict:
# a JSON number or null, never true/false or a numeric string.
FeatureValue = Annotated[float, Field(ge=-1e38, le=1e38, allow_inf_nan=False, strict=True)]


class ScoreRow(BaseModel):
    """One stock's 25 features (null for missing) and an optional pinned model version."""

    features: list[FeatureValue | None] = Field(min_length=len(FEATURES),
                                                max_length=len(FEATURES))
    model_version: str | None = Field(None, max_length=76, pattern=MODEL_VERSION_PATTERN)


class ScoreResult(BaseModel):
    """A probability and confidence, or an error: its message and kind (the name of an
    `inference.errors` class, which callers map to a status or an exit code)."""

    probability: float | None = None
    confidence: str | None = None
    score: float | None = None  # the uncalibrated probability: breaks ties in calibrated ones
    model_version: str | None = None
    error: str | None = None
    error_kind: str | None = None


def to_matrix(rows: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)


class ScoringCore:
    def __init__(self, registry: ModelRegistry | None = None):
        self.registry = registry or ModelRegistry()

    def score_matrix(
        self, X: np.ndarray, version: str | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """Calibrated probabilities, confidence levels and uncalibrated scores."""
        model = self.registry.get(version)
        raw = model.artifact.predict_raw(X)
        p = model.artifact.calibrator(raw)
        return p, model.artifact.confidence(p), raw, model.version

    def score(self, rows: list[ScoreRow]) -> list[ScoreResult]:
        """Score a micro-batch; rows pinned to different versions are scored per version.
        Result i always answers row i: every row gets a score or its group's error."""
        groups: dict[str | None, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(row.model_version, []).append(i)
        results: dict[int, ScoreResult] = {}
        for version, idx in groups.items():
            try:
                p, conf, raw, used = self.score_matrix(
                    to_matrix([rows[i].features for i in idx]), version)
            except InferenceError as exc:
                for i in idx:
                    results[i] = ScoreResult(error=str(exc), error_kind=type(exc).__name__)
                continue
            for j, i in enumerate(idx):
                results[i] = ScoreResult(probability=float(p[j]), confidence=str(conf[j]),
                                         score=float(raw[j]), model_version=used)
        return [results[i] for i in range(len(rows))]

    def explain(self, row: ScoreRow, top: int = 8) -> dict[str, Any]:
        model = self.registry.get(row.model_version)
        X = to_matrix([row.features])
        contrib = model.artifact.contributions(X)[0]
        order = np.argsort(-np.abs(contrib[:-1]))[:top]
        return {
            "base_value": float(contrib[-1]),
            "top": [
                {"feature": FEATURES[j],
                 "value": None if np.isnan(X[0, j]) else float(X[0, j]),
                 "contribution": float(contrib[j])}
                for j in order
            ],
            "model_version": model.version,
        }

    def status(self) -> dict[str, Any]:
        try:
            self.registry.refresh()
        except Exception as exc:  # the store itself unreadable: report, do not crash
            log.warning("model store unreadable: %r", exc)
            return {"active": None,
                    "degraded": [f"model store unreadable ({type(exc).__name__})"],
                    "cached": [], "failures": {}, "stats": {}}
        status = self.registry.status()
        status["model_name"] = MODEL_NAME
        loaded = self.registry.peek(status["active"]) if status["active"] else None
        if loaded is not None:
            meta = loaded.metadata
            status["thresholds"] = meta.get("thresholds")
            status["data_source"] = meta.get("data_source")
        return status

    def reload(self) -> dict[str, Any]:
        self.registry.refresh(force=True)
        return self.status()
