"""The API in process: the FastAPI routes over a real market snapshot, with a fake runner that
calls the real scoring core and model registry directly (no BentoML server). Routes, errors,
the date policy, health, registry eviction and fallback, and the active pointer.
The real-server tests (test_service.py, test_reload.py) keep the end-to-end paths."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any

import bentoml
import numpy as np
import pytest
from fastapi.testclient import TestClient

from features import FEATURES
from inference.registry import ModelRegistry
from inference.scoring import ScoreRow, ScoringCore
from inference.snapshot import MarketSnapshot
from market.ingest import ingest_paths
from market.store import MarketStore
from serving.api import ApiBackend, build_app
from serving.errors import RunnerUnavailable
from serving.http import ApiKeyMiddleware
from tests.models import clone_model, small_model
from tests.oracle import expected_scores
from training_artifacts import model_store


class FakeRunner:
    """The runner service's four calls on the real ScoringCore, in this process. `down` makes
    every call fail as an unreachable runner does; `drop_last` loses a score (a faulty runner)."""

    def __init__(self, core: ScoringCore):
        self.core = core
        self.down = False
        self.drop_last = False
        self.scored_rows = 0  # rows sent to `score`

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("runner unreachable")

    async def score(self, rows: list[ScoreRow]) -> list[Any]:
        self._check()
        self.scored_rows += len(rows)
        out = self.core.score(rows)
        return out[:-1] if self.drop_last else out

    async def explain(self, row: ScoreRow) -> dict[str, Any]:
        self._check()
        return self.core.explain(row)

    async def status(self) -> dict[str, Any]:
        self._check()
        return self.core.status()

    async def reload(self) -> dict[str, Any]:
        self._check()
        return self.core.reload()


@pytest.fixture(scope="module")
def snapshot(small_store) -> MarketSnapshot:
    snap = MarketSnapshot(small_store)
    snap.load()
    return snap


@pytest.fixture(scope="module")
def models(oracle):
    """A small real model (active in these tests), two more loadable versions and a corrupted
    one; all removed after the module, and the active pointer put back as it was."""
    before = model_store.read_active()
    y = oracle.values[:, FEATURES.index("rs_rating")] > 50
    base = small_model(oracle.values, y)
    good = [clone_model(base) for _ in range(2)]
    bad = clone_model(base, corrupt=True)
    yield base, good, bad
    if before:
        model_store.write_active(before)
    else:
        model_store.active_pointer_path().unlink(missing_ok=True)
    for v in (base, *good, bad):
        bentoml.models.delete(f"vcp_breakout:{v}")


@pytest.fixture()
def clones(models):
    _, good, bad = models
    return good, bad


@pytest.fixture()
def active(models):
    """The small model active, as before every test; restored after."""
    model_store.write_active(models[0])
    yield models[0]
    model_store.write_active(models[0])


def make_client(snapshot, registry=None, stale_after_sessions=3, **backend_kw):
    runner = FakeRunner(ScoringCore(registry or ModelRegistry(check_interval=0)))
    backend = ApiBackend(snapshot, runner, stale_after_sessions=stale_after_sessions,
                         **backend_kw)
    client = TestClient(build_app(lambda: backend))
    client.backend = backend  # for the tests that look inside
    return client, runner


@pytest.fixture()
def api(snapshot, active):
    client, runner = make_client(snapshot)
    client.runner = runner  # for the tests that make it fail
    return client


def oracle_date(store) -> str:
    return str(store.calendar()[-1].astype(object))


# -- predict -----------------------------------------------------------------------------------
def test_predict_by_each_identifier_gives_the_models_own_probability(api, stock, oracle,
                                                                     active):
    bodies = [{"isin": stock.isin}, {"bse_code": stock.bse_code},
              {"nse_symbol": stock.nse_symbol.lower()},
              {"isin": stock.isin.lower(), "bse_code": stock.bse_code}]
    answers = [api.post("/predict", json=b) for b in bodies]
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    p, conf = expected_scores(active, oracle.values[[oracle.row(stock.isin)]])
    for r in answers:
        body = r.json()
        assert (body["isin"], body["bse_code"], body["nse_symbol"]) == (
            stock.isin, stock.bse_code, stock.nse_symbol)
        assert body["probability"] == pytest.approx(p[0], abs=1e-6)
        assert body["confidence"] == conf[0]
        assert body["model_version"] == active and body["note"] is None


def test_features_and_explanation_are_the_stocks_own(api, stock, oracle):
    body = api.post("/predict", json={"isin": stock.isin, "include_features": True,
                                      "include_explanation": True}).json()
    row = oracle.values[oracle.row(stock.isin)]
    assert list(body["features"]) == FEATURES
    for name, value in zip(FEATURES, row, strict=True):
        got = body["features"][name]
        assert got is None if np.isnan(value) else got == pytest.approx(value)
    top = body["explanation"]["top"]
    assert len(top) == 8
    assert [abs(t["contribution"]) for t in top] == sorted(
        (abs(t["contribution"]) for t in top), reverse=True)


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"bse_code": "999999"}, 404, "unknown BSE code '999999'"),
        ({"nse_symbol": "NOSUCHSTOCK"}, 404, "unknown NSE symbol 'NOSUCHSTOCK'"),
        ({"isin": "INE000000000"}, 404, "unknown ISIN 'INE000000000'"),
        ({}, 422, "give isin, bse_code or nse_symbol"),
        ({"bse_code": "700001", "prediction_date": "1999-01-01"}, 422,
         "no data for 1999-01-01: the store holds sessions from 2022-11-01"),
        ({"bse_code": "700001", "prediction_date": "2030-01-01"}, 422, "no data for 2030-01-01"),
        ({"bse_code": "700001", "prediction_date": "not-a-date"}, 422, "prediction_date"),
        ({"bse_code": "SETUP", "model_version": "nosuchversion"}, 404, "'nosuchversion'"),
        ({"bse_code": "700001", "model_version": "0" * 79}, 422, "model_version"),
        ({"bse_code": "700001", "symbol": "X", "days": 3}, 422,
         "unknown field(s): symbol, days"),
    ],
)
def test_predict_errors_are_json_with_a_message(api, stock, body, status, text):
    if body.get("bse_code") == "SETUP":  # a stock the model scores
        body = {**body, "bse_code": stock.bse_code}
    r = api.post("/predict", json=body)
    assert r.status_code == status, r.text
    assert text in r.json()["error"]


def test_identifiers_naming_two_stocks_are_422(api, small_store, stock):
    other = next(c for c in small_store.master().frame["bse_code"] if c != stock.bse_code)
    r = api.post("/predict", json={"bse_code": other, "nse_symbol": stock.nse_symbol})
    assert r.status_code == 422 and "different stocks" in r.json()["error"]


def test_a_stock_without_a_setup_gets_no_probability_and_the_reason(api, no_setup_stock):
    r = api.post("/predict", json={"isin": no_setup_stock.isin})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["probability"] is None and body["confidence"] == "NONE"
    assert body["model_version"] is None and body["pattern"] is None
    assert body["why_not"]  # the first VCP rule it fails, in words
    assert len(body["trend_template"]) == 8


def test_a_stock_that_cannot_be_scored_says_why(api, small_store, oracle):
    i = next(i for i, r in enumerate(oracle.reasons) if r and r.startswith("insufficient"))
    code = small_store.master().by_isin(oracle.isins[i]).bse_code
    r = api.post("/predict", json={"bse_code": code})
    assert r.status_code == 200, r.text
    assert r.json()["probability"] is None and r.json()["confidence"] == "NONE"
    assert r.json()["why_not"] == oracle.reasons[i]


def test_a_stock_below_the_floors_says_which(api, small_store, oracle):
    i = next(i for i in range(len(oracle.isins)) if oracle.scoreable[i]
             and not oracle.tradeable[i])
    r = api.post("/predict", json={"isin": oracle.isins[i]})
    assert r.status_code == 200, r.text
    assert r.json()["probability"] is None
    assert r.json()["why_not"].startswith(("illiquid: median traded value",
                                           "below the price floor"))


def test_malformed_bodies_never_500(api):
    for raw in (b"{not json", b"[]", b'"text"', b'{"bse_code": 12', b"\xff\xfe\x00{"):
        r = api.post("/predict", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422), (raw, r.status_code, r.text)
        assert r.json()["error"], raw


# -- the date policy ---------------------------------------------------------------------------
def test_a_weekend_maps_to_the_session_before_and_says_so(api, small_store, stock, oracle):
    cal = [d.astype(object) for d in small_store.calendar()[-40:]]
    friday = next(d for d in cal if d.weekday() == 4 and d + dt.timedelta(days=3) in cal)
    saturday = friday + dt.timedelta(days=1)
    on_saturday = api.post("/predict", json={"isin": stock.isin,
                                             "prediction_date": str(saturday)})
    on_friday = api.post("/predict", json={"isin": stock.isin, "prediction_date": str(friday)})
    assert on_saturday.status_code == on_friday.status_code == 200, on_saturday.text
    a, b = on_saturday.json(), on_friday.json()
    assert a["as_of_date"] == b["as_of_date"] == str(friday)
    assert a["probability"] == b["probability"]
    assert a["note"] == (f"{saturday} is not a trading session (weekend or holiday): as of "
                         f"the session before it, {friday}")
    assert b["note"] is None


def test_the_weekend_after_the_newest_session_maps_to_it_a_weekday_is_refused(api, stock):
    # The small store's newest session is Friday 2026-10-30.
    sunday = api.post("/predict", json={"isin": stock.isin, "prediction_date": "2026-11-01"})
    assert sunday.status_code == 200 and sunday.json()["as_of_date"] == "2026-10-30"
    assert sunday.json()["note"].startswith("2026-11-01 is not a trading session")
    monday = api.post("/predict", json={"isin": stock.isin, "prediction_date": "2026-11-02"})
    assert monday.status_code == 422
    assert monday.json()["error"] == ("no data for 2026-11-02: the store holds sessions from "
                                      "2022-11-01 to 2026-10-30")


def test_an_earlier_session_is_scored_on_its_own_features(api, earlier_setup, active):
    stock, earlier, then = earlier_setup
    r = api.post("/predict", json={"isin": stock.isin, "prediction_date": str(earlier)})
    assert r.status_code == 200, r.text
    p, _ = expected_scores(active, then.values[[then.row(stock.isin)]])
    assert r.json()["as_of_date"] == str(earlier)
    assert r.json()["probability"] == pytest.approx(p[0], abs=1e-6)
    pattern = r.json()["pattern"]
    assert pattern is not None and pattern["pivot"] > 0
    assert all(c["high_date"] <= str(earlier) for c in pattern["contractions"])


# -- batch_predict -----------------------------------------------------------------------------
def test_batch_predict_keeps_going_past_bad_stocks(api, stock):
    r = api.post("/batch_predict", json={"stocks": [
        {"bse_code": stock.bse_code}, {"bse_code": "999999"}, {"isin": stock.isin},
        {"nse_symbol": "NOPE", "isin": None}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["isin"] for x in body["results"]] == [stock.isin, stock.isin]
    assert body["errors"] == [
        {"index": 1, "isin": None, "bse_code": "999999", "nse_symbol": None, "status": 404,
         "error": "unknown BSE code '999999'"},
        {"index": 3, "isin": None, "bse_code": None, "nse_symbol": "NOPE", "status": 404,
         "error": "unknown NSE symbol 'NOPE'"},
    ]


def test_batch_limits_and_unknown_fields(api, stock):
    assert api.post("/batch_predict", json={"stocks": []}).status_code == 422
    r = api.post("/batch_predict", json={"stocks": [{"bse_code": stock.bse_code}] * 101})
    assert r.status_code == 422
    assert r.json()["error"] == ("invalid request: stocks: List should have at most 100 items "
                                 "after validation, not 101")
    ok = api.post("/batch_predict", json={"stocks": [{"bse_code": stock.bse_code}] * 100})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 100
    r = api.post("/batch_predict", json={"stocks": [{"bse": stock.bse_code}]})
    assert r.status_code == 422 and "unknown field(s): stocks.0.bse" in r.json()["error"]


def test_a_runner_that_loses_a_score_is_503_never_a_misaligned_answer(api, stock):
    api.runner.drop_last = True
    r = api.post("/batch_predict", json={"stocks": [{"isin": stock.isin}] * 3})
    assert r.status_code == 503 and "2 scores for 3 rows" in r.json()["error"]


def test_an_unreachable_runner_is_503(api, stock):
    api.runner.down = True
    r = api.post("/predict", json={"isin": stock.isin})
    assert r.status_code == 503 and "retry" in r.json()["error"]
    assert api.post("/models/reload", json={}).status_code == 503
    health = api.get("/health").json()
    assert health["status"] == "down"
    assert any("model runner unreachable" in x for x in health["reasons"])


# -- health ------------------------------------------------------------------------------------
def test_health_ok_counts_and_metrics(api, snapshot, active, stock):
    api.post("/predict", json={"isin": stock.isin})
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["reasons"] == []
    assert health["active_model"] == active
    assert health["universe_size"] == len(snapshot.master) == 400
    assert health["scoreable_today"] == int(snapshot.latest.result.scoreable.sum())
    assert health["data_as_of"] == str(snapshot.latest.as_of)
    text = api.get("/metrics").text
    assert 'vcp_predictions_total{confidence="' in text
    assert "vcp_model_registry_events_total" in text and "vcp_feature_seconds_bucket" in text


@pytest.fixture(scope="module")
def real_snapshot(tmp_path_factory) -> MarketSnapshot:
    """A real-data store (one ingested stock) whose newest session is 2024-01-05, a Friday."""
    folder = tmp_path_factory.mktemp("real")
    csv = folder / "RELIANCE.csv"
    days = [dt.date(2024, 1, d) for d in range(1, 6)]
    csv.write_text("date,open,high,low,close,volume,isin\n" + "".join(
        f"{d},100,110,90,105,1000,INE002A01018\n" for d in days))
    store = MarketStore(folder / "market.duckdb")
    ingest_paths(store, [csv])
    snap = MarketSnapshot(store)
    snap.load()
    return snap


@pytest.mark.parametrize(("today", "limit", "stale"), [
    (dt.date(2024, 1, 10), 3, False),  # Mon-Wed missing: 3 weekdays, within the limit
    (dt.date(2024, 1, 11), 3, True),  # Thursday: 4 weekdays
    (dt.date(2024, 1, 11), 4, False),
    (dt.date(2024, 1, 7), 0, False),  # the weekend after the newest session
])
def test_health_is_degraded_with_stale_data(real_snapshot, active, today, limit, stale):
    client, _ = make_client(real_snapshot, stale_after_sessions=limit, today=lambda: today)
    health = client.get("/health").json()
    assert health["data_source"] == "real"
    assert health["status"] == ("degraded" if stale else "ok"), health
    if stale:
        assert health["reasons"] == [
            f"stale_data: the newest session, 2024-01-05, is 4 weekdays old (more than "
            f"VCP_STALE_AFTER_SESSIONS={limit})"]


def test_a_simulated_store_is_never_stale(snapshot, active):
    client, _ = make_client(snapshot, stale_after_sessions=0, today=lambda: dt.date(2099, 1, 1))
    assert client.get("/health").json()["status"] == "ok"


# -- the model registry: eviction, fallback, the active pointer --------------------------------
def test_registry_evicts_the_least_recently_used_never_the_active(snapshot, active, clones,
                                                                  stock):
    (a, b), _ = clones
    registry = ModelRegistry(capacity=2, check_interval=0)
    client, _ = make_client(snapshot, registry)

    def predict(version=None):
        r = client.post("/predict", json={"isin": stock.isin, "model_version": version})
        assert r.status_code == 200, r.text
        return r.json()["model_version"]

    assert predict() == active
    assert predict(a) == a
    assert list(registry.status()["cached"]) == [active, a]
    assert predict(b) == b  # over capacity: `a` goes, the active one stays
    assert set(registry.status()["cached"]) == {active, b}
    assert predict(a) == a  # `b` goes now
    assert set(registry.status()["cached"]) == {active, a}
    assert registry.stats.loads == 4 and registry.stats.misses == 4
    models = client.get("/models").json()
    cached = {m["version"] for m in models["models"] if m["cached"]}
    assert cached == {active, a} and models["active"] == active


def test_a_corrupted_model_never_replaces_the_working_one(snapshot, active, clones, stock):
    _, bad = clones
    client, runner = make_client(snapshot)
    r = client.post("/models/reload", json={"version": bad})
    assert r.status_code == 422
    # What it says is the kind of failure: no file path, no xgboost stack trace.
    assert r.json()["error"] == (f"model {bad} could not be loaded; still serving {active}: "
                                 f"model {bad} cannot be loaded: its files are damaged or "
                                 "incomplete: XGBoostError")
    # The pointer stays on the last good version: every worker keeps serving it.
    assert model_store.read_active() == active
    p = client.post("/predict", json={"isin": stock.isin})
    assert p.status_code == 200 and p.json()["model_version"] == active
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["active_model"] == active
    pinned = client.post("/predict", json={"isin": stock.isin, "model_version": bad})
    assert pinned.status_code == 422 and "cannot be loaded" in pinned.json()["error"]
    assert "/" not in pinned.json()["error"]


def test_a_pointer_naming_a_broken_model_degrades_health(snapshot, active, clones, stock):
    _, bad = clones
    client, _ = make_client(snapshot)
    assert client.post("/predict", json={"isin": stock.isin}).status_code == 200
    model_store.write_active(bad)  # e.g. its files damaged after it was promoted
    p = client.post("/predict", json={"isin": stock.isin})
    assert p.status_code == 200 and p.json()["model_version"] == active
    health = client.get("/health").json()
    assert health["status"] == "degraded" and health["active_model"] == active
    assert health["reasons"] == [f"active pointer names {bad} but serving {active}: model "
                                 f"{bad} cannot be loaded: its files are damaged or "
                                 "incomplete: XGBoostError"]


def test_a_fresh_worker_falls_back_when_the_pointer_names_a_broken_model(snapshot, active,
                                                                         clones, stock):
    (a, b), bad = clones
    model_store.write_active(bad)
    client, runner = make_client(snapshot)  # a new registry: as a worker starting up
    r = client.post("/predict", json={"isin": stock.isin})
    assert r.status_code == 200
    assert r.json()["model_version"] == b  # the newest version that loads
    assert client.get("/health").json()["status"] == "degraded"


def test_the_active_pointer_moves_every_registry(snapshot, active, clones, stock):
    (a, _), _ = clones
    first, _ = make_client(snapshot)
    second, _ = make_client(snapshot)  # another worker
    assert first.post("/predict", json={"isin": stock.isin}).json()["model_version"] == active
    r = first.post("/models/reload", json={"version": a})
    assert r.status_code == 200
    assert r.json() == {"active": a, "previous": active,
                        "data_as_of": oracle_date(snapshot.store)}
    assert model_store.read_active() == a
    # The other worker follows the pointer by itself (check_interval 0 here, 1 s in service).
    assert second.post("/predict", json={"isin": stock.isin}).json()["model_version"] == a
    model_store.promote(active)  # what `vcp models promote` does
    assert second.post("/predict", json={"isin": stock.isin}).json()["model_version"] == active


def test_reload_errors_come_from_the_typed_table(api):
    r = api.post("/models/reload", json={"version": "nosuchversion"})
    assert r.status_code == 404 and "'nosuchversion' not found" in r.json()["error"]
    r = api.post("/models/reload", json={"version": "x", "force": True})
    assert r.status_code == 422 and "unknown field(s): force" in r.json()["error"]


def test_scores_stay_aligned_when_rows_pin_different_versions(active, clones, oracle):
    (a, _), bad = clones
    X = oracle.values[np.flatnonzero(oracle.scoreable)[:4]]
    pins = [None, bad, a, "nosuchversion"]
    rows = [ScoreRow(features=[None if np.isnan(v) else float(v) for v in x], model_version=v)
            for x, v in zip(X, pins, strict=True)]
    out = ScoringCore(ModelRegistry(check_interval=0)).score(rows)
    p, _ = expected_scores(active, X)
    assert [r.error_kind for r in out] == [None, "ModelLoadError", None, "UnknownModelVersion"]
    assert out[0].probability == pytest.approx(p[0]) and out[0].model_version == active
    assert out[2].probability == pytest.approx(p[2]) and out[2].model_version == a


# -- the latest session's scores table (issue 15) ---------------------------------------------
def build_table(client) -> None:
    """What the worker's background loop does when the table is stale."""
    asyncio.run(client.backend.scores.rebuild())


