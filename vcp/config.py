"""Paths and settings read from the environment at call time (so tests can redirect them)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


def data_dir() -> Path:
    """Folder for the market store, predictions and outputs (VCP_DATA_DIR, default ./data)."""
    return Path(os.environ.get("VCP_DATA_DIR", PROJECT_ROOT / "data"))


def market_db_path() -> Path:
    """The DuckDB market store (VCP_MARKET_DB, default $VCP_DATA_DIR/market.duckdb)."""
    return Path(os.environ.get("VCP_MARKET_DB", data_dir() / "market.duckdb"))


def predictions_db_path() -> Path:
    """SQLite predictions database (VCP_PREDICTIONS_DB, default $VCP_DATA_DIR/predictions.db)."""
    return Path(os.environ.get("VCP_PREDICTIONS_DB", data_dir() / "predictions.db"))


def outputs_dir() -> Path:
    """Daily batch outputs and reports (VCP_OUTPUT_DIR, default $VCP_DATA_DIR/outputs)."""
    return Path(os.environ.get("VCP_OUTPUT_DIR", data_dir() / "outputs"))


def bentoml_home() -> Path:
    """The BentoML model store; kept under the data folder unless BENTOML_HOME is set."""
    return Path(os.environ.get("BENTOML_HOME", data_dir() / "bentoml"))


# Before anything imports bentoml, so the CLI, the service and tests share one model store.
os.environ.setdefault("BENTOML_HOME", str(bentoml_home()))
