"""Training: the breakout trade of every VCP setup, learned and judged honestly.

Steps (``train`` runs them in order; each is a function named for what it does):

1. ``load_market``     the whole price panel (``--quick``: a random 1,500 stocks).
2. ``build_setups``    every setup in the tradeable universe with its trade's outcome.
3. ``split_holdout``   the last 20% of labelled sessions sealed away (read once, in step 7).
4. ``choose_params``   walk-forward over the development sessions for each candidate of a
                       small grid; the best pooled out-of-fold precision@10 wins.
5. ``walk_forward``    the chosen parameters' folds: per-fold metrics with 95% intervals and the
                       out-of-fold predictions.
6. ``fit_evaluated``   one model on all development rows, calibrated (isotonic) on the
                       out-of-fold predictions.
7. ``judge_holdout``   the holdout opened once: the evaluated model against the rule (setups
                       ranked by relative strength) and, on the demo, the simulator's oracle;
                       then a trade simulation with Indian costs.
8. ``refit_served``    the served model: refit on all labelled rows, calibrated on out-of-fold
                       predictions (the walk-forward's and the evaluated model's on the
                       holdout); confidence thresholds from the same predictions.

Nothing in steps 3-6 sees the holdout's rows. Changing a default after looking at the holdout
would make it a development set: the metadata records that it was read once, by whom.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression

from features import FEATURE_DOCS, FEATURES, TradeParams
from features.indicators import ffill
from features.universe import Floors, median_traded_value_at
from market.store import MarketStore, Panel
from training_artifacts.artifact import (
    MODEL_NAME,
    REPORT_FILE,
    Calibrator,
    ModelArtifact,
    write_artifact,
)
from training_artifacts.costs import CostModel
from training_artifacts.dataset import DatasetError, SetupRows, build_setups
from training_artifacts.evaluation import (
    HOLDOUT_SHARE,
    KS,
    THRESHOLD_RULE,
    Fold,
    Sealed,
    choose_thresholds,
    holdout_start,
    judge,
    metrics,
    purged_walk_forward,
)
from training_artifacts.tradesim import PortfolioRules, simulate, summarize, universe_equity

EVALUATED_FILE = "evaluated_model.json"


@dataclass
class TrainConfig:
    quick: bool = False
    seed: int = 0
    n_folds: int = 4
    date_step: int = 1
    grid: list[dict[str, Any]] = field(default_factory=lambda: [
        {"max_depth": 3, "num_boost_round": 250},
        {"max_depth": 4, "num_boost_round": 300},
        {"max_depth": 5, "num_boost_round": 400},
    ])
    learning_rate: float = 0.04
    bootstrap: int = 400
    quick_stocks: int = 1500
    label: TradeParams = field(default_factory=TradeParams)
    floors: Floors = field(default_factory=Floors)
    portfolio: PortfolioRules = field(default_factory=PortfolioRules)
    costs: CostModel = field(default_factory=CostModel)

    @classmethod
    def for_mode(cls, quick: bool, seed: int = 0, floors: Floors | None = None) -> TrainConfig:
        cfg = cls(seed=seed, floors=floors or Floors())
        if quick:
            cfg = replace(cfg, quick=True, date_step=2, bootstrap=100,
                          grid=[{"max_depth": 3, "num_boost_round": 120}])
        return cfg

    def xgb_params(self, choice: dict[str, Any]) -> dict[str, Any]:
        return {
            "objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
            "max_depth": choice["max_depth"], "eta": self.learning_rate, "subsample": 0.8,
            "colsample_bytree": 0.8, "min_child_weight": 10, "nthread": 2, "seed": self.seed,
        }


@dataclass
class TrainResult:
    artifact: ModelArtifact
    evaluated: xgb.Booster
    metadata: dict[str, Any]
    report_html: str
    validation: dict[str, np.ndarray]
    seconds: float


@dataclass
class Market:
    panel: Panel
    meta: dict[str, str]
    episodes: pd.DataFrame | None  # the simulator's side table (demo only)


# -- steps -----------------------------------------------------------------------------------
def load_market(store: MarketStore, cfg: TrainConfig) -> Market:
    panel = store.load_panel(None, lookback=100_000)
    if cfg.quick and len(panel.isins) > cfg.quick_stocks:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(panel.isins), cfg.quick_stocks,
                                                               replace=False))
        for name in ("open", "high", "low", "close", "volume"):
            setattr(panel, name, getattr(panel, name)[keep])
        panel.isins = panel.isins[keep]
    meta = store.get_meta()
    episodes = None
    if meta.get("source") == "simulated":
        with store.connect() as con:
            episodes = con.execute("SELECT * FROM sim_episodes").df()
    return Market(panel, meta, episodes)


def split_holdout(rows: SetupRows, horizon: int) -> tuple[SetupRows, Sealed[SetupRows], int]:
    """(development rows, the sealed holdout, the holdout's first date index). Development rows
    end `horizon` sessions before the holdout, so none of their trades reaches into it."""
    start = holdout_start(rows.date_idx, HOLDOUT_SHARE)
    dev = rows.subset(rows.date_idx < start - horizon)
    hold = rows.subset(rows.date_idx >= start)
    if len(dev) == 0 or len(hold) == 0:
        raise DatasetError("too few labelled sessions for a development set and a holdout")
    return dev, Sealed(hold, "the final holdout"), start


def make_folds(dev: SetupRows, cfg: TrainConfig) -> list[Fold]:
    first, last = int(dev.date_idx.min()), int(dev.date_idx.max())
    span = last - first + 1
    try:
        return purged_walk_forward(first, last, cfg.n_folds, cfg.label.horizon,
                                   max(cfg.label.horizon + 20, span // 3))
    except ValueError as exc:
        raise DatasetError(f"history too short for walk-forward validation: {exc}") from None


def _fit(rows: SetupRows, cfg: TrainConfig, choice: dict[str, Any]) -> xgb.Booster:
    dm = xgb.DMatrix(rows.X, label=rows.y, missing=np.nan, feature_names=list(FEATURES))
    return xgb.train(cfg.xgb_params(choice), dm, num_boost_round=choice["num_boost_round"])


def _raw(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    return booster.predict(xgb.DMatrix(X, missing=np.nan, feature_names=list(FEATURES)))


@dataclass
class WalkForward:
    oof_index: np.ndarray  # development rows predicted out of fold
    oof_raw: np.ndarray
    folds: list[dict[str, Any]]


def walk_forward(dev: SetupRows, folds: list[Fold], cfg: TrainConfig, choice: dict[str, Any],
                 with_ci: bool = True) -> WalkForward:
    idx_all, raw_all, per_fold = [], [], []
    for fold in folds:
        train = dev.subset(dev.date_idx <= fold.train_end)
        test_mask = (dev.date_idx >= fold.test_start) & (dev.date_idx <= fold.test_end)
        test = dev.subset(test_mask)
        if len(test) == 0 or len(train) < 50 or train.y.min() == train.y.max():
            per_fold.append({**fold.to_dict(), "skipped": "too few setups in this fold"})
            continue
        raw = _raw(_fit(train, cfg, choice), test.X)
        idx_all.append(np.flatnonzero(test_mask))
        raw_all.append(raw)
        entry: dict[str, Any] = {**fold.to_dict(), "test_from": _day(dev, fold.test_start),
                                 "test_to": _day(dev, fold.test_end), "train_rows": len(train)}
        if with_ci:
            entry.update(judge(test.y, test.date_idx, _scores(test, raw), seed=cfg.seed,
                               probabilities=()))
        per_fold.append(entry)
    if not idx_all:
        raise DatasetError("no walk-forward fold had enough setups to train and test on")
    return WalkForward(np.concatenate(idx_all), np.concatenate(raw_all), per_fold)


def choose_params(dev: SetupRows, folds: list[Fold], cfg: TrainConfig
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid candidate with the best pooled out-of-fold precision@10 (ROC-AUC breaks ties).
    Sees development rows only."""
    tried = []
    for choice in cfg.grid:
        wf = walk_forward(dev, folds, cfg, choice, with_ci=False)
        oof = dev.subset(wf.oof_index)
        m = metrics(oof.y, wf.oof_raw, oof.date_idx, probability=False)
        tried.append({**choice, "oof_precision_at_10": m["precision_at_10"],
                      "oof_roc_auc": m["roc_auc"]})
    best = max(tried, key=lambda r: (np.nan_to_num(r["oof_precision_at_10"], nan=-1),
                                     np.nan_to_num(r["oof_roc_auc"], nan=-1)))
    return {k: best[k] for k in ("max_depth", "num_boost_round")}, tried


def _calibrate(raw: np.ndarray, y: np.ndarray) -> Calibrator:
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(raw, y)
    return Calibrator(np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_))