def test_latest_setups_come_from_the_table_with_the_runners_numbers(
        api, stock, no_setup_stock, earlier_setup, oracle, active, clones):
    runner, keeper = api.runner, api.backend.scores
    before = api.post("/predict", json={"isin": stock.isin}).json()  # no table yet: runner
    assert runner.scored_rows == 1 and keeper.stale()
    build_table(api)
    assert runner.scored_rows == 1 + int(oracle.candidate.sum()) and not keeper.stale()
    assert keeper.current.model_version == active
    p, conf = expected_scores(active, oracle.values[[oracle.row(stock.isin)]])
    body = api.post("/predict", json={"isin": stock.isin}).json()
    batch = api.post("/batch_predict", json={"stocks": [{"isin": stock.isin},
                                                        {"isin": no_setup_stock.isin}]}).json()
    assert runner.scored_rows == 1 + int(oracle.candidate.sum())  # no runner call since
    assert body["probability"] == pytest.approx(p[0], abs=1e-6) == before["probability"]
    assert body["confidence"] == conf[0] and body["model_version"] == active
    assert [r["probability"] for r in batch["results"]] == [body["probability"], None]
    assert batch["model_version"] == active
    # Another date, another version and explanations still go to the runner.
    earlier_stock, earlier, _ = earlier_setup
    scored = runner.scored_rows
    api.post("/predict", json={"isin": earlier_stock.isin, "prediction_date": str(earlier)})
    (a, _), _ = clones
    pinned = api.post("/predict", json={"isin": stock.isin, "model_version": a}).json()
    assert runner.scored_rows == scored + 2 and pinned["model_version"] == a
    explained = api.post("/predict", json={"isin": stock.isin, "include_explanation": True})
    assert explained.json()["explanation"]["top"] and runner.scored_rows == scored + 2


