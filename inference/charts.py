"""Setup charts: the picture a trader judges a VCP by, as a PNG.

`render_setup_chart` draws daily candles with volume, the 50/150/200-session simple moving
averages (the Trend Template's, from `features.indicators.sma`, computed over the whole arrays
the caller passes, so they are defined from the first session shown), and, for a setup (the
detector's dict, see `render_setup_chart`), each contraction shaded from its high to its low
and labelled with its depth, the pivot and stop lines, the breakout marker and the footprint in
the title. Without a setup the same chart carries the detector's `why_not` as a caption.
A simulated store's chart carries a "SIMULATED DATA" mark.

Plain matplotlib, object-oriented: each call builds its own `Figure` on the Agg canvas and never
touches pyplot's global figure manager, so nothing leaks between calls or threads. Matplotlib
does not promise thread safety (its text layout and font caches are shared), so renders are
serialized by a lock: the work is CPU-bound under the GIL anyway. (mplfinance was considered:
its last release is a 2023 beta and it draws through pyplot; candles are a few collections.)
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter

from features.indicators import sma

SMA_WINDOWS = (50, 150, 200)
LEAD_SESSIONS = 40  # shown before the base starts: the end of the prior advance
MAX_SESSIONS = 250  # about a year of sessions at most
NO_SETUP_SESSIONS = 160  # about eight months when there is no base to frame
RIGHT_PAD = 4  # empty sessions right of the last bar

UP, DOWN = "#26a69a", "#ef5350"
SMA_COLORS = {50: "#1f77b4", 150: "#ff9800", 200: "#8e24aa"}
PIVOT_COLOR, STOP_COLOR = "#1a237e", "#c62828"
CONTRACTION_COLORS = ("#42a5f5", "#ab47bc", "#26a69a", "#ffa726", "#ec407a", "#8d6e63")

_RENDER_LOCK = threading.Lock()


@dataclass(frozen=True)
class ChartSize:
    width_px: int
    height_px: int

    @property
    def compact(self) -> bool:
        """Thumbnails leave out the second title line and the contractions' volume."""
        return self.width_px < 700


FULL = ChartSize(1000, 600)
THUMBNAIL = ChartSize(520, 320)


def render_setup_chart(
    dates: Sequence[Any] | np.ndarray,
    open: np.ndarray,  # noqa: A002 - the OHLCV names a trader reads
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    setup: dict[str, Any] | None,
    why_not: str | None,
    title: str,
    simulated: bool,
    width_px: int = FULL.width_px,
    height_px: int = FULL.height_px,
) -> bytes:
    """The PNG of one stock at the last of `dates` (one session per element, oldest first;
    NaN where the stock did not trade). Pass at least 200 sessions before the first one to
    show so the averages are defined (callers pass the 400-session feature window).

    `setup` is the detector's result for that session, or None with `why_not` saying which
    criterion failed. Keys read: footprint, base_start, base_sessions, prior_advance,
    contractions [{high_date, high, low_date, low, depth, volume_ratio}], pivot, stop,
    risk_pct, volume_dryup, breakout, extended.
    """
    days = np.asarray(dates, dtype="datetime64[D]")
    bars = [np.asarray(a, dtype=np.float64) for a in (open, high, low, close, volume)]
    n = len(days)
    if n == 0 or any(len(a) != n for a in bars):
        raise ValueError(f"dates and OHLCV must have the same non-zero length, got {n} dates "
                         f"and {[len(a) for a in bars]}")
    size = ChartSize(width_px, height_px)
    with _RENDER_LOCK:
        fig = chart_figure(days, *bars, setup=setup, why_not=why_not, title=title,
                           simulated=simulated, size=size)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def render_thumbnail(dates: Sequence[Any] | np.ndarray, open: np.ndarray,  # noqa: A002
                     high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray,
                     setup: dict[str, Any] | None, why_not: str | None, title: str,
                     simulated: bool) -> bytes:
    """`render_setup_chart` at thumbnail size (520 x 320, for the daily HTML report)."""
    return render_setup_chart(dates, open, high, low, close, volume, setup, why_not, title,
                              simulated, width_px=THUMBNAIL.width_px,
                              height_px=THUMBNAIL.height_px)


