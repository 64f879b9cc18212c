"""The latest session's scores, held by every API worker.

Between a reload and the next market refresh the latest session's features and the active
model are fixed, so every setup of that session is scored once, in one runner call (chunks of
the runner's batch size), and predicts of that session become a dictionary lookup. The table
is rebuilt when the snapshot's latest session is replaced (a refresh) or the active pointer
changes (a promotion through any worker or the CLI: each worker stats the pointer itself), and
swapped in whole: a request reads one table, so an answer never mixes model versions.

Older dates, versions other than the table's, and explanations still go to the runner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from inference.errors import ModelLoadError, UnknownModelVersion
from inference.scoring import ScoreResult, ScoreRow
from inference.snapshot import DateFeatures, MarketSnapshot
from training_artifacts import model_store

log = logging.getLogger("vcp.latest_scores")

ScoreCall = Callable[[list[ScoreRow]], Awaitable[list[ScoreResult]]]
# A pinned version the runner refused: the table falls back to what the runner serves.
PIN_REFUSED = {UnknownModelVersion.__name__, ModelLoadError.__name__}


@dataclass(frozen=True)
class LatestScores:
    """Scores of every candidate (setup inside the universe) of one snapshot's latest session,
    all from one model version."""

    features: DateFeatures
    model_version: str
    results: dict[int, ScoreResult]  # candidate row -> its score
    built_at: float = field(default_factory=time.time)

    def lookup(self, at: DateFeatures, row: int, version: str | None) -> ScoreResult | None:
        """The score of `row` of `at`, when this table holds it for `version` (None: the
        active version); None sends the caller to the runner."""
        if at is not self.features or (version is not None and version != self.model_version):
            return None
        return self.results.get(row)


def feature_row(at: DateFeatures, row: int, version: str | None) -> ScoreRow:
    """Stock `row`'s features as the runner takes them (NaN as null)."""
    return ScoreRow(features=at.features_list(row), model_version=version)


class LatestScoresKeeper:
    """Builds the table and keeps it current; `current` is the table to answer from (None
    until the first build, or while no model can be served)."""

    def __init__(self, snapshot: MarketSnapshot, score: ScoreCall, *, chunk: int,
                 retry_seconds: float = 10.0):
        self.snapshot = snapshot
        self.score = score
        self.chunk = chunk
        self.retry_seconds = retry_seconds  # while the table is not the pointer's version
        self.current: LatestScores | None = None
        self._built_for: DateFeatures | None = None  # the snapshot the table was built for
        self._built_pointer: tuple[float, int] | None = None  # and the pointer's signature
        self._next_retry = 0.0
        self._lock = asyncio.Lock()

    def stale(self) -> bool:
        """True when a rebuild is due: a new snapshot or pointer, or a table of another
        version than the pointer names (its load had failed; retried now and then)."""
        if self.snapshot.latest is None:
            return False
        if (self.snapshot.latest is not self._built_for
                or model_store.active_pointer_signature() != self._built_pointer):
            return True
        if time.monotonic() < self._next_retry:
            return False
        wanted = model_store.read_active()
        table = self.current
        return table is None or (wanted is not None and table.model_version != wanted)

    async def rebuild(self) -> LatestScores | None:
        """Score the latest session's candidates and swap the table in. The pointer's version
        is pinned (so a worker switches as soon as it sees the pointer move); when the runner
        cannot load it, the table holds what the runner serves, like every other answer."""
        async with self._lock:
            at = self.snapshot.latest
            pointer = model_store.active_pointer_signature()
            if at is None:
                return self.current
            rows = [int(i) for i in at.candidates()]
            wanted = model_store.read_active()
            results = await self._score_all(at, rows, wanted)
            if wanted is not None and any(r.error_kind in PIN_REFUSED for r in results):
                results = await self._score_all(at, rows, None)
            self._built_for, self._built_pointer = at, pointer
            self._next_retry = time.monotonic() + self.retry_seconds
            failed = next((r for r in results if r.error), None)
            if failed is not None:  # no model to serve: requests meet the runner's error
                log.warning("latest scores not built: %s", failed.error)
                self.current = None
                return None
            version = results[0].model_version if results else (
                wanted or (self.current.model_version if self.current else None))
            if version is None:  # no candidates and nothing known to be served yet
                self.current = None
                return None
            table = LatestScores(at, version, dict(zip(rows, results, strict=True)))
            self.current = table
            log.info("latest scores: %d setups of %s scored with %s", len(rows), at.as_of,
                     version)
            return table

    async def _score_all(self, at: DateFeatures, rows: list[int],
                         version: str | None) -> list[ScoreResult]:
        out: list[ScoreResult] = []
        for start in range(0, len(rows), self.chunk):
            part = rows[start:start + self.chunk]
            out += await self.score([feature_row(at, i, version) for i in part])
        return out

    async def keep_current(self, interval: float = 1.0) -> None:
        """Rebuild whenever stale, checking every `interval` seconds (a stat of the pointer);
        runs for the worker's lifetime. A failed build keeps the previous table (the runner
        restarting serves the same version) and is tried again."""
        failing = False
        while True:
            try:
                if self.stale():
                    await self.rebuild()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # runner unreachable: keep what we have, try again
                if not failing:  # once per outage (the runner is not up yet at start-up)
                    log.warning("latest scores not rebuilt (%r); answering from the previous "
                                "table or the runner until it works", exc)
                failing = True
            else:
                failing = False
            await asyncio.sleep(interval)