def test_the_table_follows_the_pointer_and_a_refresh(small_store, active, clones, stock):
    (a, _), _ = clones
    snap = MarketSnapshot(small_store)  # its own: refreshed below
    snap.load()
    client, runner = make_client(snap)
    build_table(client)
    keeper = client.backend.scores
    model_store.promote(a)  # through another worker or the CLI
    assert keeper.stale()
    build_table(client)
    assert keeper.current.model_version == a
    answers = client.post("/batch_predict", json={"stocks": [{"isin": stock.isin}] * 3}).json()
    assert {r["model_version"] for r in answers["results"]} == {a} == {answers["model_version"]}
    table = keeper.current
    snap.load()  # a new snapshot of the store (an ingest): the old table no longer answers
    assert keeper.stale() and table.lookup(snap.latest, snap.latest.row(stock.isin), None) is None
    build_table(client)
    assert keeper.current.features is snap.latest
    model_store.write_active(active)


def test_the_table_outlives_a_runner_outage_but_never_a_broken_pointer(snapshot, active,
                                                                      clones, stock):
    _, bad = clones
    client, runner = make_client(snapshot)
    runner.core.registry.refresh(force=True)  # as the runner service starts
    build_table(client)
    table = client.backend.scores.current
    runner.down = True
    r = client.post("/predict", json={"isin": stock.isin})
    assert r.status_code == 200 and r.json()["model_version"] == active  # from the table
    model_store.write_active(bad)  # a pointer to a broken model, with the runner down
    with pytest.raises(RunnerUnavailable):
        build_table(client)
    assert client.backend.scores.current is table
    runner.down = False
    build_table(client)  # the runner keeps the working version, and so does the table
    assert client.backend.scores.current.model_version == active
    assert client.post("/predict", json={"isin": stock.isin}).json()["model_version"] == active


