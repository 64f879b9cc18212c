"""The two ways the batch scores a feature matrix, both through the service's model runner logic.

* `InProcessScorer`: `inference.scoring.ScoringCore` with a `ModelRegistry` (the active model,
  or a pinned version), in this process: no server needed.
* `RemoteScorer`: a running deployment's `/api/v1/score_features` route (which forwards to the
  runner service) through BentoML's Python client, in chunks of the runner's batch size.
  Answers 429/503 are retried with back-off. The first chunk fixes the model version and
  later chunks pin it, so a promotion during the run cannot mix two models in one list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from batch.errors import BatchError
from inference import DEFAULT_BATCH_ROWS
from inference.errors import ModelLoadError, UnknownModelVersion, scoring_error
from inference.registry import LoadedModel
from inference.scoring import ScoringCore

RETRIES = 4  # on 429 (rate limited) / 503 (busy), with exponential back-off
RETRY_STATUS = {429, 503}
DEFAULT_CHUNK = DEFAULT_BATCH_ROWS  # the runner's default micro-batch


@dataclass
class Scores:
    probability: np.ndarray  # [m] float64
    confidence: np.ndarray  # [m] str
    score: np.ndarray  # [m] uncalibrated probability: breaks ties in the calibrated one
    model_version: str


@dataclass
class ModelInfo:
    version: str | None
    data_source: str | None = None
    thresholds: dict[str, float] | None = None


class InProcessScorer:
    def __init__(self, version: str | None = None):
        self.version = version
        self.core = ScoringCore()
        self.model: LoadedModel | None = None

    def prepare(self) -> ModelInfo:
        """Load the model now, so a missing model fails before any data is read (the
        registry's typed errors go up to the batch's exit-code table). Without a pinned
        version it is the active one (the newest when none was promoted) and nothing else:
        when it does not load the run fails, where the service falls back to another."""
        if self.version is not None:
            self.model = self.core.registry.get(self.version)
        else:
            active = self.core.registry.active_version()
            try:
                self.model = self.core.registry.get(active)
            except (ModelLoadError, UnknownModelVersion) as exc:
                raise BatchError(
                    f"the active model {active} cannot be used: {exc}. Promote a working "
                    "version (`python -m vcp models promote VERSION`) or name one with "
                    "--model") from None
        meta = self.model.metadata
        return ModelInfo(self.model.version, meta.get("data_source"), meta.get("thresholds"))

    def close(self) -> None:
        pass

    def score(self, X: np.ndarray, progress=None) -> Scores:
        assert self.model is not None, "prepare() first"
        p, conf, raw, version = self.core.score_matrix(X, self.model.version)
        if progress:
            progress(len(X))
        return Scores(np.asarray(p, dtype=np.float64), np.asarray(conf).astype(str),
                      np.asarray(raw, dtype=np.float64), version)


class RemoteScorer:
    def __init__(self, url: str, version: str | None = None, chunk_size: int = DEFAULT_CHUNK,
                 api_key: str | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.version = version
        self.chunk_size = max(1, int(chunk_size))
        self.api_key = api_key
        self.timeout = timeout
        self.client: Any = None

    def prepare(self) -> ModelInfo:
        import bentoml
        import httpx

        try:
            ready = httpx.get(f"{self.url}/readyz", timeout=10)
        except httpx.HTTPError as exc:
            raise BatchError(f"cannot reach the scoring service at {self.url}: {exc}") from None
        if ready.status_code != 200:
            raise BatchError(f"the scoring service at {self.url} is not ready "
                             f"(/readyz returned {ready.status_code})")
        try:
            # The readiness check is done above; 0 skips the client's own busy-wait.
            self.client = bentoml.SyncHTTPClient(self.url, timeout=self.timeout,
                                                 server_ready_timeout=0)
        except Exception as exc:
            raise BatchError(f"cannot connect a BentoML client to {self.url}: {exc}") from None
        if "score_features" not in getattr(self.client, "endpoints", {}):
            raise BatchError(f"{self.url} has no score_features API: is it the VCP service?")
        if self.api_key:
            self.client.client.headers["X-API-Key"] = self.api_key
        return ModelInfo(self.version)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _call(self, rows: list[dict]) -> list[dict]:
        for attempt in range(RETRIES + 1):
            try:
                out = self.client.score_features(rows=rows)
                break
            except Exception as exc:
                status = int(getattr(exc, "error_code", 0) or 0)
                if status in RETRY_STATUS and attempt < RETRIES:
                    time.sleep(min(2.0 ** attempt, 8.0))  # rate limited or busy: back off
                    continue
                raise BatchError(f"scoring at {self.url} failed: {exc}") from None
        if len(out) != len(rows):
            raise BatchError(f"{self.url} returned {len(out)} scores for {len(rows)} rows")
        for r in out:
            if r.get("error") or r.get("probability") is None:
                raise scoring_error(r.get("error_kind"),
                                    f"{self.url} could not score: {r.get('error')}")
        return out

    def score(self, X: np.ndarray, progress=None) -> Scores:
        m = len(X)
        prob = np.empty(m, dtype=np.float64)
        raw = np.empty(m, dtype=np.float64)
        conf = np.empty(m, dtype=object)
        version = self.version
        for a in range(0, m, self.chunk_size):
            block = X[a:a + self.chunk_size]
            rows = [{"features": [None if np.isnan(v) else float(v) for v in r],
                     "model_version": version} for r in block.tolist()]
            out = self._call(rows)
            versions = {r["model_version"] for r in out}
            if len(versions) != 1:
                raise BatchError(f"{self.url} scored one chunk with several models: {versions}")
            version = versions.pop()
            prob[a:a + len(block)] = [r["probability"] for r in out]
            raw[a:a + len(block)] = [r.get("score", r["probability"]) for r in out]
            conf[a:a + len(block)] = [r["confidence"] for r in out]
            if progress:
                progress(len(block))
        if version is None:  # nothing to score
            raise BatchError("no rows to score")
        return Scores(prob, conf.astype(str), raw, version)
