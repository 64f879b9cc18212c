"""The human-readable daily report (`report_YYYY-MM-DD.txt`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

TOP_N = 25
CONFIDENCE_LEVELS = ("HIGH", "MEDIUM", "LOW")
TRADE_DEFINITION = ("a buy-stop at the pivot for 10 sessions fills, then +20% is reached before "
                    "the stop (last contraction's low, at most -8%) within 60 sessions")


def reason_kind(reason: str) -> str:
    """'stale: last trade 7 sessions before the date' -> 'stale'."""
    return reason.split(":", 1)[0].strip()


def _fmt(x: Any, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return format(x, spec)


def _text(x: Any) -> str:
    return x if isinstance(x, str) and x else "-"


def data_source_banner(source: str, seed: str | None) -> list[str]:
    if source == "simulated":
        line = (f"DATA SOURCE: SIMULATED demo market{f' (seed {seed})' if seed else ''}: "
                "made-up stocks, NOT real companies; the figures describe the simulator")
        bar = "!" * len(line)
        return [bar, line, bar]
    return [f"data source: {source}"]


def render_report(
    *,
    prediction_date: str,
    run_id: str,
    mode: str,
    store_info: dict[str, Any],
    model: dict[str, Any],
    predictions: pd.DataFrame,
    skipped: pd.DataFrame,
    n_universe: int,
    timings: dict[str, float],
    created_at: str,
    data_checks: list[str] | None = None,
    near_setups: pd.DataFrame | None = None,
    universe: dict[str, int] | None = None,
) -> str:
    lines: list[str] = [f"VCP breakout daily batch: prediction date {prediction_date}", ""]
    lines += data_source_banner(store_info.get("source", "unknown"), store_info.get("seed"))
    lines += [
        "",
        f"run id:         {run_id}",
        f"created at:     {created_at} (UTC)",
        f"scored by:      {mode}",
        f"model:          vcp_breakout:{model['version']}"
        + (f" (trained on {model['data_source']} data)" if model.get("data_source") else ""),
    ]
    store_source = store_info.get("source", "unknown")
    if model.get("data_source") and model["data_source"] != store_source:
        lines.append(f"WARNING:        the model was trained on {model['data_source']} data but "
                     f"the store holds {store_source} data")
    if model.get("thresholds"):
        t = model["thresholds"]
        lines.append(f"confidence:     HIGH >= {t['HIGH']:.4f}, MEDIUM >= {t['MEDIUM']:.4f}, "
                     "LOW below (thresholds from the model metadata)")
    lines += [
        f"market store:   {store_info.get('path')} (updated {store_info.get('updated_at')})",
        "success means:  " + TRADE_DEFINITION,
        "",
        "COUNTS",
        f"  stock master             {n_universe:>7,}",
    ]
    u = universe or {}
    for key, label in (("scoreable", "scoreable (history, traded)"),
                       ("illiquid", "  excluded: liquidity floor"),
                       ("below_price_floor", "  excluded: price floor"),
                       ("tradeable", "tradeable universe"),
                       ("setups_before_floors", "VCP setups before floors"),
                       ("setups", "VCP setups scored"),
                       ("near_setups", "near-setups")):
        if key in u:
            lines.append(f"  {label:26s} {u[key]:>7,}")
    lines += [
        f"  {'without a probability':26s} {len(skipped):>7,}",
        "",
        "DISTRIBUTION BY CONFIDENCE (setups)",
        f"  {'level':8s} {'setups':>7s} {'share':>7s} {'mean p':>7s} {'min p':>7s} {'max p':>7s}",
    ]
    n = max(len(predictions), 1)
    for level in CONFIDENCE_LEVELS:
        p = predictions.loc[predictions["confidence"] == level, "probability"]
        lines.append(
            f"  {level:8s} {len(p):>7,} {len(p) / n:>7.1%} "
            f"{_fmt(p.mean() if len(p) else None, '.4f'):>7s} "
            f"{_fmt(p.min() if len(p) else None, '.4f'):>7s} "
            f"{_fmt(p.max() if len(p) else None, '.4f'):>7s}"
        )
    if len(predictions):
        q = np.quantile(predictions["probability"], [0.1, 0.5, 0.9])
        lines.append(f"  probability quantiles: p10 {q[0]:.4f}  p50 {q[1]:.4f}  p90 {q[2]:.4f}")
    lines += ["", f"SETUPS BY PROBABILITY (top {TOP_N})"]
    if not len(predictions):
        lines.append("  no VCP setup in the tradeable universe today")
    else:
        lines.append(f"  {'rank':>4s} {'nse':12s} {'bse':6s} {'name':24s} {'prob':>6s} "
                     f"{'conf':6s} {'footprint':18s} {'close':>9s} {'pivot':>9s} {'stop':>9s} "
                     f"{'risk':>6s}")
    for r in predictions.head(TOP_N).itertuples(index=False):
        lines.append(
            f"  {r.rank:>4d} {_text(r.nse_symbol)[:12]:12s} {_text(r.bse_code):6s} "
            f"{_text(r.name)[:24]:24s} {r.probability:>6.4f} {r.confidence:6s} "
            f"{_text(r.footprint)[:18]:18s} {_fmt(r.close):>9s} {_fmt(r.pivot_price):>9s} "
            f"{_fmt(r.stop_price):>9s} {_fmt(r.risk_pct, '.1%'):>6s}"
        )
    if near_setups is not None:
        lines += ["", f"NEAR-SETUPS (closest to the pivot first, top {TOP_N})"]
        if not len(near_setups):
            lines.append("  none")
        for r in near_setups.head(TOP_N).itertuples(index=False):
            lines.append(f"  {_text(r.nse_symbol)[:12]:12s} {_text(r.bse_code):6s} "
                         f"{_fmt(r.close):>9s}  {_text(r.why_not)}")
    lines += ["", "SKIPPED BY REASON"]
    kinds = Counter(reason_kind(r) for r in skipped["reason"])
    if not kinds:
        lines.append("  none")
    for kind, count in kinds.most_common():
        example = skipped.loc[skipped["reason"].map(reason_kind) == kind, "reason"].iloc[0]
        lines.append(f"  {kind:22s} {count:>7,}   e.g. {example}")
    if data_checks:  # missing sessions shift every window: said, not skipped silently
        lines += ["", "DATA CHECKS", *(f"  {c}" for c in data_checks)]
    lines += ["", "STAGE TIMINGS (seconds)"]
    for stage, seconds in timings.items():
        lines.append(f"  {stage:32s} {seconds:>7.2f}")
    lines.append(f"  {'total so far':32s} {sum(timings.values()):>7.2f}")
    d = prediction_date
    lines += ["", f"Outputs of this run: predictions_{d}.csv (setups, then near-setups), "
              f"skipped_stocks_{d}.csv, report_{d}.html (charts), this report and the "
              "daily_predictions / batch_runs tables.", ""]
    return "\n".join(lines)
