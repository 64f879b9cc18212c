"""Shared fixtures: small simulated stores built once per session in a temp folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before any project or bentoml import: tests never touch the user's data or model store.
_TEST_HOME = Path(tempfile.mkdtemp(prefix="vcp-tests-"))
os.environ["VCP_DATA_DIR"] = str(_TEST_HOME / "data")
os.environ["BENTOML_HOME"] = str(_TEST_HOME / "bentoml")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"

from market.simulator import SimConfig, build_demo_store  # noqa: E402
from market.store import MarketStore  # noqa: E402

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