def test_the_background_loop_builds_the_table(snapshot, active):
    client, _ = make_client(snapshot)

    async def briefly() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.backend.scores.keep_current(interval=0.01), 0.5)

    asyncio.run(briefly())
    assert client.backend.scores.current.model_version == active


# -- API keys ----------------------------------------------------------------------------------
def test_api_keys_and_the_admin_key(snapshot, active, stock):
    _, runner = make_client(snapshot)
    from starlette.applications import Starlette
    from starlette.routing import Mount

    backend = ApiBackend(snapshot, runner, stale_after_sessions=3)
    app = ApiKeyMiddleware(Starlette(routes=[Mount("/api/v1", build_app(lambda: backend))]),
                           keys=["user-1", "user-2"], admin_keys=["admin"])
    client = TestClient(app)

    def call(path, key=None):
        headers = {"X-API-Key": key} if key else {}
        return client.post(f"/api/v1/{path}", json={"isin": stock.isin} if path == "predict"
                           else {}, headers=headers).status_code

    assert [call("predict"), call("predict", "wrong"), call("predict", "user-2"),
            call("predict", "admin")] == [401, 401, 200, 200]
    assert [call("models/reload", "user-1"), call("models/reload", "admin")] == [403, 200]

    chart = client.get(f"/api/v1/chart?isin={stock.isin}")
    assert chart.status_code == 401 and chart.json()["error"] == "missing X-API-Key header"
    chart = client.get(f"/api/v1/chart?isin={stock.isin}", headers={"X-API-Key": "user-1"})
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"


