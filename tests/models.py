"""Model versions for tests, made from a trained one (copies are real, loadable versions)."""

from __future__ import annotations

import shutil
from pathlib import Path

import bentoml

from training_artifacts import model_store


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
