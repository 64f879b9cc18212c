"""The date policy shared by the API and the batch, and how old the newest session is.

A date that is not a trading session (weekend, holiday) maps to the session before it, and the
answer says so in a note; so does a weekend right after the newest session. A date before the
first session, or a weekday after the newest one (its data may just not be in yet), is
refused: the store cannot vouch for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from inference.errors import DateOutOfRange


@dataclass(frozen=True)
class Session:
    as_of: date  # the trading session used
    note: str | None = None  # set when the requested date was not a session


def day(value: np.datetime64) -> date:
    return pd.Timestamp(value).date()


def resolve_session(calendar: np.ndarray, wanted: date | None) -> Session:
    """The session for `wanted` (default: the latest) in an ascending datetime64[D] calendar."""
    if len(calendar) == 0:
        raise DateOutOfRange("the market store holds no sessions")
    first, last = day(calendar[0]), day(calendar[-1])
    if wanted is None:
        return Session(last)
    beyond = wanted > last and weekdays_since(last, wanted) > 0
    if wanted < first or beyond:
        raise DateOutOfRange(
            f"no data for {wanted}: the store holds sessions from {first} to {last}")
    i = int(np.searchsorted(calendar, np.datetime64(wanted, "D"), side="right")) - 1
    as_of = day(calendar[i])
    if as_of == wanted:
        return Session(as_of)
    return Session(as_of, f"{wanted} is not a trading session (weekend or holiday): "
                          f"as of the session before it, {as_of}")


def weekdays_since(newest: date, today: date) -> int:
    """Weekdays after `newest` up to and including `today`: sessions the store may be missing
    (exchange holidays count too; the calendar only knows past sessions)."""
    if today <= newest:
        return 0
    return int(np.busday_count(newest + timedelta(days=1), today + timedelta(days=1)))
