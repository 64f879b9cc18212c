"""Purged walk-forward training of the XGBoost model, calibration, report and saving.

Schedule (date indices on the trading calendar, labels complete):

    [ first train ... | fold 1 | fold 2 | fold 3 | fold 4 | fold 5 (untouched) ]

* Folds 1-4 are the walk-forward validation: for each, XGBoost and the logistic baseline train
  on every row dated at or before `test_start - horizon - 1` (the purge: no training label
  window reaches into the test block) and are scored on the block; the rule baseline needs
  no training.
* The final model trains on everything before fold 5 except the last `calibration_dates`
  dates before fold 5's purge, which are held out (again purged) for the isotonic
  calibration and the confidence thresholds. It is then judged once on fold 5.
"""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import xgboost as xgb
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from features import FEATURE_DOCS, FEATURES, LabelParams
from market.store import MarketStore
from training_artifacts.artifact import (
    MODEL_NAME,
    REPORT_FILE,
    Calibrator,
    ModelArtifact,
    write_artifact,
)
from training_artifacts.dataset import Dataset, DatasetError, build_dataset
from training_artifacts.evaluation import (
    THRESHOLD_RULE,
    Fold,
    choose_thresholds,
    evaluate,
    precision_at_k_curve,
    purged_walk_forward,
)


@dataclass
class TrainConfig:
    quick: bool = False
    seed: int = 0
    n_folds: int = 5
    date_step: int = 5
    n_trees: int = 300
    max_depth: int = 5
    learning_rate: float = 0.06
    calibration_dates: int = 60
    quick_stocks: int = 1500
    label: LabelParams = field(default_factory=LabelParams)

    @classmethod
    def for_mode(cls, quick: bool, seed: int = 0) -> TrainConfig:
        if quick:
            return cls(quick=True, seed=seed, date_step=4, n_trees=80, max_depth=4)
        return cls(seed=seed)

    def xgb_params(self) -> dict[str, Any]:
        return {
            "objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
            "max_depth": self.max_depth, "eta": self.learning_rate, "subsample": 0.8,
            "colsample_bytree": 0.8, "min_child_weight": 20, "nthread": 2, "seed": self.seed,
        }


@dataclass
class TrainResult:
    artifact: ModelArtifact
    metadata: dict[str, Any]
    report_html: str
    validation: dict[str, np.ndarray]
    seconds: float


def _fit_xgb(ds: Dataset, cfg: TrainConfig) -> xgb.Booster:
    dm = xgb.DMatrix(ds.X, label=ds.y, missing=np.nan, feature_names=list(FEATURES))
    return xgb.train(cfg.xgb_params(), dm, num_boost_round=cfg.n_trees)


def _predict(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    return booster.predict(xgb.DMatrix(X, missing=np.nan, feature_names=list(FEATURES)))


def _fit_logistic(ds: Dataset, cfg: TrainConfig):
    model = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=500, C=1.0, random_state=cfg.seed),
    )
    model.fit(_logistic_input(ds.X), ds.y)
    return model


def _logistic_input(X: np.ndarray) -> np.ndarray:
    # Infinities become missing (imputed); huge values are bounded for the scaler.
    return np.clip(np.nan_to_num(X, nan=np.nan, posinf=np.nan, neginf=np.nan), -1e6, 1e6)


def _logistic_predict(model, X: np.ndarray) -> np.ndarray:
    return model.predict_proba(_logistic_input(X))[:, 1]


def rule_score(ds: Dataset) -> np.ndarray:
    """Baseline (a): Trend Template passes and a VCP is detected, ranked by RS rating."""
    return ds.rule_pass * 100.0 + ds.rs_rating


def _judge_all(test: Dataset, model_p: np.ndarray, logistic_p: np.ndarray) -> dict[str, Any]:
    def judge(score: np.ndarray, is_probability: bool = True) -> dict[str, float]:
        return evaluate(test.y, score, test.realized_r, test.date_idx, is_probability)

    return {"model": judge(model_p), "logistic": judge(logistic_p),
            "rule": judge(rule_score(test), is_probability=False)}


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _date(ds: Dataset, idx: int) -> str:
    return str(pd.Timestamp(ds.dates[min(max(idx, 0), len(ds.dates) - 1)]).date())


