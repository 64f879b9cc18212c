"""Triple-barrier labels for a VCP breakout trade entered at the next session's open.

For every date D (column) of a [n, T] panel: entry = open[D+1]. Over sessions D+1..D+horizon,
success (1) when high >= entry x (1 + target) on a session strictly before the first session
where low <= entry x (1 - stop); a session touching both counts as a stop (failure), and neither
barrier by the horizon is a failure (0). NaN when D + horizon is beyond the data or the entry is
missing. Sessions without a bar are skipped (no trade, no barrier check).

Also per date: MFE / MAE (highest high / lowest low relative to entry, up to and including the
exit session), realized R = exit return / stop (+target/stop at the target, -1 at the stop, the
close-at-horizon return / stop otherwise; gaps through a barrier are booked at the barrier), and
the exit column (-1 when the label is NaN).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LabelParams:
    target: float = 0.20
    stop: float = 0.08
    horizon: int = 60

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class LabelResult:
    label: np.ndarray  # [n, T] 1.0 / 0.0 / NaN
    mfe: np.ndarray
    mae: np.ndarray
    r_multiple: np.ndarray
    exit_index: np.ndarray  # [n, T] int64, -1 when label is NaN
    params: LabelParams


def triple_barrier_labels(
    open: np.ndarray,  # noqa: A002 - the panel field name
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    target: float = 0.20,
    stop: float = 0.08,
    horizon: int = 60,
    params: LabelParams | None = None,
) -> LabelResult:
    """Label every [n, T] date; ``params`` (if given) overrides target/stop/horizon."""
    p = params or LabelParams(target=target, stop=stop, horizon=horizon)
    o, h, lo_, c = (np.asarray(x, dtype=np.float64) for x in (open, high, low, close))
    if o.ndim == 1:
        o, h, lo_, c = (x[None, :] for x in (o, h, lo_, c))
    n, t = c.shape
    hz = int(p.horizon)
    label = np.full((n, t), np.nan)
    mfe = np.full((n, t), np.nan)
    mae = np.full((n, t), np.nan)
    r_mult = np.full((n, t), np.nan)
    exit_idx = np.full((n, t), -1, dtype=np.int64)
    m = t - hz  # dates D in [0, m) have a complete horizon
    if hz < 1 or m <= 0:
        return LabelResult(label, mfe, mae, r_mult, exit_idx, p)

    entry = o[:, 1 : m + 1]
    ok = np.isfinite(entry) & (entry > 0)
    tgt = entry * (1.0 + p.target)
    stp = entry * (1.0 - p.stop)
    done = ~ok
    win = np.zeros((n, m))
    ret = np.full((n, m), np.nan)
    ex = np.full((n, m), -1, dtype=np.int64)
    hmax = np.full((n, m), -np.inf)
    lmin = np.full((n, m), np.inf)
    last_close = np.full((n, m), np.nan)
    d_idx = np.arange(m)[None, :]
    with np.errstate(invalid="ignore"):
        for j in range(1, hz + 1):
            hj, lj, cj = h[:, j : j + m], lo_[:, j : j + m], c[:, j : j + m]
            active = ~done
            np.fmax(hmax, np.where(active, hj, -np.inf), out=hmax)
            np.fmin(lmin, np.where(active, lj, np.inf), out=lmin)
            upd = active & ~np.isnan(cj)
            last_close[upd] = cj[upd]
            hit_stop = active & (lj <= stp)
            hit_tgt = active & (hj >= tgt) & ~hit_stop
            win[hit_tgt] = 1.0
            ret[hit_stop] = -p.stop
            ret[hit_tgt] = p.target
            hit = hit_stop | hit_tgt
            ex[hit] = np.broadcast_to(d_idx + j, (n, m))[hit]
            done |= hit
        open_end = ~done  # valid trades still open at the horizon
        ret[open_end] = last_close[open_end] / entry[open_end] - 1.0
        ex[open_end] = np.broadcast_to(d_idx + hz, (n, m))[open_end]
        label[:, :m] = np.where(ok, win, np.nan)
        mfe[:, :m] = np.where(ok & np.isfinite(hmax), hmax / entry - 1.0, np.nan)
        mae[:, :m] = np.where(ok & np.isfinite(lmin), lmin / entry - 1.0, np.nan)
        r_mult[:, :m] = np.where(ok, ret / p.stop, np.nan)
    exit_idx[:, :m] = np.where(ok, ex, -1)
    return LabelResult(label, mfe, mae, r_mult, exit_idx, p)
