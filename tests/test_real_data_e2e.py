"""End to end on real prices: per-stock CSVs -> `data ingest --unlisted` -> `data info` ->
`train --quick` -> `batch run`, through the CLI as a user runs it.

The data: 257 stocks of the Philippine Stock Exchange, 2010-01-04 to 2021-12-15 (538,408
daily bars), shipped in the `fastquant` package (MIT, see tests/fixtures/README.md). Nothing
Indian with a test-friendly license exists on PyPI; these are the closest to BSE's long tail:
prices of a few centavos, flat and circuit-locked days, zero volumes, long gaps, bad rows.

The test asserts behaviour that survives changes to training: every command exits 0 without a
traceback, a model is saved, the batch lists every stock once (a setup, or the reason it is
not), a session with setups gets them ranked with finite probabilities, and no feature of any
stock on any date is infinite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import compute_features_all
from features.indicators import ffill
from features.universe import Floors, median_traded_value_at
from market.store import MarketStore
from tests.realdata import write_per_stock_csvs
from tests.serverutil import ROOT


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = Path(tmp_path_factory.mktemp("realdata"))
    return home, {**os.environ, "VCP_DATA_DIR": str(home / "data"),
                  "VCP_MARKET_DB": str(home / "data" / "market.duckdb"),
                  "BENTOML_HOME": str(home / "bentoml"), "COLUMNS": "400", "TERM": "dumb"}


def vcp(env: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vcp", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-3000:]
    assert proc.returncode == 0, text[-3000:]
    return proc


def test_real_data_from_csvs_to_a_daily_list(env):
    home, environ = env
    counts = write_per_stock_csvs(home / "csv")
    assert len(counts) >= 50 and sum(counts.values()) > 500_000

    out = vcp(environ, "data", "ingest", str(home / "csv"), "--unlisted")
    said = " ".join((out.stdout + out.stderr).split())
    assert f"{len(counts)} file(s): {sum(counts.values())} rows read" in said
    assert "registered under local keys" in said
    store = MarketStore(home / "data" / "market.duckdb")
    info = store.info()
    assert info["stocks"] == len(counts) and info["source"] == "real"
    years = (pd.Timestamp(info["last_date"]) - pd.Timestamp(info["first_date"])).days / 365.25
    assert years >= 5
    rejected = sum(len(pd.read_csv(p)) for p in (home / "data" / "rejects").glob("rejects_*.csv"))
    assert 0 < rejected < 0.001 * info["bars"]  # zero prices, close outside [low, high], ...
    assert "calendar:" in vcp(environ, "data", "info").stdout

    # No feature of any stock is infinite on any date (every 5th session, all history).
    panel = store.load_panel(None, 100_000)
    sampled = np.zeros(len(panel.dates), dtype=bool)
    sampled[::5] = True
    feats = compute_features_all(panel.open, panel.high, panel.low, panel.close, panel.volume,
                                 dates_mask=sampled, dtype=np.float32)
    assert not np.isinf(feats.values).any()
    assert feats.scoreable.sum() > 10_000

    trained = vcp(environ, "train", "--quick")
    assert "saved vcp_breakout:" in trained.stdout and "ROC-AUC" in trained.stdout
    assert any((home / "bentoml" / "models" / "vcp_breakout").iterdir())

    # The latest session: every stock listed once, as a setup or with the reason it is not.
    vcp(environ, "batch", "run")
    day = str(info["last_date"])
    listing, skipped = _outputs(home, day)
    setups = listing[listing["status"] == "setup"]
    assert len(setups) + len(skipped) == len(counts)
    kinds = set(skipped["reason"].str.split(":").str[0])
    assert {"illiquid", "below the price floor"} & kinds  # the floors bite on real data
    report = (home / "data" / "outputs" / f"report_{day}.txt").read_text()
    assert "DATA CHECKS" in report and "excluded: liquidity floor" in report

    # The latest sampled session with setups inside the floors: scored and ranked.
    floors = Floors()
    value = median_traded_value_at(panel.close, panel.volume, feats.columns)
    inside = (value >= floors.min_traded_value) & (
        ffill(panel.close, 10)[:, feats.columns] >= floors.min_price)
    per_day = (feats.vcp_detected & inside).sum(axis=0)
    assert per_day.sum() > 0, "no setup inside the floors on any sampled session"
    when = str(pd.Timestamp(panel.dates[feats.columns[np.flatnonzero(per_day)[-1]]]).date())
    batch = vcp(environ, "batch", "run", "--date", when)
    listing, skipped = _outputs(home, when)
    setups = listing[listing["status"] == "setup"]
    assert len(setups) >= 1 and len(setups) + len(skipped) == len(counts)
    assert np.isfinite(setups["probability"]).all()
    assert (setups["probability"].between(0, 1)).all()
    assert (setups["rank"] == np.arange(1, len(setups) + 1)).all()
    assert setups["isin"].str.startswith("LOCAL:NSE:").all()
    assert (setups["stop_price"] < setups["pivot_price"]).all()
    assert f"scored {len(setups):,} VCP setups" in batch.stdout
    assert (home / "data" / "outputs" / f"report_{when}.html").stat().st_size > 10_000


def _outputs(home: Path, day: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = home / "data" / "outputs"
    return (pd.read_csv(out / f"predictions_{day}.csv"),
            pd.read_csv(out / f"skipped_stocks_{day}.csv"))
