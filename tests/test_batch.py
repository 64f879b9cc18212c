"""The daily batch: outputs, idempotent re-runs, skipped stocks, --url mode, failure safety."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from batch import BatchConfig, run_batch
from tests.oracle import expected_scores, features_at
from tests.serverutil import ROOT, free_port, running_server

QUIET = {"COLUMNS": "400", "TERM": "dumb"}  # no rich line wrapping in captured messages


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "vcp", "batch", "run", *args],
        cwd=ROOT, env={**os.environ, **QUIET, **(env or {})}, capture_output=True, text=True,
        timeout=timeout,
    )


def message(proc: subprocess.CompletedProcess) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def db_rows(db: Path, table: str) -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY rowid")]
    finally:
        con.close()


@pytest.fixture()
def paths(tmp_path):
    return {"out": tmp_path / "out", "db": tmp_path / "predictions.db"}


def args_for(store, paths, *extra: str) -> list[str]:
    return ["--market-db", str(store.path), "--out", str(paths["out"]), "--db",
            str(paths["db"]), *extra]


def config_for(store, paths, **kw) -> BatchConfig:
    return BatchConfig(market_db=store.path, out_dir=paths["out"], predictions_db=paths["db"],
                       **kw)


@pytest.fixture(scope="module")
def expected(small_store, quick_model):
    """What the batch must produce at the latest date, computed apart from the batch and the
    inference core: features from `features`, scores from the model folder (tests/oracle)."""
    feats = features_at(small_store)
    master = small_store.master().frame.set_index("isin").reindex(feats.isins)
    active = master["active"].to_numpy(dtype=bool)
    mask = active & feats.candidate
    assert mask.sum() >= 2, "the small store needs setups on its latest session"
    p, conf = expected_scores(quick_model[0], feats.values[mask])
    unscoreable = active & ~feats.scoreable
    return {
        "date": str(small_store.date_range()[1]),
        "prob": dict(zip(feats.isins[mask], p.astype(float), strict=True)),
        "conf": dict(zip(feats.isins[mask], conf, strict=True)),
        "inactive": set(feats.isins[~active]),
        "reasons": {feats.isins[i]: feats.reasons[i] for i in np.flatnonzero(unscoreable)},
        "outside": set(feats.isins[active & feats.scoreable & ~feats.tradeable]),
        "inside_no_setup": set(feats.isins[active & feats.scoreable & feats.tradeable
                                           & ~feats.setup]),
        "all": set(feats.isins),
        "version": quick_model[0],
    }


def test_a_run_writes_all_four_outputs(small_store, quick_model, paths, expected):
    started = time.monotonic()
    proc = cli(*args_for(small_store, paths))
    wall = time.monotonic() - started
    assert proc.returncode == 0, message(proc)
    day = expected["date"]
    out = paths["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"predictions_{day}.csv", f"skipped_stocks_{day}.csv", f"report_{day}.txt",
         f"report_{day}.html"])

    listing = read_csv(out / f"predictions_{day}.csv")
    pred = [r for r in listing if r["status"] == "setup"]
    near = [r for r in listing if r["status"] == "near-setup"]
    assert listing == pred + near  # the setups first, then the near-setups
    assert {r["isin"] for r in pred} == set(expected["prob"])
    for r in near:  # inside the universe, one late VCP rule failed, no probability
        assert r["isin"] in expected["inside_no_setup"]
        assert r["probability"] == "" and r["why_not"]
    for r in pred:
        assert r["footprint"] and float(r["stop_price"]) < float(r["pivot_price"])
        assert 0 < float(r["risk_pct"]) <= 0.08 + 1e-9
    probs = [float(r["probability"]) for r in pred]
    assert probs == sorted(probs, reverse=True)
    assert [int(r["rank"]) for r in pred] == list(range(1, len(pred) + 1))
    for r in pred:
        assert float(r["probability"]) == pytest.approx(expected["prob"][r["isin"]], abs=1e-9)
        assert r["confidence"] == expected["conf"][r["isin"]]
        assert r["model_version"] == expected["version"] == quick_model[0]
        assert r["prediction_date"] == day
    detected = [r for r in pred if r["vcp_detected"] == "True"]
    assert all(float(r["pivot_price"]) > 0 for r in detected)

    skipped = read_csv(out / f"skipped_stocks_{day}.csv")
    by_isin = {r["isin"]: r["reason"] for r in skipped}
    assert len(by_isin) == len(skipped)
    assert set(by_isin) | {r["isin"] for r in pred} == expected["all"]
    assert not set(by_isin) & {r["isin"] for r in pred}
    for isin in expected["inactive"]:
        assert by_isin[isin].startswith("delisted: on ")
    for isin, reason in expected["reasons"].items():
        assert by_isin[isin] == reason
    for isin in expected["outside"]:
        assert by_isin[isin].startswith(("illiquid: median traded value",
                                         "below the price floor"))
    for isin in expected["inside_no_setup"]:
        assert by_isin[isin]  # the first VCP rule the stock fails

    rows = db_rows(paths["db"], "daily_predictions")
    assert len(rows) == len(pred)
    db_prob = {r["isin"]: r["probability"] for r in rows}
    for r in pred:
        assert db_prob[r["isin"]] == pytest.approx(float(r["probability"]), abs=1e-12)
    first = next(r for r in rows if r["rank"] == 1)
    assert first["isin"] == pred[0]["isin"] and first["prediction_date"] == day
    assert first["bse_code"] == pred[0]["bse_code"]
    runs = db_rows(paths["db"], "batch_runs")
    assert len(runs) == 1
    run = runs[0]
    assert run["status"] == "succeeded" and run["error"] is None
    assert (run["n_scored"], run["n_skipped"], run["n_universe"]) == (
        len(pred), len(skipped), len(expected["all"]))
    assert run["model_version"] == quick_model[0] and run["data_source"] == "simulated"
    assert {r["run_id"] for r in rows} == {run["run_id"]}
    stages = [run[f"seconds_{s}"] for s in ("model", "read", "features", "score", "write")]
    assert all(x > 0 for x in stages), stages
    assert sum(stages) == pytest.approx(run["seconds_total"]) and run["seconds_total"] < wall

    report = (out / f"report_{day}.txt").read_text()
    assert "SIMULATED" in report and "NOT real companies" in report
    assert quick_model[0] in report and run["run_id"] in report
    top = report.split("SETUPS BY PROBABILITY (top 25)")[1].split("NEAR-SETUPS")[0]
    assert len([ln for ln in top.splitlines() if ln.strip()]) == 1 + min(25, len(pred))
    assert "excluded: liquidity floor" in report and "tradeable universe" in report
    assert pred[0]["bse_code"] in top
    for level in ("HIGH", "MEDIUM", "LOW"):
        n = sum(r["confidence"] == level for r in pred)
        assert any(ln.split()[:2] == [level, f"{n:,}"] for ln in report.splitlines())
    assert "delisted" in report and "insufficient_history" in report
    for stage in ("model", "read", "features", "score"):
        assert f"\n  {stage} " in report
    assert f"scored {len(pred):,} VCP setups" in message(proc)

    page = (out / f"report_{day}.html").read_text()
    assert page.count('class="card setup"') == len(pred)
    assert page.count("data:image/png;base64,") >= min(len(pred), 25)
    assert "SIMULATED DATA" in page and "no previous run to compare with" in page


def test_a_second_run_for_the_same_date_keeps_one_row_per_stock(small_store, quick_model,
                                                                 paths, expected):
    first = run_batch(config_for(small_store, paths))
    second = run_batch(config_for(small_store, paths))
    assert first.prediction_date == second.prediction_date == expected["date"]
    rows = db_rows(paths["db"], "daily_predictions")
    assert len(rows) == len({r["isin"] for r in rows}) == len(expected["prob"])
    assert {r["run_id"] for r in rows} == {second.run_id}
    runs = db_rows(paths["db"], "batch_runs")
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    pred = [r for r in read_csv(second.files["predictions"]) if r["status"] == "setup"]
    assert len(pred) == len(expected["prob"])
    # The second run of the same date: nothing is new since the previous date (there is none).
    assert "no previous run to compare with" in second.files["html"].read_text()


def test_stocks_with_too_little_data_are_skipped_with_their_reasons(small_store, quick_model,
                                                                    paths):
    # Early in the store (206 sessions in) most stocks have barely enough history and
    # later listings have too little.
    day = small_store.calendar()[205].astype(object)
    result = run_batch(config_for(small_store, paths, date=day))
    skipped = read_csv(result.files["skipped"])
    short = [r for r in skipped if r["reason"].startswith("insufficient_history")]
    assert short, "expected stocks with too little history"
    for r in short:
        n = int(r["reason"].split(":")[1].split()[0])
        assert n < 200 and r["reason"].endswith("200 needed")
    kinds = {r["reason"].split(":")[0] for r in skipped}
    assert {"insufficient_history", "illiquid"} <= kinds
    assert result.n_scored + result.n_skipped == result.n_universe
    report = result.files["report"].read_text()
    assert f"insufficient_history {len(short):>7,}".replace(" ", "") in report.replace(" ", "")


def test_url_mode_gives_the_same_probabilities_as_in_process(small_store, quick_model, tmp_path,
                                                             expected):
    local = {"out": tmp_path / "local", "db": tmp_path / "local.db"}
    remote = {"out": tmp_path / "remote", "db": tmp_path / "remote.db"}
    in_process = run_batch(config_for(small_store, local))
    with running_server(small_store.path) as server:
        proc = cli(*args_for(small_store, remote, "--url", server.url, "--chunk-size", "64"))
    assert proc.returncode == 0, message(proc)
    a = {r["isin"]: r for r in read_csv(in_process.files["predictions"])
         if r["status"] == "setup"}
    b = {r["isin"]: r for r in read_csv(remote["out"] / f"predictions_{expected['date']}.csv")
         if r["status"] == "setup"}
    assert set(a) == set(b)
    for isin, row in a.items():
        assert abs(float(row["probability"]) - float(b[isin]["probability"])) <= 1e-6
        assert row["confidence"] == b[isin]["confidence"]
        assert b[isin]["model_version"] == quick_model[0]
    run = db_rows(remote["db"], "batch_runs")[0]
    assert run["status"] == "succeeded" and run["mode"] == server.url
    assert server.url in (remote["out"] / f"report_{expected['date']}.txt").read_text()


def _snapshot(paths) -> tuple[dict[str, bytes], list[dict]]:
    files = {p.name: p.read_bytes() for p in sorted(paths["out"].iterdir())}
    return files, db_rows(paths["db"], "daily_predictions")


def test_a_failure_while_writing_leaves_the_previous_outputs(small_store, quick_model, paths):
    good = run_batch(config_for(small_store, paths))
    before = _snapshot(paths)
    proc = cli(*args_for(small_store, paths), env={"VCP_BATCH_FAIL_AT": "write"})
    assert proc.returncode == 1
    assert "injected failure at write" in message(proc)
    assert _snapshot(paths) == before  # same files byte for byte, same rows (old run id)
    assert not [p for p in paths["out"].iterdir() if p.name.startswith(".")]
    runs = db_rows(paths["db"], "batch_runs")
    assert [r["status"] for r in runs] == ["succeeded", "failed"]
    assert runs[0]["run_id"] == good.run_id
    assert "injected failure" in runs[1]["error"]


def test_a_run_killed_while_writing_leaves_the_previous_outputs(small_store, quick_model, paths):
    run_batch(config_for(small_store, paths))
    before = _snapshot(paths)
    proc = cli(*args_for(small_store, paths), env={"VCP_BATCH_FAIL_AT": "write-kill"})
    assert proc.returncode == -9
    files, rows = _snapshot(paths)
    published = {k: v for k, v in files.items() if not k.startswith(".")}
    assert (published, rows) == before
    assert any(k.endswith(".batch-tmp") for k in files)  # the dead run's temp files
    assert [r["status"] for r in db_rows(paths["db"], "batch_runs")] == ["succeeded", "running"]

    after = run_batch(config_for(small_store, paths))  # the next run cleans up
    runs = db_rows(paths["db"], "batch_runs")
    assert [r["status"] for r in runs] == ["succeeded", "failed", "succeeded"]
    assert runs[1]["error"].startswith("interrupted")
    assert not [p for p in paths["out"].iterdir() if p.name.startswith(".")]
    assert {r["run_id"] for r in db_rows(paths["db"], "daily_predictions")} == {after.run_id}


def test_an_unknown_date_fails_with_a_message(small_store, quick_model, paths):
    proc = cli(*args_for(small_store, paths, "--date", "1999-01-04"))
    assert proc.returncode == 2
    text = message(proc)
    assert "no data for 1999-01-04: the store holds sessions from 2022-11-01 to 2026-10-30" \
        in text
    proc = cli(*args_for(small_store, paths, "--date", "2024-13-45"))
    assert proc.returncode == 2 and "not a date" in message(proc)
    assert not paths["out"].exists() or not list(paths["out"].iterdir())
    runs = db_rows(paths["db"], "batch_runs")
    assert [r["status"] for r in runs] == ["failed"]
    assert "no data for 1999-01-04" in runs[0]["error"]


def test_a_weekend_maps_to_the_session_before_and_says_so(small_store, quick_model, paths):
    proc = cli(*args_for(small_store, paths, "--date", "2025-06-07"))  # a Saturday
    assert proc.returncode == 0, message(proc)
    assert ("note: 2025-06-07 is not a trading session (weekend or holiday): as of the session "
            "before it, 2025-06-06") in message(proc)
    assert "2025-06-06 scored" in message(proc)
    assert [p.name for p in paths["out"].glob("predictions_*.csv")] == [
        "predictions_2025-06-06.csv"]
    assert {r["prediction_date"] for r in db_rows(paths["db"], "daily_predictions")} == {
        "2025-06-06"}


def test_an_unreachable_url_fails_with_a_message(small_store, quick_model, paths):
    url = f"http://127.0.0.1:{free_port()}"
    proc = cli(*args_for(small_store, paths, "--url", url), timeout=60)
    assert proc.returncode == 1
    assert f"cannot reach the scoring service at {url}" in message(proc)
    assert not paths["out"].exists() or not list(paths["out"].iterdir())
    assert db_rows(paths["db"], "daily_predictions") == []


def test_no_model_fails_with_a_message(small_store, paths, tmp_path):
    proc = cli(*args_for(small_store, paths), env={"BENTOML_HOME": str(tmp_path / "empty")})
    assert proc.returncode == 1
    assert "no model" in message(proc) and "vcp train" in message(proc)


def test_the_html_list_marks_setups_new_since_the_previous_run(small_store, quick_model,
                                                               paths):
    cal = [d.astype(object) for d in small_store.calendar()]
    before = run_batch(config_for(small_store, paths, date=cal[-2]))
    latest = run_batch(config_for(small_store, paths))
    old = {r["isin"] for r in read_csv(before.files["predictions"]) if r["status"] == "setup"}
    now = [r["isin"] for r in read_csv(latest.files["predictions"]) if r["status"] == "setup"]
    new = [isin for isin in now if isin not in old]
    page = latest.files["html"].read_text()
    assert f"{len(new)} new since the previous run" in page
    assert page.count('title="not a setup in the previous run">NEW') == len(new)
    for isin in now:  # each card says whether it is new
        card = page.split(f'data-isin="{isin}"')[1].split('<div class="card')[0]
        assert ('>NEW<' in card) == (isin in new)


# -- issue 17: a full disk, a read-only folder, a crash after the commit, a broken model -------
def _private_mounts(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`script` (sh) as root of its own mount namespace: what it mounts vanishes with it."""
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           script], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **QUIET})


