"""`vcp_breakout` models in the BentoML model store, and the pointer to the active one.

The active version is a small JSON file beside the store (`$BENTOML_HOME/active_vcp_breakout.json`),
replaced atomically. Every service worker stats it cheaply and switches by itself, so a reload
request that reaches one worker still moves them all.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml

from features import FEATURES
from training_artifacts.artifact import MODEL_NAME, ArtifactError, read_artifact

log = logging.getLogger("vcp.models")

# A model version as a BentoML tag accepts it (1-63 letters, digits or `._-`, alphanumeric at
# both ends), optionally prefixed by the model name.
VERSION_PATTERN = r"^(vcp_breakout:)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"


class ModelStoreError(RuntimeError):
    """No such model, no model at all, or a model the code cannot serve."""


class ModelNotFound(ModelStoreError):
    """No model of that version (or none at all) in the store."""


class InvalidModelVersion(ModelStoreError):
    """Not a model version at all ('', '../x', ...): the caller's input is wrong."""


class UnreadableModel(ModelStoreError):
    """A version folder in the store that BentoML cannot read (empty, no or a broken
    model.yaml): skipped when listing, refused when asked for by name."""


def store_home() -> Path:
    """BentoML's home, by BentoML's own rule (entry points set BENTOML_HOME from the settings
    before BentoML first reads it, so this and BentoML's model store always agree)."""
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")


def versions_dir() -> Path:
    """Where BentoML keeps the folders of the versions: $BENTOML_HOME/models/vcp_breakout."""
    return store_home() / "models" / MODEL_NAME


def active_pointer_path() -> Path:
    return store_home() / f"active_{MODEL_NAME}.json"


def check_version(version: str) -> str:
    """`version` itself, or InvalidModelVersion with what a version looks like."""
    if not re.fullmatch(VERSION_PATTERN, version or ""):
        raise InvalidModelVersion(
            f"{version!r} is not a model version (1-63 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit); see `models list`")
    return version


def _tag(version: str) -> str:
    return version if ":" in version else f"{MODEL_NAME}:{version}"


def _unreadable(version: str, exc: Exception) -> UnreadableModel:
    log.warning("model version %s cannot be read from the store: %r", version, exc)
    return UnreadableModel(
        f"model version {version!r} cannot be read from the store ({type(exc).__name__}: its "
        "folder has no valid model.yaml); delete the folder or restore it")


def get_model(version: str | None = None) -> bentoml.Model:
    """A model by version ('latest' or None: the newest readable one)."""
    if version in (None, "latest"):
        found = scan().models
        if not found:
            raise ModelNotFound(
                "no vcp_breakout model in the store: run `python -m vcp train` (or `make train`)")
        return found[0]
    tag = _tag(check_version(version))
    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise ModelNotFound(f"model version {version!r} not found; see `models list`") from None
    except Exception as exc:  # an empty or broken folder: BentoML raises what it meets
        raise _unreadable(version, exc) from None


def version_of(model: bentoml.Model) -> str:
    return str(model.tag.version)  # a stored model always has one


def metadata_of(model: bentoml.Model) -> dict[str, Any]:
    """The metadata saved with the model (a JSON-like dict, see training_artifacts.train)."""
    return dict(model.info.metadata)


@dataclass
class StoreScan:
    """The versions in the store: the readable ones, newest first, and the folders that are
    not (version -> why)."""

    models: list[bentoml.Model] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)


_scan_cache: dict[str, tuple[tuple[Path, float, int], StoreScan]] = {}


def scan() -> StoreScan:
    """Every version folder, each read on its own, so one empty or broken folder is reported
    instead of failing the listing. Kept until the versions folder changes (a stat)."""
    folder = versions_dir()
    try:
        st = folder.stat()
        names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    except OSError:
        return StoreScan()
    key = (folder, st.st_mtime, st.st_ino)
    cached = _scan_cache.get("scan")
    if cached is not None and cached[0] == key:
        return cached[1]
    result = StoreScan()
    for name in names:
        try:
            check_version(name)
            result.models.append(bentoml.models.get(_tag(name)))
        except ModelStoreError as exc:
            result.unreadable[name] = str(exc)
        except Exception as exc:
            result.unreadable[name] = str(_unreadable(name, exc))
    result.models.sort(key=lambda m: m.info.creation_time, reverse=True)
    _scan_cache["scan"] = (key, result)
    return result


def list_models() -> list[bentoml.Model]:
    """The readable versions, newest first (see `scan` for the others)."""
    return scan().models


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


def active_pointer_signature() -> tuple[float, int] | None:
    """(mtime, inode) of the active pointer, None without one: a stat tells a worker whether
    the pointer moved (it is replaced by a rename, so the inode changes with every write)."""
    try:
        st = os.stat(active_pointer_path())
    except OSError:
        return None
    return (st.st_mtime, st.st_ino)


def write_active(version: str) -> None:
    path = active_pointer_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": version, "promoted_at": datetime.now(UTC).isoformat(timespec="seconds")}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".active-")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def promote(version: str, verify: bool = True) -> str:
    """Make `version` the one the service serves; refuse a model the code cannot serve (its
    features differ) and, with `verify`, one whose files do not load."""
    model = get_model(check_version(version))
    meta = metadata_of(model)
    features = list(meta.get("features") or [])
    if features != list(FEATURES):
        missing = sorted(set(FEATURES) - set(features))
        extra = sorted(set(features) - set(FEATURES))
        raise ModelStoreError(
            f"refusing to promote {model.tag}: its feature list differs from the code's "
            f"(missing {missing or 'none'}, extra {extra or 'none'}, order may differ); retrain"
        )
    if verify:
        try:
            read_artifact(Path(model.path), meta, FEATURES)
        except ArtifactError as exc:
            log.warning("model %s does not load: %s", model.tag, exc)
            raise ModelStoreError(
                f"refusing to promote {model.tag}: it cannot be loaded "
                f"({load_failure(exc)}); the active model is unchanged") from None
    write_active(version_of(model))
    return version_of(model)


def load_failure(exc: ArtifactError) -> str:
    """Why a model did not load, for users: the artifact's own check, or the kind of file
    error (its text, with paths and native stack traces, is for the log only)."""
    cause = exc.__cause__
    if cause is None:
        return str(exc)
    return f"its files are damaged or incomplete: {type(cause).__name__}"


def delete(version: str) -> None:
    model = get_model(check_version(version))
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


__all__ = ["ArtifactError", "InvalidModelVersion", "ModelNotFound", "ModelStoreError",
           "UnreadableModel", "get_model", "list_models", "promote", "scan"]
