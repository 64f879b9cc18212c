"""`vcp_breakout` models in the BentoML model store, and the pointer to the active one.

The active version is a small JSON file beside the store (`$BENTOML_HOME/active_vcp_breakout.json`),
replaced atomically. Every service worker stats it cheaply and switches by itself, so a reload
request that reaches one worker still moves them all.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml

from features import FEATURES
from training_artifacts.artifact import MODEL_NAME, ArtifactError


class ModelStoreError(RuntimeError):
    """No such model, no model at all, or a model the code cannot serve."""


class ModelNotFound(ModelStoreError):
    """No model of that version (or none at all) in the store."""


def store_home() -> Path:
    """BentoML's home, by BentoML's own rule (entry points set BENTOML_HOME from the settings
    before BentoML first reads it, so this and BentoML's model store always agree)."""
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")


def active_pointer_path() -> Path:
    return store_home() / f"active_{MODEL_NAME}.json"


def _tag(version: str) -> str:
    return version if ":" in version else f"{MODEL_NAME}:{version}"


def get_model(version: str | None = None) -> bentoml.Model:
    """A model by version ('latest' or None: the newest)."""
    tag = _tag(version or "latest")
    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        if version in (None, "latest"):
            raise ModelNotFound(
                "no vcp_breakout model in the store: run `python -m vcp train` (or `make train`)"
            ) from None
        raise ModelNotFound(f"model version {version!r} not found; see `models list`") from None


def version_of(model: bentoml.Model) -> str:
    return str(model.tag.version)  # a stored model always has one


def metadata_of(model: bentoml.Model) -> dict[str, Any]:
    """The metadata saved with the model (a JSON-like dict, see training_artifacts.train)."""
    return dict(model.info.metadata)


def list_models() -> list[bentoml.Model]:
    try:
        models = bentoml.models.list(MODEL_NAME)
    except bentoml.exceptions.NotFound:
        return []
    return sorted(models, key=lambda m: m.info.creation_time, reverse=True)


def summary(model: bentoml.Model) -> dict[str, Any]:
    meta = metadata_of(model)
    hold = (meta.get("metrics") or {}).get("holdout", {}).get("model", {})
    return {
        "version": version_of(model),
        "created": model.info.creation_time.isoformat(timespec="seconds"),
        "data_source": meta.get("data_source"),
        "quick": meta.get("quick", False),
        "holdout_roc_auc": hold.get("roc_auc"),
        "holdout_precision_at_10": hold.get("precision_at_10"),
        "features_match_code": list(meta.get("features") or []) == list(FEATURES),
    }


def read_active() -> str | None:
    try:
        return json.loads(active_pointer_path().read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def write_active(version: str) -> None:
    path = active_pointer_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": version, "promoted_at": datetime.now(UTC).isoformat(timespec="seconds")}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".active-")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def promote(version: str) -> str:
    """Make `version` the one the service serves; refuse a model the code cannot serve."""
    model = get_model(version)
    features = list(metadata_of(model).get("features") or [])
    if features != list(FEATURES):
        missing = sorted(set(FEATURES) - set(features))
        extra = sorted(set(features) - set(FEATURES))
        raise ModelStoreError(
            f"refusing to promote {model.tag}: its feature list differs from the code's "
            f"(missing {missing or 'none'}, extra {extra or 'none'}, order may differ); retrain"
        )
    write_active(version_of(model))
    return version_of(model)


def delete(version: str) -> None:
    model = get_model(version)
    if version_of(model) == read_active():
        raise ModelStoreError(
            f"{model.tag} is the active model; promote another version before deleting it"
        )
    bentoml.models.delete(model.tag)


def active_or_latest() -> bentoml.Model:
    version = read_active()
    if version:
        try:
            return get_model(version)
        except ModelStoreError:
            pass
    return get_model(None)


__all__ = ["ArtifactError", "ModelNotFound", "ModelStoreError", "get_model", "list_models",
           "promote"]