def _can_mount(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        return _private_mounts(f"mount -t tmpfs -o size=64k tmpfs {probe}", 30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _after_a_failed_run(paths, before, day: str, cause: str) -> None:
    """Nothing of the failed run is published; its journal row is failed with `cause`."""
    assert _snapshot(paths) == before  # same files byte for byte, same rows
    assert not [p for p in paths["out"].iterdir() if p.name.startswith(".")]
    runs = db_rows(paths["db"], "batch_runs")
    assert [r["status"] for r in runs] == ["succeeded", "failed"]
    assert cause in runs[1]["error"], runs[1]["error"]
    assert db_rows(paths["db"], "pending_files") == []


def _a_long_previous_list(db: Path, rows: int = 20_000) -> None:
    """Give the last run's list many more rows (as a larger universe would): the next run for
    that date, which replaces them, writes far more than its journal row."""
    con = sqlite3.connect(db)
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(daily_predictions)")]
        first = dict(zip(cols, con.execute("SELECT * FROM daily_predictions").fetchone(),
                         strict=True))
        con.executemany(
            f"INSERT INTO daily_predictions ({', '.join(cols)}) VALUES "
            f"({', '.join('?' for _ in cols)})",
            [tuple({**first, "isin": f"INEZ{i:08d}", "rank": i}[c] for c in cols)
             for i in range(rows)])
        con.commit()
    finally:
        con.close()


def test_a_full_disk_at_commit_publishes_nothing(small_store, quick_model, paths, tmp_path):
    """The predictions database on a small tmpfs with room for the run's journal row but not
    its predictions: the commit fails, and no file moves (they used to be renamed first)."""
    if not _can_mount(tmp_path):
        pytest.skip("no private mount namespace here; test_an_injected_full_database_... "
                    "covers the same path")
    good = run_batch(config_for(small_store, paths))
    _a_long_previous_list(paths["db"])
    before = _snapshot(paths)
    disk, saved = tmp_path / "disk", tmp_path / "saved"
    disk.mkdir()
    saved.mkdir()
    args = " ".join(args_for(small_store, {**paths, "db": disk / "predictions.db"}))
    script = f"""
set -e
mount -t tmpfs -o size=16m tmpfs {disk}
cp {paths['db']} {disk}/predictions.db
free=$(df -k --output=avail {disk} | tail -1)
dd if=/dev/zero of={disk}/filler bs=1k count=$((free - 64)) 2>/dev/null
set +e
{sys.executable} -m vcp batch run {args}
echo $? > {saved}/rc
cp {disk}/predictions.db* {saved}/
"""
    proc = _private_mounts(script)
    assert (saved / "rc").read_text().strip() == "1", proc.stdout + proc.stderr
    assert "database or disk is full" in message(proc)
    assert "no transaction is active" not in message(proc)
    _after_a_failed_run({**paths, "db": saved / "predictions.db"}, before, good.prediction_date,
                        "database or disk is full")


def test_an_injected_full_database_publishes_nothing(small_store, quick_model, paths):
    """Where no tmpfs can be mounted: the database is capped at its size (SQLite's own
    max_page_count) and the transaction has one more megabyte to store, so it fails just
    before the commit as on a full disk, with SQLite's own error."""
    run_batch(config_for(small_store, paths))
    before = _snapshot(paths)
    proc = cli(*args_for(small_store, paths), env={"VCP_BATCH_FAIL_AT": "db-full"})
    assert proc.returncode == 1
    assert ("writing the predictions database failed: database or disk is full"
            in message(proc))
    _after_a_failed_run(paths, before, "", "database or disk is full")


def test_a_read_only_output_folder_is_blamed_not_the_database(small_store, quick_model, paths,
                                                              tmp_path):
    if not _can_mount(tmp_path):
        pytest.skip("no private mount namespace here (and root ignores file permissions)")
    paths["out"].mkdir()
    args = " ".join(args_for(small_store, paths))
    script = f"""
mount -t tmpfs -o ro,size=64k tmpfs {paths['out']}
{sys.executable} -m vcp batch run {args}
"""
    proc = _private_mounts(script)
    assert proc.returncode == 1, message(proc)
    assert "writing the outputs failed: [Errno 30] Read-only file system" in message(proc)
    assert "predictions database" not in message(proc)
    runs = db_rows(paths["db"], "batch_runs")
    assert [r["status"] for r in runs] == ["failed"]  # was left 'running'
    assert "Read-only file system" in runs[0]["error"]


def test_a_run_killed_after_its_commit_is_published_by_the_next(small_store, quick_model,
                                                                 paths):
    proc = cli(*args_for(small_store, paths), env={"VCP_BATCH_FAIL_AT": "publish-kill"})
    assert proc.returncode == -9
    runs = db_rows(paths["db"], "batch_runs")
    assert [r["status"] for r in runs] == ["succeeded"]  # committed
    assert not [p for p in paths["out"].iterdir() if not p.name.startswith(".")]
    pending = db_rows(paths["db"], "pending_files")
    assert pending and all(Path(p["tmp"]).exists() for p in pending)
    assert {Path(p["target"]).parent for p in pending} == {paths["out"]}
    second = run_batch(config_for(small_store, paths))  # replays the renames first
    assert db_rows(paths["db"], "pending_files") == []
    assert not [p for p in paths["out"].iterdir() if p.name.startswith(".")]
    assert {p.name for p in paths["out"].iterdir()} == {p.name for p in
                                                        second.files.values()}
    assert {Path(p["target"]).name for p in pending} == {p.name for p in second.files.values()}
    assert [r["status"] for r in db_rows(paths["db"], "batch_runs")] == ["succeeded"] * 2


def test_the_batch_scores_with_the_active_model_or_not_at_all(small_store, quick_model, paths):
    from tests.models import clone_model
    from training_artifacts import model_store

    bad = clone_model(quick_model[0], corrupt=True)
    model_store.write_active(bad)
    try:
        proc = cli(*args_for(small_store, paths))
        assert proc.returncode == 1  # was 0, scored with another model
        assert (f"the active model {bad} cannot be used: model {bad} cannot be loaded: its "
                "files are damaged or incomplete: XGBoostError. Promote a working version"
                in message(proc))
        assert not paths["out"].exists() or not list(paths["out"].iterdir())
        pinned = cli(*args_for(small_store, paths, "--model", quick_model[0]))
        assert pinned.returncode == 0, message(pinned)
        assert f"model {quick_model[0]}" in message(pinned)
    finally:
        model_store.write_active(quick_model[0])
        import bentoml

        bentoml.models.delete(f"vcp_breakout:{bad}")
