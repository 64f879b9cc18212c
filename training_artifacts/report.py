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

METRICS = ["roc_auc", "pr_auc", "brier", "log_loss", "base_rate", "precision_at_20",
           "precision_at_50", "mean_r_top_50", "n"]
# Tables fit the 1000 px page: short headers that may wrap, values that do not.
CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;max-width:100%;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 6px;text-align:right}td{white-space:nowrap}
th{background:#f3f3f3}.banner{background:#fff3cd;padding:8px;border:1px solid
#e0c36a}img{max-width:100%}td.text{white-space:normal;text-align:left}"""
# Column headers of the metric tables; metrics counted in whole numbers are shown as such.
LABELS = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "brier": "Brier", "log_loss": "log loss",
          "base_rate": "base rate", "precision_at_20": "precision @20",
          "precision_at_50": "precision @50", "mean_r_top_50": "mean R top 50", "n": "n"}
INTEGER_METRICS = {"n"}


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


def _calibration_plot(y: np.ndarray, p: np.ndarray) -> str:
    bins = np.quantile(p, np.linspace(0, 1, 11))
    idx = np.clip(np.searchsorted(bins, p, side="right") - 1, 0, 9)
    pred = [p[idx == b].mean() for b in range(10) if (idx == b).any()]
    obs = [y[idx == b].mean() for b in range(10) if (idx == b).any()]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, max(pred + obs)], [0, max(pred + obs)], "k--", lw=1, label="perfect")
    ax.plot(pred, obs, "o-", label="model (last fold)")
    ax.set_xlabel("predicted probability (decile mean)")
    ax.set_ylabel("observed success rate")
    ax.legend()
    return _png(fig)


def _precision_plot(curves: dict[str, list]) -> str:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name in ("model", "logistic", "rule"):
        ax.plot(curves["k"], curves[name], "o-", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("top k stocks per date")
    ax.set_ylabel("precision (mean over dates)")
    ax.legend()
    return _png(fig)


def _importance_plot(importance: dict[str, float]) -> str:
    items = sorted(importance.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 7))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set_xlabel("total gain")
    return _png(fig)


def render_report(
    meta: dict[str, Any], feature_docs: dict[str, str], y_test: np.ndarray, p_test: np.ndarray
) -> str:
    metrics = meta["metrics"]
    last = metrics["last_fold"]
    margins = metrics["last_fold_margins"]
    simulated = meta.get("data_source") == "simulated"
    banner = (
        '<p class="banner">Trained and judged on <b>SIMULATED</b> market data (seed '
        f'{html.escape(str(meta.get("data_seed")))}): these figures describe the simulator, '
        "not real NSE/BSE stocks.</p>" if simulated else ""
    )
    fold_rows = "".join(
        f"<tr><td>{f['fold']}</td><td>{f['train_to']}</td><td>{f['test_from']}</td>"
        f"<td>{f['test_to']}</td>" + "".join(
            f"<td>{_fmt(f[m]['roc_auc'])}</td><td>{_fmt(f[m]['precision_at_50'])}</td>"
            for m in ("model", "logistic", "rule")) + "</tr>"
        for f in metrics["folds"]
    )
    win = meta["training_window"]
    verdict = (
        f"On the untouched last fold the model's ROC-AUC is {margins['roc_auc_vs_rule']:+.4f} "
        f"against the rule and {margins['roc_auc_vs_logistic']:+.4f} against logistic "
        f"regression; its precision@50 is {margins['precision_at_50_vs_rule']:+.4f} against "
        f"the rule and {margins['precision_at_50_vs_logistic']:+.4f} against logistic regression."
    )
    docs = "".join(f"<tr><th>{html.escape(k)}</th><td class='text'>"
                   f"{html.escape(v)}</td></tr>" for k, v in feature_docs.items())
    th = meta["thresholds"]
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>vcp_breakout evaluation report</title><style>{CSS}</style></head><body>
<h1>vcp_breakout evaluation report</h1>{banner}
<p>Trained {html.escape(meta['trained_at'])} on {meta['rows']:,} rows
({meta['universe_size']:,} stocks, every {meta['date_step']} sessions), data source
<b>{html.escape(str(meta['data_source']))}</b>, commit {html.escape(meta['git_commit'])},
{meta['train_seconds']} s{' (quick mode)' if meta['quick'] else ''}.</p>
<p>Label: entry at the next open; success when the high reaches
+{meta['label_params']['target']:.0%} before the low reaches -{meta['label_params']['stop']:.0%}
within {meta['label_params']['horizon']} sessions.</p>
<h2>Untouched last fold ({win['test_from']} to {win['test_to']})</h2>
<p>{verdict}</p>
{_table(last)}
<h2>Walk-forward validation (folds 1-{len(metrics['folds'])}, pooled)</h2>
{_table(metrics['walk_forward'])}
<h2>Per fold</h2><table><tr><th>fold</th><th>train to</th><th>test from</th><th>test to</th>
<th>model AUC</th><th>model P@50</th><th>logistic AUC</th><th>logistic P@50</th>
<th>rule AUC</th><th>rule P@50</th></tr>{fold_rows}</table>
<p>Each fold trains on rows dated on or before "train to": the gap to "test from" is at least
the label horizon, so no training label overlaps the test period. Fold metrics use the
uncalibrated model; the last fold uses the calibrated final model.</p>
<h2>Calibration (last fold)</h2>{_calibration_plot(y_test.astype(float), p_test)}
<p>Isotonic calibration fitted on {meta['calibration']['fitted_on_rows']:,} held-out rows
({win['calibration_from']} to {win['calibration_to']}); the final model trained on rows up to
{win['final_train_to']}.</p>
<h2>Precision at k (last fold)</h2>{_precision_plot(meta['precision_at_k'])}
<h2>Confidence thresholds</h2><p>HIGH at p &ge; {th['HIGH']:.4f}, MEDIUM at p &ge;
{th['MEDIUM']:.4f}, LOW below. {html.escape(meta['threshold_rule'])}</p>
<h2>Feature importance (gain)</h2>{_importance_plot(meta['feature_importance_gain'])}
<h2>Features</h2><table>{docs}</table>
</body></html>"""
