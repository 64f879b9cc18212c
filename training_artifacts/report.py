"""The evaluation report: one self-contained HTML file with the plots embedded as PNG."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

METRICS = ["roc_auc", "brier", "precision_at_5", "precision_at_10", "precision_at_20",
           "base_rate", "rows", "days"]
# Tables fit the 1000 px page: short headers that may wrap, values that do not.
CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;max-width:100%;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 6px;text-align:right}td{white-space:nowrap}
th{background:#f3f3f3}.banner{background:#fff3cd;padding:8px;border:1px solid
#e0c36a}img{max-width:100%}td.text{white-space:normal;text-align:left}"""
# Column headers of the metric tables; metrics counted in whole numbers are shown as such.
LABELS = {"roc_auc": "ROC-AUC", "brier": "Brier", "base_rate": "base rate",
          "precision_at_5": "precision @5", "precision_at_10": "precision @10",
          "precision_at_20": "precision @20", "rows": "setups", "days": "days",
          "trades": "trades", "hit_rate": "hit rate", "avg_r": "avg R", "cagr": "CAGR",
          "max_drawdown": "max drawdown", "final_equity": "final equity",
          "costs_pct_of_capital": "costs"}
INTEGER_METRICS = {"rows", "days", "trades"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'


def _fmt(v: Any, integer: bool = False) -> str:
    if isinstance(v, bool):
        return html.escape(str(v))
    if isinstance(v, (int, np.integer)) or (integer and isinstance(v, (float, np.floating))
                                             and np.isfinite(v)):
        return f"{round(v):,}"
    if isinstance(v, (float, np.floating)):
        return "n/a" if np.isnan(v) else f"{v:.4f}"
    return html.escape(str(v))


def _table(rows: dict[str, dict[str, float]], metrics: list[str] = METRICS) -> str:
    # Each metric's key in the model metadata as the header's tooltip.
    head = "".join(f"<th title='{html.escape(m)}'>{html.escape(LABELS.get(m, m))}</th>"
                   for m in metrics)
    body = "".join(
        f"<tr><th>{html.escape(name)}</th>" + "".join(
            f"<td>{_fmt(vals.get(m), integer=m in INTEGER_METRICS)}</td>" for m in metrics)
        + "</tr>"
        for name, vals in rows.items()
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _ci_table(judged: dict[str, Any], names: list[str]) -> str:
    """Metrics with their 95% intervals, one row per scorer."""
    keys = ["roc_auc", "brier", "precision_at_5", "precision_at_10", "precision_at_20"]
    head = "".join(f"<th>{html.escape(LABELS[k])}</th>" for k in keys)
    body = ""
    for name in names:
        m = judged.get(name)
        if not m:
            continue
        ci = m.get("ci95", {})
        cells = "".join(
            f"<td>{_fmt(m.get(k))}<br><small>{_interval(ci.get(k))}</small></td>" for k in keys)
        body += f"<tr><th>{html.escape(name)}</th>{cells}</tr>"
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _interval(ci: Any) -> str:
    if not ci or not all(np.isfinite(ci)):
        return ""
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _calibration_plot(y: np.ndarray, p: np.ndarray) -> str:
    """Reliability over the whole probability range: 10 equal-width bins from 0 to 1."""
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(p, edges) - 1, 0, 9)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    xs, ys, ns = [], [], []
    for b in range(10):
        sel = idx == b
        if sel.sum() >= 5:
            xs.append(p[sel].mean())
            ys.append(y[sel].mean())
            ns.append(int(sel.sum()))
    ax.plot(xs, ys, "o-", label="out-of-fold setups")
    for x, yy, n in zip(xs, ys, ns, strict=True):
        ax.annotate(f"{n:,}", (x, yy), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("calibrated probability (bin mean)")
    ax.set_ylabel("observed win rate")
    ax.legend(loc="upper left")
    return _png(fig)


def _equity_plots(curves: dict[str, np.ndarray], dates: list[str]) -> str:
    fig, (ax, dd) = plt.subplots(2, 1, figsize=(9, 6), sharex=True,
                                 gridspec_kw={"height_ratios": [2, 1]})
    for name, eq in curves.items():
        eq = np.asarray(eq, dtype=float)
        ax.plot(eq / eq[0], label=name, lw=1.2)
        dd.plot(eq / np.maximum.accumulate(eq) - 1, lw=1)
    ax.set_ylabel("net equity (start = 1)")
    ax.legend(fontsize=8)
    dd.set_ylabel("drawdown")
    if dates:
        ticks = [0, len(dates) - 1]
        dd.set_xticks(ticks)
        dd.set_xticklabels([dates[t] for t in ticks], fontsize=8)
    return _png(fig)


def _r_plot(r: np.ndarray) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    r = r[np.isfinite(r)]
    if len(r):
        ax.hist(np.clip(r, -3, 6), bins=36, color="tab:blue")
        ax.axvline(0, color="k", lw=1)
    ax.set_xlabel("R of the model's top-10 trades that filled (clipped to [-3, 6])")
    ax.set_ylabel("trades")
    return _png(fig)


def _importance_plot(importance: dict[str, float]) -> str:
    items = sorted(importance.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 7))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set_xlabel("total gain")
    return _png(fig)


DEFINITIONS = {
    "setup": "a (stock, session) where the VCP detector finds a setup and the stock is inside "
             "the universe's liquidity and price floors",
    "win": "the breakout trade reaches +20% before its stop (the label)",
    "R": "the trade's return over its initial risk, (fill - stop) / fill; net R in the trade "
         "simulation also pays costs",
    "precision @k": "the mean over sessions with at least k setups of the share of the day's "
                    "top k setups (by the scorer) whose trade won",
    "ROC-AUC": "the chance that a random winning setup is scored above a random other setup",
    "Brier": "mean squared error of the probability (calibrated scorers only)",
    "[a, b]": "95% interval from a bootstrap over blocks of 10 consecutive sessions",
    "rule": "setups ranked by relative-strength rating (IBD-style, 1-99)",
    "oracle": "the simulator's true probability of the trade (demo only): the ceiling",
    "hit rate": "winning trades over filled trades in the simulation",
    "CAGR": "compound annual growth of net equity over the holdout's sessions",
    "max drawdown": "the worst fall of net equity from its running peak",
    "costs": "all brokerage, taxes, fees and slippage paid, as a share of starting capital",
}


def render_report(
    meta: dict[str, Any], feature_docs: dict[str, str], y_oof: np.ndarray, p_oof: np.ndarray,
    curves: dict[str, np.ndarray], r_top: np.ndarray, oos_curves: dict[str, np.ndarray],
) -> str:
    hold = meta["metrics"]["holdout"]
    simulated = meta.get("data_source") == "simulated"
    banner = (
        '<p class="banner">Trained and judged on <b>SIMULATED</b> market data (seed '
        f'{html.escape(str(meta.get("data_seed")))}): these figures describe the simulator, '
        "not real NSE/BSE stocks.</p>" if simulated else ""
    )
    win = meta["training_window"]
    names = ["model", "rule"] + (["oracle"] if "oracle" in hold else [])
    diff = hold.get("model_minus_rule", {})
    ci = diff.get("ci95", {}).get("precision_at_10")
    verdict = (
        f"On the holdout the model's precision@10 among setups is "
        f"{_fmt(hold['model']['precision_at_10'])} against the rule's "
        f"{_fmt(hold['rule']['precision_at_10'])}: a difference of "
        f"{_fmt(diff.get('precision_at_10'))} {_interval(ci)}."
    )
    if "oracle" in hold:
        verdict += (f" The oracle reaches {_fmt(hold['oracle']['precision_at_10'])}; the model "
                    f"gets {_fmt(hold.get('model_share_of_oracle_at_10'))} of it.")
    folds = "".join(
        f"<h3>Fold {f['fold']} ({html.escape(str(f.get('test_from', '')))} to "
        f"{html.escape(str(f.get('test_to', '')))}, trained to "
        f"{f['train_end']})</h3>" + (_ci_table(f, ["model", "rule", "oracle"])
                                     if "model" in f else f"<p>{html.escape(f['skipped'])}</p>")
        for f in meta["metrics"]["walk_forward"]
    )
    trades = meta["trade_simulation"]["strategies"]
    trade_keys = ["trades", "hit_rate", "avg_r", "cagr", "max_drawdown", "final_equity",
                  "costs_pct_of_capital"]
    trade_table = _table({t["strategy"]: t for t in trades}, trade_keys)
    oos = meta["trade_simulation"].get("out_of_sample", {})
    oos_table = _table({t["strategy"]: t for t in oos.get("strategies", [])}, trade_keys)
    oos_len = len(next(iter(oos_curves.values()))) if oos_curves else 0
    oos_dates = [oos.get("from", "")] + [""] * max(oos_len - 2, 0) + [win["data_to"]]
    u = meta["universe"]
    th, detail = meta["thresholds"], meta["threshold_detail"]
    levels = "".join(
        f"<tr><th>{lvl}</th><td>{_fmt(th[lvl])}</td><td>{_fmt(detail[lvl]['precision'])}</td>"
        f"<td>{_fmt(detail[lvl]['rows'], integer=True)}</td></tr>" for lvl in ("HIGH", "MEDIUM"))
    docs = "".join(f"<tr><th>{html.escape(k)}</th><td class='text'>"
                   f"{html.escape(v)}</td></tr>" for k, v in feature_docs.items())
    defs = "".join(f"<tr><th>{html.escape(k)}</th><td class='text'>"
                   f"{html.escape(v)}</td></tr>" for k, v in DEFINITIONS.items())
    rules, costs = meta["trade_simulation"]["rules"], meta["trade_simulation"]["costs"]
    lp = meta["label_params"]
    sessions = len(next(iter(curves.values()))) if curves else 0
    dates = [win["holdout_from"]] + [""] * max(sessions - 2, 0) + [win["data_to"]]
    search = meta["parameter_search"]
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>vcp_breakout evaluation report</title><style>{CSS}</style></head><body>
<h1>vcp_breakout evaluation report</h1>{banner}
<p>Trained {html.escape(meta['trained_at'])} on {meta['setups']['all']:,} setups, data source
<b>{html.escape(str(meta['data_source']))}</b>, commit {html.escape(meta['git_commit'])},
{meta['train_seconds']} s{' (quick mode)' if meta['quick'] else ''}.</p>
<p><b>The trade</b> (the label): a buy-stop at the pivot valid {lp['entry_window']} sessions,
filled at max(open, pivot), no fill if the session opens more than {lp['max_gap']:.0%} above
the pivot; stop at the higher of the last contraction's low and fill &times;
{1 - lp['max_loss']:.2f}; target fill &times; {1 + lp['target']:.2f}; a gap through a level exits
at the open, a bar touching both exits at the stop, otherwise the close {lp['hold']} sessions
after the fill. Label = win.</p>
<h2>Universe</h2><p>On an average session {u['scoreable_per_day']:,.0f} stocks could be scored;
the liquidity floor (median traded value &ge; Rs {u['floors']['min_traded_value'] / 1e5:,.0f}
lakh over 50 sessions) excluded {u['illiquid_per_day']:,.0f}, the price floor (close &ge; Rs
{u['floors']['min_price']:,.0f}) {u['below_price_floor_per_day']:,.0f} more, leaving
{u['tradeable_per_day']:,.0f}. The detector found {u['setups_before_floors_per_day']:,.1f}
setups a session, {u['setups_per_day']:,.1f} inside the floors.</p>
<h2>Holdout ({win['holdout_from']} to {win['holdout_to']}, read once)</h2>
<p>{verdict}</p>{_ci_table(hold, names)}
<p>Every choice (parameters {html.escape(str(search['chosen']))}, chosen by
{html.escape(search['criterion'])} on the development folds; calibration; thresholds) was made
before the holdout was opened. Development setups end {lp['hold'] + lp['entry_window']}
sessions before it ({win['development_to']}).</p>
<h2>Trade simulation on the holdout</h2>
<p>Each day's top {rules['top_k']} setups by the scorer as buy-stops; at most
{rules['max_positions']} open positions; {rules['risk_per_trade']:.0%} of equity at risk per
trade, at most {rules['max_weight']:.0%} of equity in one stock; costs per order: STT
{costs['stt']:.2%}, exchange {costs['exchange_nse']:.5%}, SEBI {costs['sebi']:.4%}, GST
{costs['gst']:.0%} on fees, stamp duty {costs['stamp_duty_buy']:.3%} on buys, brokerage
min(Rs {costs['brokerage_cap']:.0f}, {costs['brokerage_rate']:.1%}), DP Rs
{costs['dp_charge']:.0f} + GST on sells, slippage {costs['slippage']:.2%} a side.</p>
{trade_table}{_equity_plots(curves, dates)}
<h2>Trade simulation over every out-of-sample session (from {html.escape(oos.get('from', ''))})</h2>
<p>The same portfolio over the walk-forward test folds (each day scored by the fold model that
had not seen it) and then the holdout: a longer, less noisy look than the holdout alone.</p>
{oos_table}{_equity_plots(oos_curves, oos_dates)}
<h2>R of the model's trades</h2>{_r_plot(np.asarray(r_top, dtype=float))}
<h2>Walk-forward folds (development)</h2>
<p>Each fold trains on setups dated on or before its "trained to" index, at least the trade's
{lp['entry_window'] + lp['hold']} sessions before its test period. The model column uses the
uncalibrated fold model.</p>{folds}
<h2>Calibration over the whole range</h2>{_calibration_plot(y_oof.astype(float), p_oof)}
<p>Isotonic, fitted on {meta['calibration']['rows']:,} out-of-fold setups
({html.escape(meta['calibration']['fitted_on'])}). Numbers are the setups in each bin.</p>
<h2>Confidence levels</h2><table><tr><th>level</th><th>from p &ge;</th>
<th>out-of-sample precision</th><th>setups</th></tr>{levels}</table>
<p>{html.escape(meta['threshold_rule'])} Base rate of setups:
{_fmt(detail['base_rate'])}.</p>
<h2>Feature importance (gain)</h2>{_importance_plot(meta['feature_importance_gain'])}
<h2>Definitions</h2><table>{defs}</table>
<h2>Features</h2><table>{docs}</table>
</body></html>"""
