"""Shared fixtures: small simulated stores built once per session in a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from market.simulator import SimConfig, build_demo_store  # noqa: E402
from market.store import MarketStore  # noqa: E402

SMALL_STOCKS = 400


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> MarketStore:
    """A 400-stock simulated store (seed 7), shared read-only by the tests."""
    path = Path(tmp_path_factory.mktemp("store")) / "market.duckdb"
    build_demo_store(path, SimConfig(n_stocks=SMALL_STOCKS, n_dual=80, seed=7))
    return MarketStore(path)