# -- charts ------------------------------------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_a_setup_chart_is_a_png_cached_per_stock_session_and_model(
        api, snapshot, active, stock, no_setup_stock, earlier_setup):
    import io

    from PIL import Image

    first = api.get("/chart", params={"nse_symbol": stock.nse_symbol})
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/png" and first.content[:8] == PNG_MAGIC
    assert Image.open(io.BytesIO(first.content)).size == (1000, 600)
    cached = dict(api.backend.charts._items)
    assert list(cached) == [(stock.isin, snapshot.latest.as_of, active)]
    again = api.get("/chart", params={"isin": stock.isin})
    assert again.content == first.content and dict(api.backend.charts._items) == cached
    # An earlier session and a stock without a setup chart too (with the reason as caption).
    earlier_stock, day, _ = earlier_setup
    then = api.get("/chart", params={"bse_code": earlier_stock.bse_code, "date": str(day)})
    assert then.status_code == 200 and then.content[:8] == PNG_MAGIC
    none = api.get("/chart", params={"isin": no_setup_stock.isin})
    assert none.status_code == 200 and none.content != first.content


@pytest.mark.parametrize(("params", "status", "text"), [
    ({"bse_code": "999999"}, 404, "unknown BSE code '999999'"),
    ({}, 422, "give isin, bse_code or nse_symbol"),
    ({"bse_code": "700001", "date": "not-a-date"}, 422, "date"),
    ({"bse_code": "700001", "date": "1999-01-01"}, 422, "no data for 1999-01-01"),
    ({"bse_code": "7" * 30}, 422, "bse_code"),
])
def test_chart_errors_are_json(api, params, status, text):
    r = api.get("/chart", params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert text in r.json()["error"]


# -- hardening (issue 17): strict inputs, the model store, dates, the market store -------------
@pytest.mark.parametrize(("body", "field"), [
    ({"include_explanation": 0}, "include_explanation"),
    ({"include_features": "true"}, "include_features"),
    ({"include_features": 1}, "include_features"),
    ({"prediction_date": 20261030}, "prediction_date"),
])
def test_inputs_are_taken_as_their_json_type_only(api, stock, body, field):
    r = api.post("/predict", json={"isin": stock.isin, **body})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith(f"invalid request: {field}:")


def test_an_empty_batch_is_refused_by_the_schema_itself(api):
    r = api.post("/batch_predict", json={"stocks": []})
    assert r.status_code == 422
    assert r.json()["error"] == ("invalid request: stocks: List should have at least 1 item "
                                 "after validation, not 0")
    from serving.schemas import BatchPredictRequest

    schema = BatchPredictRequest.model_json_schema()
    assert (schema["properties"]["stocks"]["minItems"],
            schema["properties"]["stocks"]["maxItems"]) == (1, 100)


def test_score_rows_take_numbers_only():
    with pytest.raises(ValueError, match="float_type|valid number"):
        ScoreRow.model_validate_json('{"features": [true' + ", 1.0" * 24 + "]}")
    with pytest.raises(ValueError):
        ScoreRow.model_validate({"features": ["1.0"] + [1.0] * 24})
    assert ScoreRow.model_validate({"features": [1] + [None] * 24}).features[0] == 1.0


@pytest.fixture()
def bad_folders(models):
    """Two version folders BentoML cannot read: empty, and a model.yaml that is not one."""
    root = model_store.versions_dir()
    empty, garbage = root / "zzzempty", root / "zzzgarbage"
    empty.mkdir()
    garbage.mkdir()
    (garbage / "model.yaml").write_text(": not [ yaml")
    yield "zzzempty", "zzzgarbage"
    import shutil

    shutil.rmtree(empty)
    shutil.rmtree(garbage)


def test_unreadable_version_folders_are_skipped_and_reported(snapshot, active, bad_folders,
                                                             stock):
    client, _ = make_client(snapshot)  # a registry starting with the bad folders present
    r = client.post("/predict", json={"isin": stock.isin})
    assert r.status_code == 200 and r.json()["model_version"] == active
    listing = client.get("/models").json()
    assert {m["version"] for m in listing["models"]} >= {active}
    unreadable = {u["version"]: u["error"] for u in listing["unreadable"]}
    assert set(unreadable) == set(bad_folders)
    assert "cannot be read from the store" in unreadable["zzzempty"]
    assert all("/" not in e for e in unreadable.values())  # no server paths
    health = client.get("/health").json()
    assert health["status"] == "degraded"
    assert [r for r in health["reasons"] if "zzz" in r] == [
        f"model_store_unreadable_version: {v} (skipped; see `models list`)" for v in bad_folders]
    r = client.post("/models/reload", json={"version": "zzzempty"})
    assert r.status_code == 422 and "cannot be read from the store" in r.json()["error"]
    assert model_store.read_active() == active


def test_a_registry_with_a_valid_pointer_reads_only_that_version(active, bad_folders,
                                                                 monkeypatch):
    def no_listing():
        raise AssertionError("the registry listed the whole store")

    monkeypatch.setattr(model_store, "list_models", no_listing)
    registry = ModelRegistry(check_interval=0)
    assert registry.refresh(force=True) == active


def test_reload_to_a_broken_model_leaves_every_worker_on_the_good_one(snapshot, active,
                                                                      clones, stock):
    _, bad = clones
    first, _ = make_client(snapshot)
    second, _ = make_client(snapshot)  # another worker, following the pointer
    assert first.post("/models/reload", json={"version": bad}).status_code == 422
    assert model_store.read_active() == active
    for client in (first, second):
        r = client.post("/predict", json={"isin": stock.isin})
        assert r.json()["model_version"] == active
        assert client.get("/health").json()["status"] == "ok"


def _async_client(backend):
    import httpx

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(lambda: backend)),
                             base_url="http://api")


