from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from market.sim.checks import SimData, fingerprint_auc, oracle_ceiling, post_breakout_vol
from market.sim.plan import QUALITY_WEIGHTS, quality
from market.simulator import SimConfig, build_demo_store, simulate
from market.store import MarketStore


def _bars(path: Path):
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT * FROM bars ORDER BY isin, date").df()


@pytest.fixture(scope="module")
def fingerprint_store(tmp_path_factory: pytest.TempPathFactory) -> SimData:
    """A 1,500-stock market: enough planted structures for the no-tell checks."""
    path = Path(tmp_path_factory.mktemp("fingerprint")) / "market.duckdb"
    build_demo_store(path, SimConfig(n_stocks=1500, n_dual=300, seed=5))
    return SimData.load(MarketStore(path))


def test_same_seed_gives_identical_store_and_another_seed_differs(tmp_path):
    cfg = SimConfig(n_stocks=120, n_dual=30, seed=11)
    a, b, c = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "c.duckdb"
    build_demo_store(a, cfg)
    build_demo_store(b, cfg)
    build_demo_store(c, SimConfig(n_stocks=120, n_dual=30, seed=12))
    bars_a, bars_b, bars_c = _bars(a), _bars(b), _bars(c)
    assert bars_a.equals(bars_b)
    assert MarketStore(a).master().frame.equals(MarketStore(b).master().frame)
    with duckdb.connect(str(a), read_only=True) as ca, duckdb.connect(str(b), read_only=True) as cb:
        eps_a = ca.execute("SELECT * FROM sim_episodes").df()
        eps_b = cb.execute("SELECT * FROM sim_episodes").df()
    pd.testing.assert_frame_equal(eps_a, eps_b)
    assert not bars_a[["open", "close"]].equals(bars_c[["open", "close"]])


def test_bars_are_internally_consistent(small_store):
    with small_store.connect() as con:
        bad = con.execute(
            """SELECT count(*) FROM bars WHERE high < greatest(open, close)
               OR low > least(open, close) OR volume <= 0 OR low <= 0"""
        ).fetchone()[0]
    assert bad == 0


def test_daily_volatility_and_tails_are_plausible(small_store):
    panel = small_store.load_panel(None, lookback=2000)
    rets = np.diff(np.log(panel.close), axis=1)
    vol = np.nanstd(rets, axis=1)
    vol = vol[np.isfinite(vol)]
    # Indian small and mid caps: roughly 1%-5% daily; the median near 2-3%.
    assert 0.015 < np.median(vol) < 0.035
    assert np.quantile(vol, 0.05) > 0.008 and np.quantile(vol, 0.95) < 0.06
    kurt = pd.DataFrame(rets.T).kurt().dropna()
    assert kurt.median() > 1.0  # fat tails: Student-t innovations and GARCH clustering
    # Small positive lag-1 autocorrelation at most, as thinly traded small caps show (the
    # 11,000-stock store's median is 0.07; 400 stocks scatter around it).
    r = pd.DataFrame(rets.T)
    lag1 = r.apply(lambda s: s.autocorr(1)).dropna()
    assert abs(lag1.median()) < 0.10


def test_planted_structures_have_the_planned_shapes(small_store):
    with small_store.connect() as con:
        eps = con.execute("SELECT * FROM sim_episodes").df()
        meta = dict(con.execute("SELECT key, value FROM metadata").fetchall())
    assert meta["source"] == "simulated"
    assert set(eps["kind"]) == {"vcp", "range", "widening", "no_dryup", "partial"}
    vcp = eps[eps["kind"] == "vcp"]
    assert len(vcp) > 50
    assert vcp["n_contractions"].between(2, 6).all()
    planned = vcp["depths"].str.split(",").apply(lambda d: [float(x) for x in d])
    assert all(all(b < a for a, b in zip(d, d[1:], strict=False)) for d in planned)
    wide = eps[eps["kind"] == "widening"]["depths"].str.split(",").apply(
        lambda d: [float(x) for x in d])
    assert all(all(b > a for a, b in zip(d, d[1:], strict=False)) for d in wide)
    # Realized: VCP bases end tight and dry; the look-alikes without dry-up do not dry up.
    assert vcp["last_depth"].median() < 0.11
    assert vcp["dryup"].median() < 0.9
    assert eps.loc[eps["kind"] == "no_dryup", "dryup"].median() > vcp["dryup"].median()
    # Bases that finish after the warm-up have an oracle probability; partials never finish.
    done = eps["ready_date"].notna() & eps["p_oracle"].notna()
    assert done.sum() > 50
    assert eps.loc[eps["kind"] == "partial", "ready_date"].isna().all()


def test_quality_is_the_documented_function():
    base = {name: centre for name, (_, centre, _) in QUALITY_WEIGHTS.items()}
    assert quality(base, 0.0) == pytest.approx(0.0)
    tighter = {**base, "last_depth": base["last_depth"] - 0.03}
    drier = {**base, "dryup": base["dryup"] - 0.2}
    assert quality(tighter, 0.0) > quality(base, 0.0)
    assert quality(drier, 0.0) > quality(base, 0.0)
    assert quality(base, 0.4) - quality(base, 0.0) == pytest.approx(0.4)


def test_generic_statistics_cannot_tell_planted_rows(fingerprint_store):
    """No tells: std/ATR, range, kurtosis, volume autocorrelation and gap statistics do not
    separate stock-days inside planted structures from the rest on held-out stocks."""
    result = fingerprint_auc(fingerprint_store)
    assert result["structure_share"] > 0.05
    assert result["roc_auc"] <= 0.56, result


def test_breakouts_keep_the_same_volatility_whatever_their_fate(fingerprint_store):
    """Successes and failures are not drawn as smooth paths: the daily-return volatility after
    a breakout is within 15% of the stock's volatility before the base, for both."""
    ratio = post_breakout_vol(fingerprint_store)
    assert ratio["n_success"] > 30 and ratio["n_failure"] > 30
    assert 0.85 <= ratio["success"] <= 1.15, ratio
    assert 0.85 <= ratio["failure"] <= 1.15, ratio


def test_oracle_probability_predicts_the_real_trades(fingerprint_store):
    eps = fingerprint_store.episodes
    known = eps[eps["trade_outcome"].notna() & eps["p_oracle"].notna()]
    won = (known["trade_outcome"] == "win").to_numpy()
    p = known["p_oracle"].to_numpy()
    # Calibrated on average (the oracle is a Monte Carlo of the same process), and it ranks.
    assert abs(p.mean() - won.mean()) < 0.05
    assert p[won].mean() > p[~won].mean() + 0.15
    ceiling = oracle_ceiling(fingerprint_store)
    assert ceiling["roc_auc"] > 0.75


def test_universe_shape_and_identifiers():
    master, bars, _, days = simulate(SimConfig(n_stocks=200, n_dual=40, seed=3))
    assert len(master) == 200 and master["isin"].is_unique
    assert master["nse_symbol"].notna().sum() == 40
    assert master["bse_code"].str.fullmatch(r"\d{6}").all()
    assert master["isin"].str.fullmatch(r"INE[A-Z0-9]{8}\d").all()
    assert master["name"].str.endswith("(simulated)").all()
    assert len(days) >= 776
    assert (~master["active"]).sum() > 0  # some delistings
    assert set(bars["exchange"]) == {"NSE", "BSE"}
