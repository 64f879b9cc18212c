from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np

from market.simulator import SimConfig, build_demo_store, simulate
from market.store import MarketStore


def _bars(path: Path):
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT * FROM bars ORDER BY isin, date").df()


def test_same_seed_gives_identical_store_and_another_seed_differs(tmp_path):
    cfg = SimConfig(n_stocks=120, n_dual=30, seed=11)
    a, b, c = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "c.duckdb"
    build_demo_store(a, cfg)
    build_demo_store(b, cfg)
    build_demo_store(c, SimConfig(n_stocks=120, n_dual=30, seed=12))
    bars_a, bars_b, bars_c = _bars(a), _bars(b), _bars(c)
    assert bars_a.equals(bars_b)
    assert MarketStore(a).master().frame.equals(MarketStore(b).master().frame)
    assert not bars_a[["open", "close"]].equals(bars_c[["open", "close"]])


def test_bars_are_internally_consistent(small_store):
    with small_store.connect() as con:
        bad = con.execute(
            """SELECT count(*) FROM bars WHERE high < greatest(open, close)
               OR low > least(open, close) OR volume <= 0 OR low <= 0"""
        ).fetchone()[0]
    assert bad == 0


def test_daily_volatility_is_plausible(small_store):
    panel = small_store.load_panel(None, lookback=500)
    rets = np.diff(np.log(panel.close), axis=1)
    vol = np.nanstd(rets, axis=1)
    vol = vol[np.isfinite(vol)]
    # Indian small and mid caps: roughly 1%-5% daily; the median near 2-3%.
    assert 0.012 < np.median(vol) < 0.04
    assert np.quantile(vol, 0.05) > 0.008 and np.quantile(vol, 0.95) < 0.06


def test_planted_episodes_and_labels_of_simulation(small_store):
    with small_store.connect() as con:
        eps = con.execute("SELECT * FROM sim_episodes").df()
        meta = dict(con.execute("SELECT key, value FROM metadata").fetchall())
    assert meta["source"] == "simulated"
    assert len(eps) > 50
    assert eps["n_contractions"].between(2, 6).all()
    depths = eps["depths"].str.split(",").apply(lambda d: [float(x) for x in d])
    assert all(all(b < a for a, b in zip(d, d[1:], strict=False)) for d in depths)
    # Success odds depend on the setup: tight bases succeed more often than loose ones.
    tight = eps[eps["last_depth"] < eps["last_depth"].median()]["planned_success"].mean()
    loose = eps[eps["last_depth"] >= eps["last_depth"].median()]["planned_success"].mean()
    assert tight > loose


def test_universe_shape_and_identifiers():
    master, bars, _, days = simulate(SimConfig(n_stocks=200, n_dual=40, seed=3))
    assert len(master) == 200 and master["isin"].is_unique
    assert master["nse_symbol"].notna().sum() == 40
    assert master["bse_code"].str.fullmatch(r"\d{6}").all()
    assert master["isin"].str.fullmatch(r"INE[A-Z0-9]{8}\d").all()
    assert master["name"].str.endswith("(simulated)").all()
    assert 700 < len(days) < 800
    assert (~master["active"]).sum() > 0  # some delistings
    assert set(bars["exchange"]) == {"NSE", "BSE"}
