"""Shared fixtures: small simulated stores built once per session in a temp folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from market.simulator import SimConfig, build_demo_store
from market.store import MarketStore
from vcp.settings import startup_settings

# Tests never touch the user's data or model store; subprocesses inherit these variables.
_TEST_HOME = Path(tempfile.mkdtemp(prefix="vcp-tests-"))
os.environ["VCP_DATA_DIR"] = str(_TEST_HOME / "data")
os.environ["BENTOML_HOME"] = str(_TEST_HOME / "bentoml")
SETTINGS = startup_settings()  # what an entry point does: validate, then prepare the process

SMALL_STOCKS = 400


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> MarketStore:
    """A 400-stock simulated store (seed 7), shared read-only by the tests."""
    path = Path(tmp_path_factory.mktemp("store")) / "market.duckdb"
    build_demo_store(path, SimConfig(n_stocks=SMALL_STOCKS, n_dual=80, seed=7))
    return MarketStore(path)


@pytest.fixture(scope="session")
def quick_model(small_store):
    """A quick model trained on the small store, saved and promoted in the test model store."""
    from training_artifacts import model_store
    from training_artifacts.train import TrainConfig, save, train

    result = train(small_store, TrainConfig.for_mode(quick=True, seed=1))
    version, _ = save(result)
    model_store.promote(version)
    return version, result


@pytest.fixture(scope="session")
def oracle(small_store):
    """Features of every stock at the latest session, computed apart from the code under test."""
    from tests.oracle import features_at

    return features_at(small_store)


@pytest.fixture(scope="session")
def stock(small_store, oracle):
    """A dual-listed stock scoreable on the latest session and 30 sessions before."""
    from tests.oracle import features_at

    earlier = features_at(small_store, small_store.calendar()[-30].astype(object))
    master = small_store.master()
    for i, isin in enumerate(oracle.isins):
        s = master.by_isin(isin)
        if s.nse_symbol and oracle.scoreable[i] and earlier.scoreable[earlier.row(isin)]:
            return s
    raise AssertionError("no scoreable dual-listed stock")
