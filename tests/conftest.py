"""Shared fixtures: small simulated stores built once per session in a temp folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
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
    build_demo_store(path, SimConfig(n_stocks=SMALL_STOCKS, n_dual=200, seed=7))
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


def _dual(small_store, isin: str):
    s = small_store.master().by_isin(isin)
    return s if s.nse_symbol and s.bse_code else None


@pytest.fixture(scope="session")
def stock(small_store, oracle):
    """A dual-listed VCP setup inside the universe on the latest session (the model scores
    it), scoreable 30 sessions before too."""
    from tests.oracle import features_at

    earlier = features_at(small_store, small_store.calendar()[-30].astype(object))
    for i in np.flatnonzero(oracle.candidate):
        s = _dual(small_store, oracle.isins[i])
        if s and earlier.scoreable[earlier.row(s.isin)]:
            return s
    raise AssertionError("no dual-listed setup on the latest session of the small store")


@pytest.fixture(scope="session")
def no_setup_stock(small_store, oracle):
    """A dual-listed stock inside the universe, scoreable, but no VCP on the latest session."""
    for i in np.flatnonzero(oracle.scoreable & oracle.tradeable & ~oracle.setup):
        s = _dual(small_store, oracle.isins[i])
        if s:
            return s
    raise AssertionError("no tradeable stock without a setup in the small store")


@pytest.fixture(scope="session")
def earlier_setup(small_store):
    """(stock, session, features there): a dual-listed setup inside the universe on a session
    10 to 60 sessions before the latest."""
    from tests.oracle import features_at

    cal = small_store.calendar()
    for k in range(10, 61):
        then = features_at(small_store, cal[-k].astype(object))
        for i in np.flatnonzero(then.candidate):
            s = _dual(small_store, then.isins[i])
            if s:
                return s, cal[-k].astype(object), then
    raise AssertionError("no dual-listed setup in the 60 sessions before the latest")
