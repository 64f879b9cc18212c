"""Real daily prices for tests: the Philippine Stock Exchange data shipped inside the `fastquant`
package (see tests/fixtures/README.md), read straight from the installed files.

`fastquant` is installed without its dependencies (requirements-fixtures.txt) and never
imported: `find_spec` locates it without running its `__init__`.
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

PACKAGE = "fastquant"
DATA_FILE = "data/merged_stock_data.zip"  # one CSV: two header rows (symbol, field), then dates


def data_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the real-data fixture needs the {PACKAGE} package: run `make setup-dev` "
            "(it installs requirements-fixtures.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DATA_FILE


def load_pse() -> pd.DataFrame:
    """Long frame symbol, date, open, high, low, close, value (PHP traded value), as shipped."""
    with zipfile.ZipFile(data_path()) as zf, zf.open(zf.namelist()[0]) as fh:
        wide = pd.read_csv(fh, index_col=0, header=[0, 1])
    wide = wide[wide.index.astype(str).str.match(r"\d{4}-\d{2}-\d{2}$")]
    wide.index = pd.to_datetime(wide.index).rename("date")
    long = wide.stack(level=0, future_stack=True).rename_axis(["date", "symbol"]).reset_index()
    long = long.dropna(subset=["open", "high", "low", "close"], how="all")
    return long[["symbol", "date", "open", "high", "low", "close", "value"]]


def write_per_stock_csvs(folder: Path, symbols: list[str] | None = None) -> dict[str, int]:
    """One `date,open,high,low,close,volume` file per stock named <symbol>.csv (as a user with
    downloaded per-stock files has them). The data give traded value, not shares: volume is
    value / close, rounded (0 stays 0). Rows go out as shipped, bad ones included. Returns
    rows per symbol."""
    folder.mkdir(parents=True, exist_ok=True)
    data = load_pse()
    if symbols is not None:
        data = data[data["symbol"].isin(symbols)]
    counts = {}
    for symbol, rows in data.groupby("symbol", sort=True):
        with np.errstate(divide="ignore", invalid="ignore"):
            volume = np.where(rows["close"] > 0, np.round(rows["value"] / rows["close"]), np.nan)
        out = pd.DataFrame({"date": rows["date"].dt.strftime("%Y-%m-%d"), "open": rows["open"],
                            "high": rows["high"], "low": rows["low"], "close": rows["close"],
                            "volume": volume})
        out.to_csv(folder / f"{symbol}.csv", index=False)
        counts[symbol] = len(out)
    return counts