def _one_slot_backend(small_store) -> ApiBackend:
    """A backend computing one date at a time, whose requests do not wait for a slot."""
    backend = ApiBackend(MarketSnapshot(small_store, concurrency=1),
                         FakeRunner(ScoringCore()), stale_after_sessions=3, date_wait_seconds=0)
    backend.snapshot.load()
    return backend


def _at_once(backend, isin: str, days: list[str]) -> list:
    """Predicts for `isin` on each of `days`, sent together."""
    import asyncio

    async def together():
        async with _async_client(backend) as client:
            return await asyncio.gather(*(client.post(
                "/predict", json={"isin": isin, "prediction_date": d}) for d in days))

    return asyncio.run(together())


def test_uncached_dates_beyond_the_bound_wait_then_get_503(active, stock, small_store):
    cal = small_store.calendar()
    dates = [str(cal[-200 - i]) for i in range(3)]
    backend = _one_slot_backend(small_store)
    answers = _at_once(backend, stock.isin, dates)
    assert [r.status_code for r in answers] == [200, 503, 503]
    busy = answers[1]
    assert busy.headers["retry-after"] == "2"
    assert busy.json()["error"].endswith("computing as many other dates as it allows (1); "
                                         "retry in a few seconds")
    # Waiting a moment is enough: the first date is done, the next computes.
    again = TestClient(build_app(lambda: backend)).post(
        "/predict", json={"isin": stock.isin, "prediction_date": dates[1]})
    assert again.status_code == 200


