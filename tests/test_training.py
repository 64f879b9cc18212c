from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features import FEATURES
from market.store import MarketStore, StoreError
from training_artifacts import model_store
from training_artifacts.artifact import REPORT_FILE, read_artifact
from training_artifacts.dataset import DatasetError, build_dataset
from training_artifacts.evaluation import purged_walk_forward
from training_artifacts.train import TrainConfig, train


def test_purge_gap_holds_on_the_actual_folds(small_store, quick_model):
    _, result = quick_model
    meta = result.metadata
    horizon = meta["label_params"]["horizon"]
    panel = small_store.load_panel(None, 100_000)
    ds = build_dataset(panel, date_step=meta["date_step"])
    assert len(meta["folds"]) >= 5
    for fold in meta["folds"]:
        train_rows = ds.date_idx[ds.date_idx <= fold["train_end"]]
        test_rows = ds.date_idx[(ds.date_idx >= fold["test_start"])
                                & (ds.date_idx <= fold["test_end"])]
        assert len(train_rows) and len(test_rows)
        # Every training label window (d+1 .. d+horizon) ends before the test period starts.
        assert train_rows.max() + horizon < test_rows.min()
    win = meta["training_window"]
    assert win["final_train_to"] < win["calibration_from"] <= win["calibration_to"] < win[
        "test_from"]


def test_walk_forward_folds_expand_and_purge():
    folds = purged_walk_forward(0, 499, n_folds=5, horizon=60, min_train=100)
    assert [f.test_start for f in folds] == sorted(f.test_start for f in folds)
    for prev, nxt in zip(folds, folds[1:], strict=False):
        assert nxt.train_end > prev.train_end  # expanding
        assert prev.test_end + 1 == nxt.test_start
    assert all(f.test_start - f.train_end > 60 for f in folds)


def test_metadata_round_trips_through_the_model_store(quick_model):
    version, result = quick_model
    stored = model_store.get_model(version).info.metadata
    assert json.loads(json.dumps(stored, default=str)) == json.loads(
        json.dumps(result.metadata, default=str))
    assert stored["features"] == list(FEATURES)
    assert stored["data_source"] == "simulated"
    assert set(stored["thresholds"]) >= {"HIGH", "MEDIUM", "LOW"}
    assert stored["label_params"] == {"target": 0.2, "stop": 0.08, "horizon": 60}
    # The recorded ROC-AUC is the one of the saved last-fold predictions, recomputed here.
    saved = np.load(Path(model_store.get_model(version).path) / "validation.npz")
    assert stored["metrics"]["last_fold"]["model"]["roc_auc"] == pytest.approx(
        roc_auc_score(saved["y"], saved["probability"]), abs=1e-12)


def test_saved_model_reproduces_its_validation_predictions_exactly(quick_model):
    version, _ = quick_model
    model = model_store.get_model(version)
    artifact = read_artifact(Path(model.path), model.info.metadata, FEATURES)
    saved = np.load(Path(model.path) / "validation.npz")
    assert len(saved["X"]) > 100
    assert np.array_equal(artifact.predict(saved["X"]), saved["probability"])


def test_report_holds_metrics_and_plots(quick_model):
    version, _ = quick_model
    html = (Path(model_store.get_model(version).path) / REPORT_FILE).read_text()
    assert html.count("data:image/png;base64,") >= 3
    for text in ("ROC-AUC", "roc_auc", "precision_at_50", "logistic", "rule", "SIMULATED"):
        assert text in html


def _tiny_store(path: Path, sessions: int) -> MarketStore:
    store = MarketStore(path)
    days = pd.bdate_range("2024-01-01", periods=sessions)
    rng = np.random.default_rng(0)
    rows = []
    for s in range(30):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, sessions)))
        rows.append(pd.DataFrame({
            "isin": f"INE{s:03d}A01010"[:12], "date": days.date, "open": close,
            "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1000.0,
            "exchange": "NSE"}))
    master = pd.DataFrame({
        "isin": [f"INE{s:03d}A01010"[:12] for s in range(30)], "nse_symbol": [
            f"S{s}" for s in range(30)], "bse_code": None, "name": "x", "sector": "x",
        "listing_date": date(2024, 1, 1), "active": True})
    with store.connect(read_only=False) as con:
        MarketStore.upsert_stocks(con, master)
        MarketStore.upsert_bars(con, pd.concat(rows))
    return store


def test_too_short_or_empty_store_stops_with_a_clear_message(tmp_path):
    with pytest.raises(DatasetError, match="at least .* sessions"):
        train(_tiny_store(tmp_path / "short.duckdb", 150), TrainConfig.for_mode(quick=True))
    empty = MarketStore(tmp_path / "empty.duckdb")
    with empty.connect(read_only=False):
        pass
    with pytest.raises(StoreError, match="no bars"):
        train(empty, TrainConfig.for_mode(quick=True))


def test_promote_refuses_a_model_whose_features_differ(quick_model, tmp_path):
    import bentoml

    version, result = quick_model
    meta = {**result.metadata, "features": list(reversed(FEATURES))}
    with bentoml.models.create("vcp_breakout", metadata=meta) as bad:
        (Path(bad.path) / "model.json").write_text("{}")
    with pytest.raises(model_store.ModelStoreError, match="feature list differs"):
        model_store.promote(bad.tag.version)
    assert model_store.read_active() == version
    bentoml.models.delete(bad.tag)
