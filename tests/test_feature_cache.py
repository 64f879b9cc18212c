"""The latest session's features cached on disk for restarts: used only when the store, its
newest write and the code are the same; anything else computes, nothing crashes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from inference.snapshot import MarketSnapshot
from market.store import MarketStore


@pytest.fixture()
def store(small_store, tmp_path) -> MarketStore:
    path = tmp_path / "market.duckdb"
    shutil.copy(small_store.path, path)
    return MarketStore(path)


def loaded(store: MarketStore) -> MarketSnapshot:
    snap = MarketSnapshot(store)
    snap.load()
    return snap


def cache_files(store: MarketStore) -> list[str]:
    folder = store.path.with_name(store.path.name + ".cache")
    return sorted(p.name for p in folder.glob("latest-*.pkl"))


def same_features(a: MarketSnapshot, b: MarketSnapshot) -> bool:
    x, y = a.latest, b.latest
    return (x.as_of == y.as_of and x.row_of == y.row_of
            and np.array_equal(x.result.values, y.result.values, equal_nan=True)
            and np.array_equal(x.candidates(), y.candidates())
            and [x.why_not(i) for i in range(len(x.row_of))]
            == [y.why_not(i) for i in range(len(y.row_of))])


def test_a_restart_reads_the_features_the_first_start_computed(store):
    first = loaded(store)
    assert first.loaded_from == "computed" and len(cache_files(store)) == 1
    second = loaded(store)
    assert second.loaded_from == "cache" and same_features(first, second)


def test_a_write_to_the_store_or_other_floors_computes_again(store):
    from features.universe import Floors

    loaded(store)
    with store.connect(read_only=False) as con:
        MarketStore.set_meta(con)  # what every ingest does
    after = loaded(store)
    assert after.loaded_from == "computed" and len(cache_files(store)) == 1  # old one gone
    strict = MarketSnapshot(store, floors=Floors(min_price=500.0))
    strict.load()
    assert strict.loaded_from == "computed"
    assert strict.latest.tradeable.sum() < after.latest.tradeable.sum()


def test_a_damaged_cache_file_is_recomputed(store):
    first = loaded(store)
    folder = store.path.with_name(store.path.name + ".cache")
    (folder / cache_files(store)[0]).write_bytes(b"not a pickle")
    again = loaded(store)
    assert again.loaded_from == "computed" and same_features(first, again)
    assert loaded(store).loaded_from == "cache"  # rewritten


def test_a_folder_that_cannot_be_written_serves_without_a_cache(store):
    blocker = store.path.with_name(store.path.name + ".cache")
    blocker.write_text("a file where the cache folder would go")  # as a read-only disk fails
    assert loaded(store).loaded_from == "computed"
    assert loaded(store).loaded_from == "computed"