def test_requests_for_a_date_being_computed_wait_for_it(active, stock, small_store):
    day = str(small_store.calendar()[-210])
    answers = _at_once(_one_slot_backend(small_store), stock.isin, [day] * 3)
    assert [r.status_code for r in answers] == [200] * 3  # one computation, no 503
    assert len({r.json()["probability"] for r in answers}) == 1


def test_an_unknown_stock_never_computes_a_date(snapshot, active):
    backend = ApiBackend(snapshot, FakeRunner(ScoringCore()), stale_after_sessions=3)
    client = TestClient(build_app(lambda: backend))
    before = snapshot.cached_dates
    r = client.post("/predict", json={"bse_code": "999999", "prediction_date": "2024-06-03"})
    assert r.status_code == 404 and snapshot.cached_dates == before


def test_the_date_cache_stays_within_its_byte_budget(small_store):
    from inference.snapshot import footprint

    probe = MarketSnapshot(small_store)
    probe.load()
    one = footprint(probe.at(small_store.calendar()[-100].astype(object)))
    snap = MarketSnapshot(small_store, cache_bytes=2.5 * one)
    snap.load()
    for d in small_store.calendar()[-110:-100]:
        snap.at(d.astype(object))
        assert snap.cache_nbytes <= 2.5 * one
    assert snap.cached_dates == 3  # two dates fit, and the latest, which is never evicted
    empty = MarketSnapshot(small_store, cache_bytes=0)
    empty.load()
    assert empty.at(small_store.calendar()[-100].astype(object)).as_of is not None
    assert empty.cached_dates == 1 and empty.cache_nbytes == 0