# -- layout ------------------------------------------------------------------------------------
def _day(x: Any) -> np.datetime64:
    return np.datetime64(x, "D")


def _index(days: np.ndarray, when: Any) -> int:
    """Position of a session date in `days` (the next session when it is not one; clipped)."""
    return min(int(np.searchsorted(days, _day(when))), len(days) - 1)


def _first_shown(days: np.ndarray, setup: dict[str, Any] | None) -> int:
    n = len(days)
    if setup is None:
        return max(0, n - NO_SETUP_SESSIONS)
    starts = [_index(days, setup["base_start"])]
    starts += [_index(days, c["high_date"]) for c in setup.get("contractions") or []]
    return max(0, min(starts) - LEAD_SESSIONS, n - MAX_SESSIONS)


def _fmt_price(p: float) -> str:
    return f"{p:,.2f}" if p < 10_000 else f"{p:,.0f}"


def _fmt_volume(v: float, _pos: Any = None) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.1f}{unit}".replace(".0", "")
    return f"{v:.0f}"


def _month_ticks(days: np.ndarray) -> tuple[list[int], list[str]]:
    """The first session of each month after the first shown (a label at the left edge would
    be cut), the first of them and every January with the year."""
    months = days.astype("datetime64[M]")
    starts = [int(i) for i in np.flatnonzero(months[1:] != months[:-1]) + 1]
    if not starts:
        return [0], [days[0].astype(date).strftime("%d %b %Y")]
    labels = []
    for k, i in enumerate(starts):
        d = days[i].astype(date)
        labels.append(d.strftime("%b %Y") if d.month == 1 or k == 0 else d.strftime("%b"))
    return starts, labels


# -- drawing -----------------------------------------------------------------------------------
def _candles(ax, x, o, h, lo, c, scale: float) -> None:
    traded = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)
    x, o, h, lo, c = x[traded], o[traded], h[traded], lo[traded], c[traded]
    up = c >= o
    colors = np.where(up, UP, DOWN)
    ax.add_collection(LineCollection(
        list(np.stack([np.column_stack([x, lo]), np.column_stack([x, h])], axis=1)),
        colors=colors, linewidths=max(0.6, 0.9 * scale), zorder=3))
    half = 0.34
    bottom, top = np.minimum(o, c), np.maximum(o, c)
    verts = np.stack([np.column_stack([x - half, bottom]), np.column_stack([x - half, top]),
                      np.column_stack([x + half, top]), np.column_stack([x + half, bottom])],
                     axis=1)
    ax.add_collection(PolyCollection(list(verts), facecolors=colors, edgecolors=colors,
                                     linewidths=0.4, zorder=4))


def _volume(ax, x, o, c, v, v_avg) -> None:
    v = np.nan_to_num(v, nan=0.0)
    up = np.nan_to_num(c, nan=0.0) >= np.nan_to_num(o, nan=0.0)
    half = 0.38
    verts = np.stack([np.column_stack([x - half, np.zeros_like(v)]),
                      np.column_stack([x - half, v]), np.column_stack([x + half, v]),
                      np.column_stack([x + half, np.zeros_like(v)])], axis=1)
    ax.add_collection(PolyCollection(list(verts), facecolors=np.where(up, UP, DOWN),
                                     edgecolors="none", alpha=0.55))
    ax.plot(x, v_avg, color="#555555", lw=0.9, label="50-day avg volume")
    ax.set_ylim(0, max(float(v.max()), 1.0) * 1.12)


def _label(ax, x, y, text, size, color, **kw) -> None:
    ax.text(x, y, text, fontsize=size, color=color, zorder=6, **kw)


