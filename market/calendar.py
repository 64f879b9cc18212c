"""The calendar check: sessions the exchange held for which the store has no (or too few) bars.

The store's calendar is the union of the ingested days, so a bhavcopy never ingested would
silently shift every rolling window by a day. Offline, two signals tell that a day is missing:

1. **Holiday list.** NSE and BSE close on the same days; `exchange_calendars`' XBOM (BSE)
   calendar records them (with special closures such as election days) for the years it
   covers (1997 to its release's last recorded year, 2026 for 4.13). In those years a weekday
   that is not a holiday and has no bars in the store is a **missing session**.
2. **Thin sessions.** A session where fewer stocks have a bar than THIN_FRACTION (half) of the
   median of the THIN_WINDOW sessions around it: usually one exchange's file of a day whose
   other file is missing, or a truncated download.

Sessions on a holiday or a weekend (Muhurat trading on Diwali, special Saturday sessions) are
listed as **special sessions**, which is normal.

Limits: outside the covered years only thin sessions are found (a day with no file at all
cannot be told from an unlisted holiday); a store of another exchange's data shows that
exchange's own holidays as missing NSE sessions; the check cannot see a stock missing from an
otherwise complete day (that stock's NaN is its own business, handled by the features' 80% rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd

THIN_FRACTION = 0.5
THIN_WINDOW = 21
CALENDAR_NAME = "XBOM"
SHOWN = 10  # dates listed per kind in the text lines


@lru_cache(maxsize=1)
def _exchange_holidays() -> tuple[frozenset[date], date, date]:
    """(weekday holidays, first and last day the holiday list covers)."""
    import exchange_calendars as xcals

    factory = type(xcals.get_calendar(CALENDAR_NAME))
    lo, hi = factory.bound_min(), factory.bound_max()  # the years its holidays are recorded
    cal = xcals.get_calendar(CALENDAR_NAME, start=lo, end=hi)
    weekdays = pd.bdate_range(lo, hi)
    holidays = weekdays.difference(pd.DatetimeIndex(cal.sessions).tz_localize(None))
    return frozenset(d.date() for d in holidays), lo.date(), hi.date()


def exchange_holidays() -> tuple[frozenset[date], date, date]:
    """NSE/BSE weekday holidays and the span of years the list covers."""
    return _exchange_holidays()


@dataclass
class CalendarCheck:
    first: date | None = None
    last: date | None = None
    covered: tuple[date, date] | None = None  # the part of [first, last] the holidays cover
    missing: list[date] = field(default_factory=list)
    thin: list[tuple[date, int, int]] = field(default_factory=list)  # date, stocks, typical
    special: list[date] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.thin

    def lines(self) -> list[str]:
        if self.first is None:
            return ["no sessions"]
        out = []
        if self.covered is None:
            out.append(f"holiday list covers none of {self.first}..{self.last}: missing days "
                       "cannot be told from holidays, only thin sessions are checked")
        elif self.covered != (self.first, self.last):
            out.append(f"holiday list covers {self.covered[0]}..{self.covered[1]} of the "
                       f"store's {self.first}..{self.last}")
        if self.missing:
            out.append(f"{len(self.missing)} MISSING session(s) (exchange open, no bars "
                       f"ingested): {_few(self.missing)}")
        if self.thin:
            out.append(f"{len(self.thin)} THIN session(s) (under {THIN_FRACTION:.0%} of the "
                       "usual number of stocks): " + ", ".join(
                           f"{d} ({n} of ~{typ})" for d, n, typ in self.thin[:SHOWN])
                       + (" ..." if len(self.thin) > SHOWN else ""))
        if self.special:
            out.append(f"{len(self.special)} session(s) on a holiday or weekend (special "
                       f"sessions such as Muhurat trading): {_few(self.special)}")
        if self.ok:
            out.insert(0, "no missing or thin sessions found")
        return out

    def to_dict(self) -> dict:
        return {"first": self.first, "last": self.last, "covered": self.covered,
                "missing": self.missing, "thin": self.thin, "special": self.special,
                "lines": self.lines()}


def _few(days: list[date]) -> str:
    return ", ".join(map(str, days[:SHOWN])) + (" ..." if len(days) > SHOWN else "")


def check_calendar(dates: np.ndarray | pd.Series, stocks: np.ndarray | pd.Series,
                   since: date | None = None) -> CalendarCheck:
    """Check sessions `dates` (ascending) with the number of `stocks` that have a bar on each;
    only days from `since` on are reported (the thin test still uses the sessions before)."""
    days = pd.DatetimeIndex(pd.to_datetime(np.asarray(dates)))
    counts = np.asarray(stocks, dtype=np.float64)
    if len(days) == 0:
        return CalendarCheck()
    start = pd.Timestamp(since) if since is not None else days[0]
    first, last = max(start, days[0]).date(), days[-1].date()
    check = CalendarCheck(first=first, last=last)
    holidays, lo, hi = exchange_holidays()
    c_lo, c_hi = max(first, lo), min(last, hi)
    if c_lo <= c_hi:
        check.covered = (c_lo, c_hi)
        weekdays = pd.bdate_range(c_lo, c_hi)
        have = set(days.date)
        check.missing = [d.date() for d in weekdays
                         if d.date() not in have and d.date() not in holidays]
    typical = pd.Series(counts).rolling(THIN_WINDOW, center=True, min_periods=1).median()
    in_range = days >= start
    thin = in_range & (counts < THIN_FRACTION * typical.to_numpy())
    check.thin = [(d.date(), int(n), int(t)) for d, n, t
                  in zip(days[thin], counts[thin], typical[thin], strict=True)]
    check.special = [d.date() for d in days[in_range]
                     if d.weekday() >= 5 or (lo <= d.date() <= hi and d.date() in holidays)]
    return check