def train(store: MarketStore, cfg: TrainConfig, progress=None) -> TrainResult:
    """Run the whole schedule on the store and return the final model with its metadata."""
    report_step = progress or (lambda *_a, **_k: None)
    started = time.perf_counter()
    stages: dict[str, float] = {}
    stage_clock = {"name": None, "t": started}

    def step(message: str, *args, **kwargs) -> None:
        # Times each stage until the next message, for the metadata and the note.
        now = time.perf_counter()
        if stage_clock["name"] is not None:
            stages[stage_clock["name"]] = round(now - stage_clock["t"], 1)
        stage_clock.update(name=message, t=now)
        report_step(message, *args, **kwargs)

    store_meta = store.get_meta()
    step("loading the price panel")
    panel = store.load_panel(None, lookback=100_000)
    if cfg.quick and len(panel.isins) > cfg.quick_stocks:
        rng = np.random.default_rng(cfg.seed)
        keep = np.sort(rng.choice(len(panel.isins), cfg.quick_stocks, replace=False))
        for name in ("open", "high", "low", "close", "volume"):
            setattr(panel, name, getattr(panel, name)[keep])
        panel.isins = panel.isins[keep]
    ds = build_dataset(panel, cfg.label, date_step=cfg.date_step, progress=step)
    horizon = cfg.label.horizon
    first, last = int(ds.date_idx.min()), int(ds.date_idx.max())
    span = last - first + 1
    min_train = max(horizon + 30, span // 4)
    try:
        folds = purged_walk_forward(first, last, cfg.n_folds, horizon, min_train)
    except ValueError as exc:
        raise DatasetError(f"history too short for walk-forward validation: {exc}") from None

    fold_rows: list[dict[str, Any]] = []
    oof_p, oof_rule, oof_lr, oof_idx = [], [], [], []
    for fold in folds[:-1]:
        step(f"walk-forward fold {fold.number}/{len(folds) - 1}")
        train_ds = ds.subset(ds.date_idx <= fold.train_end)
        test_ds = ds.subset((ds.date_idx >= fold.test_start) & (ds.date_idx <= fold.test_end))
        if len(train_ds) == 0 or len(test_ds) == 0 or train_ds.y.min() == train_ds.y.max():
            raise DatasetError(f"fold {fold.number} has no usable training or test rows")
        booster = _fit_xgb(train_ds, cfg)
        p = _predict(booster, test_ds.X)
        lr_p = _logistic_predict(_fit_logistic(train_ds, cfg), test_ds.X)
        judged = _judge_all(test_ds, p, lr_p)
        fold_rows.append({**fold.to_dict(), "test_from": _date(ds, fold.test_start),
                          "test_to": _date(ds, fold.test_end),
                          "train_to": _date(ds, fold.train_end), **judged})
        oof_p.append(p)
        oof_lr.append(lr_p)
        oof_rule.append(rule_score(test_ds))
        oof_idx.append(np.flatnonzero((ds.date_idx >= fold.test_start)
                                      & (ds.date_idx <= fold.test_end)))
    oof = ds.subset(np.concatenate(oof_idx))
    overall = _judge_all(oof, np.concatenate(oof_p), np.concatenate(oof_lr))

    last_fold = folds[-1]
    cal_end = last_fold.train_end
    cal_start = cal_end - cfg.calibration_dates + 1
    final_train_end = cal_start - horizon - 1
    step("training the final model")
    final_train = ds.subset(ds.date_idx <= final_train_end)
    calib = ds.subset((ds.date_idx >= cal_start) & (ds.date_idx <= cal_end))
    test = ds.subset((ds.date_idx >= last_fold.test_start) & (ds.date_idx <= last_fold.test_end))
    for name, part in (("final training", final_train), ("calibration", calib), ("test", test)):
        if len(part) == 0 or part.y.min() == part.y.max():
            raise DatasetError(f"the {name} window has no usable rows of both classes")
    booster = _fit_xgb(final_train, cfg)
    step("calibrating")
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(_predict(booster, calib.X), calib.y)
    calibrator = Calibrator(np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_))
    thresholds = choose_thresholds(calib.y, calibrator(_predict(booster, calib.X)))
    artifact = ModelArtifact(booster, calibrator, list(FEATURES), thresholds)

    step("judging once on the untouched last fold")
    test_p = artifact.predict(test.X)
    lr_final = _fit_logistic(final_train, cfg)
    lr_p = _logistic_predict(lr_final, test.X)
    last_judged = _judge_all(test, test_p, lr_p)
    m, r, lg = last_judged["model"], last_judged["rule"], last_judged["logistic"]
    margins = {
        "roc_auc_vs_rule": m["roc_auc"] - r["roc_auc"],
        "roc_auc_vs_logistic": m["roc_auc"] - lg["roc_auc"],
        "precision_at_50_vs_rule": m["precision_at_50"] - r["precision_at_50"],
        "precision_at_50_vs_logistic": m["precision_at_50"] - lg["precision_at_50"],
    }
    ks = [5, 10, 20, 50, 100, 200]
    curves = {
        "k": ks,
        "model": precision_at_k_curve(test.y, test_p, test.date_idx, ks),
        "logistic": precision_at_k_curve(test.y, lr_p, test.date_idx, ks),
        "rule": precision_at_k_curve(test.y, rule_score(test), test.date_idx, ks),
    }
    gain = booster.get_score(importance_type="gain")
    importance = {f: float(gain.get(f, 0.0)) for f in FEATURES}
    step("writing the report")
    seconds = time.perf_counter() - started
    metadata: dict[str, Any] = {
        "features": list(FEATURES),
        "label_params": cfg.label.to_dict(),
        "data_source": store_meta.get("source", "unknown"),
        "data_seed": store_meta.get("seed", ""),  # real stores have no seed; BentoML refuses None
        "store_updated_at": store_meta.get("updated_at"),
        "train_seed": cfg.seed,
        "quick": cfg.quick,
        "universe_size": len(ds.isins),
        "rows": len(ds),
        "date_step": cfg.date_step,
        "training_window": {
            "first": _date(ds, first), "final_train_to": _date(ds, final_train_end),
            "calibration_from": _date(ds, cal_start), "calibration_to": _date(ds, cal_end),
            "test_from": _date(ds, last_fold.test_start), "test_to": _date(ds, last_fold.test_end),
            "data_to": _date(ds, len(ds.dates) - 1),
        },
        "folds": [f.to_dict() for f in folds],
        "xgboost_params": {**cfg.xgb_params(), "num_boost_round": cfg.n_trees},
        "metrics": {"folds": fold_rows, "walk_forward": overall, "last_fold": last_judged,
                    "last_fold_margins": margins},
        "precision_at_k": curves,
        "thresholds": thresholds,
        "threshold_rule": THRESHOLD_RULE,
        "calibration": {"method": "isotonic", "points": int(len(calibrator.x)),
                        "fitted_on_rows": len(calib)},
        "feature_importance_gain": importance,
        "versions": {"python": platform.python_version(), "xgboost": xgb.__version__,
                     "scikit-learn": sklearn.__version__, "numpy": np.__version__},
        "git_commit": git_commit(),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_seconds": round(seconds, 1),
        "stage_seconds": stages,
    }
    from training_artifacts.report import render_report

    validation = {"X": test.X, "probability": test_p, "y": test.y.astype(np.int8)}
    report = render_report(metadata, FEATURE_DOCS, test.y, test_p)
    return TrainResult(artifact, metadata, report, validation, seconds)


def save(result: TrainResult, reports_dir: Path | None = None) -> tuple[str, Path | None]:
    """Save to the BentoML model store as `vcp_breakout`; also write the report for the user."""
    import bentoml

    labels = {"data_source": str(result.metadata["data_source"]),
              "quick": str(result.metadata["quick"]).lower()}
    with bentoml.models.create(MODEL_NAME, labels=labels, metadata=result.metadata) as model:
        folder = Path(model.path)
        write_artifact(folder, result.artifact.booster, result.artifact.calibrator,
                       result.validation)
        (folder / REPORT_FILE).write_text(result.report_html)
    version = model.tag.version
    out = None
    if reports_dir is not None:
        reports_dir.mkdir(parents=True, exist_ok=True)
        out = reports_dir / f"report_{MODEL_NAME}_{version}.html"
        tmp = out.with_suffix(".html.tmp")
        tmp.write_text(result.report_html)
        tmp.replace(out)
    return version, out


__all__ = ["Fold", "TrainConfig", "TrainResult", "train", "save", "DatasetError"]
