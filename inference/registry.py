"""Model registry for one worker: LRU cache, version pinning, fallback, cross-worker reload.

Every worker owns one registry. The active version lives in a pointer file beside the
BentoML model store (see training_artifacts.model_store); a worker stats that file at most
once per `check_interval` seconds, so a promotion made through any worker (or the CLI)
reaches all of them within a few seconds without a restart. A model that fails to load
never replaces a working one: the registry keeps serving the last good version and reports
itself degraded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features import FEATURES
from inference.errors import ModelLoadError, ModelUnavailable, UnknownModelVersion
from training_artifacts import model_store
from training_artifacts.artifact import ArtifactError, ModelArtifact, read_artifact

log = logging.getLogger("vcp.registry")


@dataclass
class LoadedModel:
    version: str
    artifact: ModelArtifact
    metadata: dict[str, Any]
    loaded_at: float = field(default_factory=time.time)


@dataclass
class RegistryStats:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    load_failures: int = 0


class ModelRegistry:
    def __init__(self, capacity: int = 3, check_interval: float = 1.0,
                 on_event: Callable[[str, str], None] | None = None):
        self.capacity = capacity
        self.check_interval = check_interval
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._refresh_lock = threading.Lock()
        self._active: str | None = None
        self._pointer_state: tuple[float, int] | None = None
        self._next_check = 0.0
        self.failures: dict[str, str] = {}
        self.stats = RegistryStats()
        self._on_event = on_event or (lambda _event, _version: None)

    # -- loading -----------------------------------------------------------------------------
    def _load(self, version: str) -> LoadedModel:
        try:
            model = model_store.get_model(version)
        except model_store.UnreadableModel as exc:
            raise ModelLoadError(str(exc)) from None
        except model_store.ModelStoreError as exc:
            raise UnknownModelVersion(str(exc)) from None
        metadata = model_store.metadata_of(model)
        try:
            artifact = read_artifact(Path(model.path), metadata, FEATURES)
        except ArtifactError as exc:
            # The log keeps the file paths and the library's own text; users get the kind.
            log.warning("model %s cannot be loaded: %s", version, exc)
            raise ModelLoadError(f"model {version} cannot be loaded: "
                                 f"{model_store.load_failure(exc)}") from None
        return LoadedModel(model_store.version_of(model), artifact, metadata)

    def get(self, version: str | None = None) -> LoadedModel:
        """The model for `version` (pinned) or the active one; loads lazily, LRU-evicts."""
        if version is None:
            self.refresh()
            version = self._active
            if version is None:
                raise ModelUnavailable(
                    "no model can be served: train one with `python -m vcp train`"
                )
        cached = self._cached(version)
        if cached is not None:
            return cached
        # Load outside the cache lock so requests for cached models never wait on a load;
        # a per-version lock keeps concurrent misses from loading the same model twice.
        with self._lock:
            load_lock = self._load_locks.setdefault(version, threading.Lock())
        with load_lock:
            cached = self._cached(version, count=False)
            if cached is not None:
                return cached
            self.stats.misses += 1
            self._on_event("miss", version)
            try:
                loaded = self._load(version)
            except ModelLoadError as exc:
                self.stats.load_failures += 1
                self.failures[version] = str(exc)
                self._on_event("load_failure", version)
                raise
            self.stats.loads += 1
            self._on_event("load", version)
        with self._lock:
            self.failures.pop(version, None)
            self._cache[loaded.version] = loaded
            while len(self._cache) > self.capacity:
                victim = next(v for v in self._cache if v != self._active)
                del self._cache[victim]
            return loaded

    def peek(self, version: str) -> LoadedModel | None:
        """A cached model, without counting a cache hit (for status reports)."""
        return self._cached(version, count=False)

    def _cached(self, version: str, count: bool = True) -> LoadedModel | None:
        with self._lock:
            cached = self._cache.get(version)
            if cached is not None:
                self._cache.move_to_end(version)
                if count:
                    self.stats.hits += 1
                    self._on_event("hit", version)
            return cached

    # -- the active version ------------------------------------------------------------------
    def refresh(self, force: bool = False) -> str | None:
        """Re-read the active pointer if it changed; cheap (one stat) between changes."""
        now = time.monotonic()
        if not force and now < self._next_check and self._active is not None:
            return self._active
        # While one thread loads a new version the others keep serving the current one.
        if not self._refresh_lock.acquire(blocking=force or self._active is None):
            return self._active
        try:
            self._next_check = now + self.check_interval
            signature = model_store.active_pointer_signature()
            if not force and signature == self._pointer_state and self._active is not None:
                return self._active
            self._pointer_state = signature
            wanted = model_store.read_active()
            # A valid pointer loads its one version; the store is listed only without one
            # (the newest version that loads is served) or when it names a version that does
            # not load while nothing is served yet (the newest that loads, until it is fixed).
            if wanted is None or (not self._switch_to(wanted) and self._active is None):
                for version in self._stored_versions():
                    if version != wanted and self._switch_to(version):
                        break
            return self._active
        finally:
            self._refresh_lock.release()

    @staticmethod
    def _stored_versions() -> list[str]:
        return [model_store.version_of(m) for m in model_store.list_models()]

    def _switch_to(self, version: str) -> bool:
        """Serve `version` if it loads (True); a failed load never replaces a working
        model (False, the reason kept in `failures`)."""
        if version == self._active:
            return True
        try:
            self.get(version)
        except (ModelLoadError, UnknownModelVersion) as exc:
            self.failures[version] = str(exc)
            return False
        self._active = version
        self._on_event("switch", version)
        return True

    @staticmethod
    def active_version() -> str:
        """The version the active pointer names, else the newest readable one (whether it
        loads is not checked here)."""
        wanted = model_store.read_active()
        if wanted:
            return wanted
        models = model_store.list_models()
        if not models:
            raise ModelUnavailable("no model can be served: train one with `python -m vcp train`")
        return model_store.version_of(models[0])

    # -- reporting ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        wanted = model_store.read_active()
        degraded = []
        if wanted and wanted != self._active:
            reason = self.failures.get(wanted, "not loaded yet")
            degraded.append(
                f"active pointer names {wanted} but serving {self._active}: {reason}"
            )
        unreadable = model_store.scan().unreadable
        for folder in unreadable:
            degraded.append(f"model_store_unreadable_version: {folder} (skipped; see "
                            "`models list`)")
        return {
            "active": self._active,
            "wanted": wanted,
            "cached": list(self._cache),
            "degraded": degraded,
            "failures": dict(self.failures),
            "unreadable": dict(unreadable),
            "stats": vars(self.stats).copy(),
        }
