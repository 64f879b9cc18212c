"""Splits and bonuses that no actions file recorded, found from the bars themselves.

Bhavcopy prices are unadjusted, so a 1:1 bonus halves the price overnight. Indian price bands
cap a day's move at 20% (most stocks; F&O stocks have wider dynamic bands), so an overnight
gap of GAP_THRESHOLD (40%) or more between a close and the next session's open is almost
always a corporate action. A gap is reported when:

* the two bars are at most MAX_SESSIONS_APART sessions apart on the store's calendar (an
  illiquid stock's move over months is not a gap),
* the new level holds: the median close of the PERSIST bars from the ex-date on is nearer (in
  log terms) the ex-date open than the previous close, and the median of the PERSIST bars
  before is nearer the previous close (a penny stock bouncing between two ticks is no split),
* no corporate action is stored for that stock and date.

The implied ratio (shares after / shares before, as `--corporate-actions` expects) is
previous close / open, snapped to the nearest common ratio (1:1 bonus = 2, 1:2 bonus = 1.5,
split 10 -> 1 = 10, 1-for-10 consolidation = 0.1, ...) when within SNAP_TOLERANCE of it; the
`common` column says whether it was. The result has the columns of a corporate actions file
(isin, ex_date, ratio) first, so a checked list can be passed back with --corporate-actions.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

GAP_THRESHOLD = 1.4
MAX_SESSIONS_APART = 5
PERSIST = 5
LOOKBACK_DAYS = 90  # history read before `since`: room for the previous bars of illiquid stocks
SNAP_TOLERANCE = 0.06
COMMON_RATIOS = np.array(
    [1.1, 1.2, 1.25, 4 / 3, 1.5, 5 / 3, 2, 2.5, 3, 4, 5, 6, 10, 20, 50, 100]
)
COMMON_RATIOS = np.concatenate([COMMON_RATIOS, 1 / COMMON_RATIOS])
COLUMNS = ["isin", "ex_date", "ratio", "nse_symbol", "bse_code", "prev_date", "prev_close",
           "open", "common"]


def snap_ratio(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ratio snapped to the nearest common one when close enough, whether it was)."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.size == 0:
        return raw, np.zeros(0, dtype=bool)
    dist = np.abs(np.log(raw[:, None] / COMMON_RATIOS[None, :]))
    best = dist.argmin(axis=1)
    common = dist[np.arange(len(raw)), best] <= np.log1p(SNAP_TOLERANCE)
    return np.round(np.where(common, COMMON_RATIOS[best], raw), 6), common


def suspect_gaps(con, isins: list[str] | None = None, since: date | None = None) -> pd.DataFrame:
    """Suspect unrecorded splits/bonuses of `isins` (all stocks when None) dated on or after
    `since` (all dates when None); see the module docstring."""
    con.register("gap_isins", pd.DataFrame({"isin": list(isins or [])}))
    cond = [] if isins is None else ["b.isin IN (SELECT isin FROM gap_isins)"]
    if since is not None:  # bars from a margin before, for the lag and the medians
        cond.append(f"b.date >= DATE '{since}' - INTERVAL {LOOKBACK_DAYS} DAY")
    where = f"WHERE {' AND '.join(cond)}" if cond else ""
    rows = con.execute(
        f"""
        WITH cal AS (SELECT date, row_number() OVER (ORDER BY date) AS k FROM calendar),
        seq AS (
            SELECT b.isin, b.date, b.open, c.k,
                   lag(b.close) OVER w AS prev_close, lag(b.date) OVER w AS prev_date,
                   lag(c.k) OVER w AS prev_k,
                   median(b.close) OVER (w ROWS BETWEEN CURRENT ROW AND {PERSIST - 1} FOLLOWING)
                       AS after,
                   median(b.close) OVER (w ROWS BETWEEN {PERSIST} PRECEDING AND 1 PRECEDING)
                       AS before
            FROM bars b JOIN cal c USING (date) {where}
            WINDOW w AS (PARTITION BY b.isin ORDER BY b.date)
        )
        SELECT s.isin, s.date AS ex_date, s.prev_close / s.open AS raw, s.nse_symbol,
               s.bse_code, s.prev_date, s.prev_close, s.open
        FROM (SELECT seq.*, st.nse_symbol, st.bse_code FROM seq
              LEFT JOIN stocks st USING (isin)) s
        WHERE s.prev_close > 0 AND s.open > 0 AND s.k - s.prev_k <= ?
          AND (s.prev_close / s.open >= ? OR s.open / s.prev_close >= ?)
          AND abs(ln(s.after / s.open)) < abs(ln(s.after / s.prev_close))
          AND abs(ln(s.before / s.prev_close)) < abs(ln(s.before / s.open))
          AND NOT EXISTS (SELECT 1 FROM corporate_actions a
                          WHERE a.isin = s.isin AND a.ex_date = s.date)
          AND s.date >= ?
        ORDER BY s.isin, s.date
        """,
        [MAX_SESSIONS_APART, GAP_THRESHOLD, GAP_THRESHOLD, since or date.min],
    ).df()
    con.unregister("gap_isins")
    ratio, common = snap_ratio(rows["raw"].to_numpy())
    rows["ratio"] = ratio
    rows["common"] = common
    for c in ("ex_date", "prev_date"):
        rows[c] = pd.to_datetime(rows[c]).dt.date
    return rows[COLUMNS]
