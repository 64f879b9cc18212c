"""The breakout trade of a VCP setup, and its outcome (the training label).

For a setup detected at date D with pivot P and last-contraction low S:

* **Entry**: a buy-stop at P, valid for ``entry_window`` (10) sessions after D. It triggers on the
  first session whose high reaches P and fills at max(open, P). If that session opens more than
  ``max_gap`` (5%) above P the order is cancelled (``no_fill``): chasing a gap is not the trade.
* **Stop** = the higher of S and fill x (1 - ``max_loss``) (8%); **target** =
  fill x (1 + ``target``) (+20%).
* **Exit**: a bar that opens through a level exits at its open (a gap below the stop books the
  real, worse fill); a bar touching both levels exits at the stop (the order inside a daily bar
  is unknown, so the pessimistic case); otherwise the trade exits at the close ``hold`` (60)
  sessions after the fill, or at the last close when the stock stops trading (delisted or
  suspended to the end of the window). On the fill bar a low at the stop exits there, whether
  the order filled at the open or later in the session (the low may have come first:
  pessimistic again).
* **Outcome**: ``no_fill``, ``win`` (exit at or above the target), ``loss`` (exit at or below the
  stop) or ``timeout``; the realized return exit / fill - 1 and R = return / initial risk, where
  initial risk = (fill - stop) / fill. **Label** = win (no_fill counts as not a win).

Sessions without a bar (NaN) are skipped. An outcome the data cannot settle yet (the window runs
past the last session) is unknown (-1, label NaN).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

OUTCOMES = ("no_fill", "win", "loss", "timeout")
UNKNOWN, NO_FILL, WIN, LOSS, TIMEOUT = -1, 0, 1, 2, 3


@dataclass(frozen=True)
class TradeParams:
    entry_window: int = 10  # sessions the buy-stop at the pivot stays valid
    max_gap: float = 0.05  # no fill when the trigger session opens more than this above P
    max_loss: float = 0.08  # the stop is never further than this below the fill
    target: float = 0.20
    hold: int = 60  # sessions after the fill before a timeout exit at the close

    @property
    def horizon(self) -> int:
        """Sessions after D that can matter: the entry window plus the holding period."""
        return self.entry_window + self.hold

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class TradeResult:
    """Per trade (row): outcome code (OUTCOMES index, -1 unknown), columns into the window
    (-1 when none), prices, realized return and R (0 for no_fill, NaN when unknown)."""

    outcome: np.ndarray
    fill_col: np.ndarray
    exit_col: np.ndarray
    fill: np.ndarray
    stop: np.ndarray
    exit_price: np.ndarray
    ret: np.ndarray
    r_multiple: np.ndarray
    params: TradeParams

    @property
    def label(self) -> np.ndarray:
        """1.0 win, 0.0 any other settled outcome, NaN unknown."""
        return np.where(self.outcome == UNKNOWN, np.nan, (self.outcome == WIN).astype(float))

    def outcome_names(self) -> np.ndarray:
        names = np.array(OUTCOMES + ("unknown",), dtype=object)
        return names[np.where(self.outcome < 0, len(OUTCOMES), self.outcome)]


def breakout_trades(
    open: np.ndarray,  # noqa: A002 - the bar field name
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    pivot: np.ndarray,
    stop_floor: np.ndarray,
    params: TradeParams | None = None,
    sessions: np.ndarray | None = None,
) -> TradeResult:
    """Settle breakout trades from the bars that follow each setup.

    Bars are [m, W] windows: column 0 is the session after D. ``sessions`` [m] says how many
    window columns are real calendar sessions (default W); beyond them the data has ended, so a
    trade still open there is unknown, while NaN bars inside them mean the stock did not trade.
    """
    p = params or TradeParams()
    o, h, lo_, c = (np.atleast_2d(np.asarray(x, dtype=np.float64))
                    for x in (open, high, low, close))
    m, w = c.shape
    pivot = np.broadcast_to(np.asarray(pivot, dtype=np.float64), (m,))
    floor_ = np.broadcast_to(np.asarray(stop_floor, dtype=np.float64), (m,))
    avail = np.full(m, w) if sessions is None else np.minimum(np.asarray(sessions), w)
    rows = np.arange(m)

    # Entry: first session (within the window and the data) whose high reaches the pivot.
    ew = min(p.entry_window, w)
    with np.errstate(invalid="ignore"):
        touch = (h[:, :ew] >= pivot[:, None]) & (np.arange(ew)[None, :] < avail[:, None])
    touched = touch.any(axis=1) & np.isfinite(pivot) & (pivot > 0)
    trig = np.where(touched, touch.argmax(axis=1), -1)
    o_trig = o[rows, np.maximum(trig, 0)]
    gap_ok = ~(o_trig > pivot * (1 + p.max_gap))  # NaN open: filled at the pivot
    filled = touched & gap_ok
    fill = np.where(filled, np.fmax(o_trig, pivot), np.nan)
    stop = np.fmax(floor_, fill * (1 - p.max_loss))
    stop = np.where(stop < fill, stop, fill * (1 - p.max_loss))  # a floor above the fill: ignore
    target = fill * (1 + p.target)

    outcome = np.full(m, UNKNOWN, dtype=np.int8)
    entry_settled = ew <= avail  # the whole entry window is in the data
    outcome[~touched & entry_settled] = NO_FILL
    outcome[touched & ~gap_ok] = NO_FILL
    exit_col = np.full(m, -1, dtype=np.int64)
    exit_px = np.full(m, np.nan)
    last_close = np.full(m, np.nan)
    last_col = np.full(m, -1, dtype=np.int64)
    open_ = filled.copy()  # trades still running
    with np.errstate(invalid="ignore"):
        for j in range(w):
            at_fill = open_ & (trig == j)
            after = open_ & (trig < j) & (j <= trig + p.hold) & (j < avail)
            live = at_fill | after
            if not live.any():
                if j > int(trig.max(initial=-1)) + p.hold:
                    break
                continue
            oj, hj, lj, cj = o[:, j], h[:, j], lo_[:, j], c[:, j]
            gap_dn = after & (oj <= stop)
            gap_up = after & (oj >= target) & ~gap_dn
            hit_stop = live & ~gap_dn & ~gap_up & (lj <= stop)
            hit_tgt = live & ~gap_dn & ~gap_up & ~hit_stop & (hj >= target)
            for mask, px, code in (
                (gap_dn, oj, LOSS), (gap_up, oj, WIN), (hit_stop, stop, LOSS),
                (hit_tgt, target, WIN),
            ):
                outcome[mask] = code
                exit_px[mask] = px[mask]
                exit_col[mask] = j
            open_ &= ~(gap_dn | gap_up | hit_stop | hit_tgt)
            traded = live & open_ & np.isfinite(cj)
            last_close[traded] = cj[traded]
            last_col[traded] = j
            # Timeout: the close `hold` sessions after the fill, or the last close before it.
            due = open_ & (j == trig + p.hold) & (j < avail)
            outcome[due] = TIMEOUT
            exit_px[due] = last_close[due]
            exit_col[due] = last_col[due]
            open_ &= ~due
    # A trade still open here ran into the end of the data: unknown.
    with np.errstate(invalid="ignore", divide="ignore"):
        ret = np.where(outcome == NO_FILL, 0.0, exit_px / fill - 1.0)
        risk = (fill - stop) / fill
        r_mult = np.where(outcome == NO_FILL, 0.0, ret / risk)
    unknown = outcome == UNKNOWN
    ret[unknown] = np.nan
    r_mult[unknown] = np.nan
    return TradeResult(
        outcome=outcome, fill_col=np.where(filled, trig, -1), exit_col=exit_col,
        fill=fill, stop=np.where(filled, stop, np.nan), exit_price=exit_px, ret=ret,
        r_multiple=r_mult, params=p,
    )


def trade_windows(
    arrays: tuple[np.ndarray, ...], rows: np.ndarray, cols: np.ndarray, width: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """The ``width`` sessions after each (row, col) of [n, T] panels, NaN past the end, and the
    number of those sessions inside the panel."""
    t = arrays[0].shape[1]
    idx = cols[:, None] + 1 + np.arange(width)[None, :]
    inside = idx < t
    safe = np.minimum(idx, t - 1)
    out = [np.where(inside, a[rows[:, None], safe], np.nan) for a in arrays]
    return out, np.clip(t - 1 - cols, 0, width)


def setup_trades(
    open: np.ndarray,  # noqa: A002 - the panel field name
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    pivot: np.ndarray,
    stop_floor: np.ndarray,
    params: TradeParams | None = None,
) -> TradeResult:
    """Breakout trades of setups at (rows, cols) of [n, T] panels (reads only columns > col)."""
    p = params or TradeParams()
    (o, h, lo_, c), sessions = trade_windows((open, high, low, close), rows, cols, p.horizon)
    return breakout_trades(o, h, lo_, c, pivot, stop_floor, p, sessions)