def _contractions(ax, days, setup, fs: float, size: ChartSize, span: float) -> None:
    """Each contraction shaded from its high to its low, labelled T<k> and its depth."""
    taken: list[tuple[float, float, float]] = []  # (x0, x1, y) of labels already placed
    px_per_session = size.width_px * 0.86 / span
    for k, c in enumerate(setup.get("contractions") or [], start=1):
        x0, x1 = _index(days, c["high_date"]), _index(days, c["low_date"])
        x0, x1 = min(x0, x1), max(x0, x1)
        color = CONTRACTION_COLORS[(k - 1) % len(CONTRACTION_COLORS)]
        ax.add_patch(Rectangle((x0 - 0.5, c["low"]), x1 - x0 + 1, c["high"] - c["low"],
                               facecolor=color, alpha=0.16, edgecolor=color, lw=1.0, zorder=2))
        ax.plot([x0, x1], [c["high"], c["low"]], color=color, lw=1.0, ls=":", zorder=2)
        text = f"T{k} {c['depth']:.0%}"
        if not size.compact and c.get("volume_ratio") is not None:
            text += f"\nvol {c['volume_ratio']:.2f}x"
        width = (max(len(s) for s in text.split("\n")) * fs * 0.62 * 1.4) / px_per_session
        y = c["high"]
        lines = text.count("\n") + 1
        for tx0, tx1, ty in taken:  # lift a label that would overlap an earlier one
            if x0 < tx1 and tx0 < x0 + width and abs(ty - y) < 1e-9 + lines * 0.05 * y:
                y = ty + lines * 0.05 * y
        taken.append((x0, x0 + width, y))
        _label(ax, x0, y, text, fs, color, va="bottom", ha="left", fontweight="bold",
               linespacing=1.0,
               bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})


def _level(ax, x0: float, x_end: float, y: float, text: str, color: str, fs: float) -> None:
    """A dashed price level from x0 to the right edge, tagged on the price axis."""
    ax.plot([x0, x_end], [y, y], color=color, lw=1.3, ls="--", zorder=5)
    ax.text(1.003, y, text, transform=ax.get_yaxis_transform(), fontsize=fs, color="white",
            ha="left", va="center", fontweight="bold", zorder=8, clip_on=False,
            bbox={"boxstyle": "square,pad=0.2", "fc": color, "ec": "none"})


def _caption(fig, text: str, fs: float) -> None:
    fig.text(0.012, 0.012, text, fontsize=fs, ha="left", va="bottom", wrap=True,
             bbox={"boxstyle": "round,pad=0.35", "fc": "#fff8e1", "ec": "#f0c36a"})


