"""The latest session's features on disk beside the market store, so that a restarted API
worker does not recompute them (a 400-session panel read and a feature pass, about 3 s of the
start-up on the full market; the file is about 8 MB and loads in milliseconds).

A file is used only when its key matches: the store's path and `updated_at` (refreshed to the
microsecond by every write), its newest session, the history window, the universe's floors and
a digest of the source code that computes features. Anything else, or a file that does not
load, means computing as before (and replacing the file). The cache folder is the project's own
(`<store>.cache/` next to the store file), written atomically; pickle is safe here only
because nothing but this module writes there. A store folder that cannot be written just means
no cache.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("vcp.feature_cache")

ROOT = Path(__file__).resolve().parent.parent
# The code that decides a DateFeatures: any change to these files changes the key.
FEATURE_CODE = ("features", "inference/snapshot.py", "inference/feature_cache.py",
                "market/store.py")
PREFIX = "latest-"


@functools.cache
def code_digest() -> str:
    digest = hashlib.sha256()
    for name in FEATURE_CODE:
        path = ROOT / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


class FeatureCache:
    def __init__(self, store_path: str | os.PathLike[str]):
        store = Path(store_path)
        self.store = store.resolve()
        self.folder = store.with_name(store.name + ".cache")

    def key(self, updated_at: str | None, newest: str, window: int, floors: Any) -> str | None:
        """The key of the latest session's features; None (no caching) for a store that
        does not record when it was written."""
        if not updated_at:
            return None
        parts = [str(self.store), updated_at, newest, window, dataclasses.asdict(floors),
                 code_digest()]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.folder / f"{PREFIX}{key}.pkl"

    def read(self, key: str) -> Any | None:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                return pickle.load(fh)
        except FileNotFoundError:
            return None
        except Exception as exc:  # damaged or from another library version: recompute
            log.warning("feature cache %s unreadable (%r); computing the features", path, exc)
            return None

    def write(self, key: str, value: Any) -> None:
        """Keep `value` under `key` and drop older files; failures only cost the cache."""
        try:
            self.folder.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, self._path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            for old in self.folder.glob(f"{PREFIX}*.pkl"):
                if old.name != self._path(key).name:
                    old.unlink(missing_ok=True)
        except OSError as exc:  # a read-only or full disk: serve without the cache
            log.warning("feature cache not written to %s (%s)", self.folder, exc)
