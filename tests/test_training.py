"""Training on the small simulated store: folds purged, the holdout sealed and read once,
the saved model reproducing its predictions, the report and the stops on bad stores."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features import FEATURES, TradeParams
from market.store import MarketStore, StoreError
from training_artifacts import model_store
from training_artifacts import train as train_module
from training_artifacts.artifact import REPORT_FILE, read_artifact
from training_artifacts.dataset import DatasetError
from training_artifacts.evaluation import HoldoutAlreadyRead, Sealed, purged_walk_forward
from training_artifacts.train import EVALUATED_FILE, TrainConfig, train


def test_folds_are_purged_and_the_holdout_comes_after_them(quick_model):
    _, result = quick_model
    meta = result.metadata
    horizon = meta["label_params"]["entry_window"] + meta["label_params"]["hold"]
    assert len(meta["folds"]) == TrainConfig().n_folds
    for fold in meta["folds"]:
        # Every training trade window (D+1 .. D+horizon) ends before the test period starts.
        assert fold["train_end"] + horizon < fold["test_start"] <= fold["test_end"]
    win = meta["training_window"]
    assert win["development_to"] < win["holdout_from"] <= win["holdout_to"]
    dev_end = pd.Timestamp(win["development_to"])
    gap = len(pd.bdate_range(dev_end, win["holdout_from"])) - 1
    assert gap > horizon  # weekdays >= sessions: no development trade reaches the holdout
    assert meta["holdout"]["read"] == 1


def test_walk_forward_folds_expand_and_purge():
    folds = purged_walk_forward(0, 499, n_folds=5, horizon=60, min_train=100)
    assert [f.test_start for f in folds] == sorted(f.test_start for f in folds)
    for prev, nxt in zip(folds, folds[1:], strict=False):
        assert nxt.train_end > prev.train_end  # expanding
        assert prev.test_end + 1 == nxt.test_start
    assert all(f.test_start - f.train_end > 60 for f in folds)


def test_the_holdout_can_be_read_once():
    sealed = Sealed([1, 2, 3], "the final holdout")
    assert sealed.open() == [1, 2, 3]
    with pytest.raises(HoldoutAlreadyRead, match="already read"):
        sealed.open()


def test_tuning_never_reads_the_holdout(small_store, quick_model, monkeypatch):
    """Flip every holdout label and scramble its features: every choice made before the
    holdout is opened (parameters, folds, the evaluated model) must come out the same."""
    _, clean = quick_model
    real_build = train_module.build_setups

    def poisoned(*args, **kwargs):
        rows = real_build(*args, **kwargs)
        hold = rows.date_idx >= train_module.holdout_start(rows.date_idx)
        rows.y[hold] = 1 - rows.y[hold]
        rows.X[hold] = rows.X[hold][::-1]
        return rows

    monkeypatch.setattr(train_module, "build_setups", poisoned)
    dirty = train(small_store, TrainConfig.for_mode(quick=True, seed=1)).metadata
    meta = clean.metadata
    for key in ("parameter_search", "folds"):
        assert _same(dirty[key], meta[key]), key
    assert _same(dirty["metrics"]["walk_forward"], meta["metrics"]["walk_forward"])
    assert dirty["models"]["evaluated"]["digest"] == meta["models"]["evaluated"]["digest"]
    # ... while the holdout's own verdict does change: the poison did reach it.
    assert dirty["metrics"]["holdout"]["model"]["base_rate"] != pytest.approx(
        meta["metrics"]["holdout"]["model"]["base_rate"])


def _same(a, b) -> bool:
    """Equal, NaN included (json writes it as NaN on both sides)."""
    return json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str,
                                                                    sort_keys=True)


def test_metadata_round_trips_through_the_model_store(quick_model):
    version, result = quick_model
    stored = model_store.get_model(version).info.metadata
    assert json.loads(json.dumps(stored, default=str)) == json.loads(
        json.dumps(train_module._plain(result.metadata), default=str))
    assert stored["features"] == list(FEATURES)
    assert stored["data_source"] == "simulated"
    assert set(stored["thresholds"]) >= {"HIGH", "MEDIUM", "LOW"}
    assert stored["label_params"] == TradeParams().to_dict()
    assert set(stored["models"]) == {"evaluated", "served"}
    assert stored["universe"]["floors"] == {"min_traded_value": 1e7, "min_price": 20.0}


def test_saved_models_reproduce_their_holdout_predictions(quick_model):
    import xgboost as xgb

    version, result = quick_model
    model = model_store.get_model(version)
    folder = Path(model.path)
    artifact = read_artifact(folder, model.info.metadata, FEATURES)
    saved = np.load(folder / "validation.npz")
    assert len(saved["X"]) >= 20
    assert np.array_equal(artifact.predict(saved["X"]), saved["probability"])
    # The evaluated model (before the refit) is saved too, and its holdout ROC-AUC is the
    # one recorded.
    evaluated = xgb.Booster(model_file=str(folder / EVALUATED_FILE))
    raw = evaluated.predict(xgb.DMatrix(saved["X"], missing=np.nan,
                                        feature_names=list(FEATURES)))
    hold = model.info.metadata["metrics"]["holdout"]["model"]
    assert roc_auc_score(saved["y"], raw) == pytest.approx(hold["roc_auc"], abs=1e-6)


def test_report_holds_the_verdict_and_its_plots(quick_model):
    version, _ = quick_model
    html = (Path(model_store.get_model(version).path) / REPORT_FILE).read_text()
    assert html.count("data:image/png;base64,") >= 5  # equity, drawdown, R, calibration, gain
    for text in ("Holdout", "read once", "Trade simulation", "rule", "oracle", "95%",
                 "SIMULATED", "Calibration over the whole range"):
        assert text in html, text


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