def chart_figure(days: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                 v: np.ndarray, *, setup: dict[str, Any] | None, why_not: str | None, title: str,
                 simulated: bool, size: ChartSize = FULL) -> Figure:
    """The chart as a matplotlib Figure on its own Agg canvas (`render_setup_chart` checks
    the inputs, holds the lock and saves it as PNG; tests read its artists)."""
    first = _first_shown(days, setup)
    averages = {w: sma(c[None, :], w)[0][first:] for w in SMA_WINDOWS}
    v_avg = sma(v[None, :], 50)[0][first:]
    days, o, h, lo, c, v = (a[first:] for a in (days, o, h, lo, c, v))
    n = len(days)
    x = np.arange(n, dtype=np.float64)
    scale = size.width_px / FULL.width_px
    fs = max(6.5, 9.0 * scale)  # body font size in points

    fig = Figure(figsize=(size.width_px / 100, size.height_px / 100), dpi=100)
    FigureCanvasAgg(fig)
    bottom = 0.13 if setup is None and why_not else 0.07
    top = 0.86 if not size.compact else 0.88
    right = 1 - max(0.1, 62 / size.width_px)  # room for the price labels and the tags
    gs = fig.add_gridspec(2, 1, height_ratios=(3.3, 1), hspace=0.04, left=0.015, right=right,
                          bottom=bottom, top=top)
    ax = fig.add_subplot(gs[0])
    axv = fig.add_subplot(gs[1], sharex=ax)

    _candles(ax, x, o, h, lo, c, scale)
    for w, values in averages.items():
        ax.plot(x, values, color=SMA_COLORS[w], lw=1.1 * max(scale, 0.7), label=f"SMA {w}",
                zorder=2)
    _volume(axv, x, o, c, v, v_avg)

    x_end = n - 1 + RIGHT_PAD
    traded = np.isfinite(lo) & np.isfinite(h)
    y_lo, y_hi = (float(lo[traded].min()), float(h[traded].max())) if traded.any() else (0, 1)
    if setup is not None:
        y_lo = min(y_lo, float(setup["stop"]))
        y_hi = max(y_hi, float(setup["pivot"]))
        _contractions(ax, days, setup, fs * 0.95, size, x_end + 1)
        contractions = setup.get("contractions") or []
        start = _index(days, contractions[-1]["high_date"]) if contractions else max(n - 20, 0)
        _level(ax, start, x_end, float(setup["pivot"]), f"pivot {_fmt_price(setup['pivot'])}",
               PIVOT_COLOR, fs * 0.9)
        _level(ax, start, x_end, float(setup["stop"]), f"stop {_fmt_price(setup['stop'])}",
               STOP_COLOR, fs * 0.9)
        if setup.get("breakout"):
            ax.annotate("breakout", xy=(n - 1, h[-1] if np.isfinite(h[-1]) else setup["pivot"]),
                        xytext=(0, 22 * max(scale, 0.6)), textcoords="offset points",
                        ha="center", fontsize=fs, color="#1b5e20", fontweight="bold",
                        arrowprops={"arrowstyle": "-|>", "color": "#1b5e20", "lw": 1.4},
                        zorder=7)
        if setup.get("extended"):
            _label(ax, n - 1, y_lo, "extended: more than 5% above the pivot", fs * 0.9,
                   "#e65100", ha="right", va="bottom")
    pad = (y_hi - y_lo) * 0.08 or y_hi * 0.05 or 1.0
    ax.set_ylim(y_lo - pad * 0.6, y_hi + pad * 1.6)
    ax.set_xlim(-1, x_end + 0.5)

    ticks, labels = _month_ticks(days)
    axv.set_xticks(ticks, labels, fontsize=fs * 0.9)  # shared with the price axis
    ax.tick_params(axis="x", labelbottom=False)
    for a in (ax, axv):
        a.yaxis.tick_right()
        a.tick_params(axis="y", labelsize=fs * 0.9)
        a.grid(True, color="#e6e6e6", lw=0.6)
        a.set_axisbelow(True)
        for side in ("top", "left"):
            a.spines[side].set_visible(False)
    ax.tick_params(axis="x", length=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda p, _pos: _fmt_price(p)))
    axv.yaxis.set_major_formatter(FuncFormatter(_fmt_volume))
    volume_ticks = axv.get_yticks()
    axv.yaxis.set_major_locator(FixedLocator(
        (volume_ticks[1:-1:2] if not size.compact else volume_ticks[2:-1:3]).tolist()))
    # Above the plot, where no candle or label can sit under it.
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), fontsize=fs * 0.85, ncols=3,
              frameon=False, handlelength=1.5, borderaxespad=0.1, borderpad=0.1)

    as_of = days[-1].astype(date)
    headline = title if setup is None else f"{title}   {setup['footprint']}"
    fig.text(0.015, 0.985, headline, fontsize=fs * 1.35, fontweight="bold", ha="left", va="top")
    if setup is not None and not size.compact:
        details = [f"as of {as_of:%d %b %Y}", f"base {setup['base_sessions']} sessions",
                   f"prior advance {setup['prior_advance']:+.0%}",
                   f"pivot {_fmt_price(setup['pivot'])}", f"stop {_fmt_price(setup['stop'])}",
                   f"risk {setup['risk_pct']:.1%}"]
        if setup.get("volume_dryup") is not None:
            details.append(f"volume dry-up {setup['volume_dryup']:.2f}x")
        fig.text(0.015, 0.925, "   ".join(details), fontsize=fs, ha="left", va="top",
                 color="#444444")
    elif not size.compact:
        fig.text(0.015, 0.925, f"as of {as_of:%d %b %Y}: no VCP setup", fontsize=fs,
                 ha="left", va="top", color="#444444")
    if setup is None and why_not:
        _caption(fig, f"No setup: {why_not}", fs)
    if simulated:
        ax.text(0.5, 0.5, "SIMULATED DATA", transform=ax.transAxes, fontsize=44 * scale,
                color="#b71c1c", alpha=0.10, ha="center", va="center", rotation=18,
                fontweight="bold", zorder=1)
        fig.text(0.985, 0.985, "SIMULATED DATA", fontsize=fs, fontweight="bold", ha="right",
                 va="top", color="white",
                 bbox={"boxstyle": "round,pad=0.3", "fc": "#b71c1c", "ec": "none"})
    return fig