@pytest.fixture()
def store_copy(small_store, tmp_path):
    import shutil

    path = tmp_path / "market.duckdb"
    shutil.copy(small_store.path, path)
    return path


def _backend_on(path, lock_wait=0.2):
    snap = MarketSnapshot(MarketStore(path, lock_wait=lock_wait))
    snap.load()
    backend = ApiBackend(snap, FakeRunner(ScoringCore()), stale_after_sessions=3)
    return backend, TestClient(build_app(lambda: backend))


def _unavailable(client, stock, day, expected):
    r = client.post("/predict", json={"isin": stock.isin, "prediction_date": day})
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert r.json()["error"].startswith(f"{expected}: {day} is not in memory")
    assert "/" not in r.json()["error"]  # no server path
    # What is in memory is still served, on the same connection.
    assert client.post("/predict", json={"isin": stock.isin}).status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "degraded"
    assert f"market_store_unavailable: {expected}; serving the data in memory" in (
        health["reasons"])


def test_a_deleted_store_is_503_and_health_degraded(store_copy, active, stock, small_store):
    backend, client = _backend_on(store_copy)
    store_copy.unlink()
    _unavailable(client, stock, str(small_store.calendar()[-40]),
                 "the market store file is missing")
    assert backend.snapshot.maybe_refresh() is False  # the refresh keeps what it has


def test_a_damaged_store_is_503(store_copy, active, stock, small_store):
    backend, client = _backend_on(store_copy)
    store_copy.write_bytes(b"not a duckdb file" * 1000)
    _unavailable(client, stock, str(small_store.calendar()[-41]),
                 "the market store cannot be read (IOException)")


def test_a_locked_store_is_503_within_the_lock_wait(store_copy, active, stock, small_store):
    import subprocess
    import sys
    import time

    backend, client = _backend_on(store_copy, lock_wait=0.3)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', "
        "flush=True); time.sleep(60)"), str(store_copy)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        _unavailable(client, stock, str(small_store.calendar()[-42]),
                     "the market store is locked by another process (an ingest?)")
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
    # The writer gone, the next read works and health recovers.
    r = client.post("/predict", json={"isin": stock.isin,
                                      "prediction_date": str(small_store.calendar()[-42])})
    assert r.status_code == 200
    assert client.get("/health").json()["status"] == "ok"