def _ranked(p: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Calibrated probabilities, ties broken by the uncalibrated score (for ranking only)."""
    order = np.argsort(np.argsort(raw, kind="stable"), kind="stable") / max(len(raw), 1)
    return p + 1e-9 * order


def _scores(rows: SetupRows, model_score: np.ndarray, natural: float | None = None
            ) -> dict[str, np.ndarray]:
    """The scorers judged side by side: the model, the rule (RS rating) and, on the demo,
    the oracle (the simulator's true probability; setups outside planted bases get the
    development base rate of such setups, ties broken by RS)."""
    out = {"model": model_score, "rule": rows.rs_rating.astype(np.float64)}
    if np.isfinite(rows.oracle).any():
        fill = natural if natural is not None else 0.0
        out["oracle"] = np.where(np.isfinite(rows.oracle), rows.oracle,
                                 fill + 1e-6 * rows.rs_rating / 100)
    return out


@dataclass
class Judged:
    metrics: dict[str, Any]
    trades: list[dict[str, Any]]
    curves: dict[str, np.ndarray]
    model_trades_r: np.ndarray
    probability: np.ndarray
    raw: np.ndarray


def judge_holdout(hold: SetupRows, evaluated: ModelArtifact, booster: xgb.Booster,
                  market: Market, cfg: TrainConfig, natural_rate: float) -> Judged:
    raw = _raw(booster, hold.X)
    p = evaluated.calibrator(raw)
    scores = _scores(hold, _ranked(p, raw), natural_rate)
    result = judge(hold.y, hold.date_idx, scores, seed=cfg.seed)
    result["model"]["brier"] = metrics(hold.y, p, hold.date_idx)["brier"]
    if "oracle" in result:
        for k in KS:
            o, m = result["oracle"][f"precision_at_{k}"], result["model"][f"precision_at_{k}"]
            result[f"model_share_of_oracle_at_{k}"] = float(m / o) if o else float("nan")
    order = np.lexsort((-scores["model"], hold.date_idx))
    top = order[_rank_within_day(hold.date_idx, order) < cfg.portfolio.top_k]
    r_top = hold.r_multiple[top][hold.fill_col[top] >= 0]  # the model's picks that filled
    return Judged(result, [], {}, r_top, p, raw)


def simulate_trades(rows: SetupRows, scores: dict[str, np.ndarray], market: Market,
                    cfg: TrainConfig) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Each strategy's portfolio from the first setup in `rows` to the end of the data, and
    the equal-weight universe over the same sessions."""
    panel = market.panel
    close = ffill(panel.close, 10)
    first, last = int(rows.date_idx.min()), int(panel.close.shape[1] - 1)
    strategies = {"model top-10": scores["model"], "rule top-10 (RS)": scores["rule"]}
    if "oracle" in scores:
        strategies["oracle top-10 (simulator)"] = scores["oracle"]
    trades, curves = [], {}
    for name, score in strategies.items():
        sim = simulate(rows, score, close, first, last, cfg.portfolio, cfg.costs)
        trades.append(summarize(name, sim))
        curves[name] = sim.equity
    every = simulate(rows, scores["rule"], close, first, last, cfg.portfolio, cfg.costs,
                     take_all=True, seed=cfg.seed)
    trades.append(summarize("every setup, taken equally", every))
    curves["every setup, taken equally"] = every.equity
    cols = np.arange(first - 1, last + 1)
    value = median_traded_value_at(panel.close, panel.volume, cols)
    tradeable = np.zeros(panel.close.shape, dtype=bool)
    tradeable[:, cols] = (value >= cfg.floors.min_traded_value) & (
        close[:, cols] >= cfg.floors.min_price)
    eq = universe_equity(close, tradeable, first, last, cfg.portfolio.capital)
    curves["equal-weight universe (no costs)"] = eq
    years = max(len(eq) - 1, 1) / 250
    trades.append({"strategy": "equal-weight universe (no costs)", "trades": float("nan"),
                   "hit_rate": float("nan"), "avg_r": float("nan"),
                   "cagr": float((eq[-1] / eq[0]) ** (1 / years) - 1),
                   "max_drawdown": float((eq / np.maximum.accumulate(eq) - 1).min()),
                   "final_equity": float(eq[-1] / eq[0]), "costs_pct_of_capital": 0.0})
    return trades, curves


def _rank_within_day(day: np.ndarray, order: np.ndarray) -> np.ndarray:
    d = day[order]
    starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
    return np.arange(len(d)) - np.repeat(starts, np.diff(np.r_[starts, len(d)]))


def refit_served(rows: SetupRows, cfg: TrainConfig, choice: dict[str, Any],
                 oof_raw: np.ndarray, oof_y: np.ndarray) -> tuple[xgb.Booster, Calibrator]:
    return _fit(rows, cfg, choice), _calibrate(oof_raw, oof_y)


# -- the whole run ---------------------------------------------------------------------------
def train(store: MarketStore, cfg: TrainConfig, progress=None) -> TrainResult:
    report_step = progress or (lambda *_a, **_k: None)
    started = time.perf_counter()
    stages: dict[str, float] = {}
    clock = {"name": None, "t": started}

    def step(message: str, *args, **kwargs) -> None:
        now = time.perf_counter()
        if clock["name"] is not None:
            stages[str(clock["name"])] = round(now - float(clock["t"]), 1)
        clock.update(name=message, t=now)
        report_step(message, *args, **kwargs)

    step("loading the price panel")
    market = load_market(store, cfg)
    rows = build_setups(market.panel, cfg.label, cfg.floors, cfg.date_step, market.episodes,
                        progress=step)
    dev, sealed, hold_from = split_holdout(rows, cfg.label.horizon)
    folds = make_folds(dev, cfg)
    step("choosing parameters on the walk-forward folds")
    choice, tried = choose_params(dev, folds, cfg)
    step("walk-forward folds with confidence intervals")
    wf = walk_forward(dev, folds, cfg, choice)
    oof = dev.subset(wf.oof_index)
    natural = dev.subset(~np.isfinite(dev.oracle)).base_rate if np.isfinite(
        dev.oracle).any() else None
    step("fitting the evaluated model")
    evaluated_booster = _fit(dev, cfg, choice)
    dev_calibrator = _calibrate(wf.oof_raw, oof.y)
    evaluated = ModelArtifact(evaluated_booster, dev_calibrator, list(FEATURES),
                              {"HIGH": 1.01, "MEDIUM": 1.01, "LOW": 0.0})
    step("judging once on the sealed holdout")
    hold = sealed.open()
    natural_or_base = natural if natural is not None else dev.base_rate
    judged = judge_holdout(hold, evaluated, evaluated_booster, market, cfg, natural_or_base)
    step("simulating trades")
    judged.trades, judged.curves = simulate_trades(hold, _scores(
        hold, _ranked(judged.probability, judged.raw), natural_or_base), market, cfg)
    # All out-of-sample predictions: the walk-forward's test folds, then the holdout.
    oos = _concat(oof, hold)
    oos_model = np.concatenate([_ranked(dev_calibrator(wf.oof_raw), wf.oof_raw),
                                _ranked(judged.probability, judged.raw)])
    oos_trades, oos_curves = simulate_trades(oos, _scores(oos, oos_model, natural_or_base),
                                             market, cfg)
    step("refitting the served model on all labelled setups")
    cal_raw = np.concatenate([wf.oof_raw, judged.raw])
    cal_y = np.concatenate([oof.y, hold.y])
    booster, calibrator = refit_served(rows, cfg, choice, cal_raw, cal_y)
    thresholds = choose_thresholds(cal_y, calibrator(cal_raw))
    artifact = ModelArtifact(booster, calibrator, list(FEATURES),
                             {k: thresholds[k] for k in ("HIGH", "MEDIUM", "LOW")})
    step("writing the report")
    metadata = _metadata(cfg, market, rows, dev, hold, hold_from, folds, choice, tried, wf,
                         judged, thresholds, calibrator, booster, evaluated_booster, stages,
                         time.perf_counter() - started)
    metadata["trade_simulation"]["out_of_sample"] = {
        "from": _day(rows, int(oos.date_idx.min())), "strategies": oos_trades}
    from training_artifacts.report import render_report

    report = render_report(metadata, FEATURE_DOCS, cal_y, calibrator(cal_raw), judged.curves,
                           judged.model_trades_r, oos_curves)
    validation = {"X": hold.X, "y": hold.y.astype(np.int8),
                  "probability": artifact.predict(hold.X),
                  "evaluated_probability": judged.probability}
    return TrainResult(artifact, evaluated_booster, metadata, report, validation,
                       time.perf_counter() - started)


def _concat(a: SetupRows, b: SetupRows) -> SetupRows:
    out = a.subset(np.arange(len(a)))
    for name in SetupRows._ROW_FIELDS:
        setattr(out, name, np.concatenate([getattr(a, name), getattr(b, name)]))
    return out


def _day(rows: SetupRows, idx: int) -> str:
    return str(pd.Timestamp(rows.dates[min(max(idx, 0), len(rows.dates) - 1)]).date())


def _booster_digest(booster: xgb.Booster) -> str:
    return hashlib.sha256(bytes(booster.save_raw("json"))).hexdigest()[:16]


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _metadata(cfg: TrainConfig, market: Market, rows: SetupRows, dev: SetupRows,
              hold: SetupRows, hold_from: int, folds: list[Fold], choice: dict[str, Any],
              tried: list[dict[str, Any]], wf: WalkForward, judged: Judged,
              thresholds: dict[str, Any], calibrator: Calibrator, booster: xgb.Booster,
              evaluated: xgb.Booster, stages: dict[str, float], seconds: float
              ) -> dict[str, Any]:
    gain = booster.get_score(importance_type="gain")
    meta = market.meta
    return {
        "features": list(FEATURES),
        "label_params": cfg.label.to_dict(),
        "label": "win of the breakout trade (features/labels.py)",
        "data_source": meta.get("source", "unknown"),
        "data_seed": meta.get("seed") or "",
        "store_updated_at": meta.get("updated_at") or "",
        "train_seed": cfg.seed,
        "quick": cfg.quick,
        "date_step": cfg.date_step,
        "universe": rows.counts,
        "setups": {"all": len(rows), "development": len(dev), "holdout": len(hold),
                   "base_rate_development": dev.base_rate, "base_rate_holdout": hold.base_rate,
                   "outcomes": rows.outcome_shares()},
        "training_window": {
            "first": _day(rows, int(rows.date_idx.min())),
            "development_to": _day(rows, int(dev.date_idx.max())),
            "holdout_from": _day(rows, hold_from),
            "holdout_to": _day(rows, int(hold.date_idx.max())),
            "last_labelled": _day(rows, int(rows.date_idx.max())),
            "data_to": _day(rows, len(rows.dates) - 1),
        },
        "holdout": {"share": HOLDOUT_SHARE, "read": 1,
                    "note": "sealed until every choice was made on the development folds; "
                            "read once to judge the evaluated model"},
        "folds": [f.to_dict() for f in folds],
        "parameter_search": {"chosen": choice, "tried": tried,
                             "criterion": "pooled out-of-fold precision@10 (ROC-AUC on ties)"},
        "xgboost_params": {**cfg.xgb_params(choice), "num_boost_round":
                           choice["num_boost_round"]},
        "metrics": {"walk_forward": wf.folds, "holdout": judged.metrics},
        "trade_simulation": {"rules": cfg.portfolio.to_dict(), "costs": cfg.costs.to_dict(),
                             "strategies": judged.trades},
        "thresholds": {k: thresholds[k] for k in ("HIGH", "MEDIUM", "LOW")},
        "threshold_detail": thresholds["detail"],
        "threshold_rule": THRESHOLD_RULE,
        "calibration": {"method": "isotonic", "points": int(len(calibrator.x)),
                        "fitted_on": "out-of-fold predictions: walk-forward folds and the "
                                     "evaluated model on the holdout",
                        "rows": int(len(wf.oof_raw) + len(hold))},
        "models": {
            "evaluated": {"trained_on": "development setups (before the holdout)",
                          "calibrated_on": "walk-forward out-of-fold predictions",
                          "judged_on": "the holdout, once", "digest": _booster_digest(evaluated),
                          "file": EVALUATED_FILE},
            "served": {"trained_on": "all labelled setups (development and holdout)",
                       "calibrated_on": "out-of-fold predictions of every labelled setup",
                       "digest": _booster_digest(booster)},
        },
        "feature_importance_gain": {f: float(gain.get(f, 0.0)) for f in FEATURES},
        "versions": {"python": platform.python_version(), "xgboost": xgb.__version__,
                     "scikit-learn": sklearn.__version__, "numpy": np.__version__},
        "git_commit": git_commit(),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_seconds": round(seconds, 1),
        "stage_seconds": stages,
    }


def save(result: TrainResult, reports_dir: Path | None = None) -> tuple[str, Path | None]:
    """Save to the BentoML model store as `vcp_breakout`; also write the report for the user."""
    import bentoml

    labels = {"data_source": str(result.metadata["data_source"]),
              "quick": str(result.metadata["quick"]).lower()}
    metadata = _plain(result.metadata)
    with bentoml.models.create(MODEL_NAME, labels=labels, metadata=metadata) as model:
        folder = Path(model.path)
        write_artifact(folder, result.artifact.booster, result.artifact.calibrator,
                       result.validation)
        result.evaluated.save_model(str(folder / EVALUATED_FILE))
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


def _plain(value: Any) -> Any:
    """BentoML metadata takes basic Python types only: numpy scalars and tuples converted,
    NaN kept as float."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None:
        return ""
    return value


__all__ = ["Fold", "TrainConfig", "TrainResult", "train", "save", "DatasetError"]
