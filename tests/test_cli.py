"""The command line: `models show` defaults to the active model; progress ends before messages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import bentoml

from tests.models import clone_model
from tests.serverutil import ROOT
from training_artifacts import model_store


def vcp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vcp", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=120)


def test_models_show_defaults_to_the_active_model(quick_model):
    newer = clone_model(quick_model[0])  # newest in the store, not active
    try:
        model_store.write_active(quick_model[0])
        shown = json.loads(vcp("models", "show").stdout)
        assert shown["tag"] == f"vcp_breakout:{quick_model[0]}" and shown["active"] is True
        latest = json.loads(vcp("models", "show", "latest").stdout)
        assert latest["tag"] == f"vcp_breakout:{newer}" and latest["active"] is False
    finally:
        model_store.write_active(quick_model[0])
        bentoml.models.delete(f"vcp_breakout:{newer}")


ERROR = "error: model version 'zzz' not found; see `models list`"


def test_an_error_is_printed_after_the_progress_bar_is_gone(small_store, quick_model,
                                                             tmp_path):
    args = ("batch", "run", "--model", "zzz", "--market-db", str(small_store.path),
            "--out", str(tmp_path / "out"), "--db", str(tmp_path / "p.db"))
    # A log file (no terminal): no spinner frame at all, only the message.
    logged = vcp(*args, env={"TERM": "dumb"})
    assert logged.returncode == 2
    assert logged.stderr == ERROR + "\n"
    # A terminal: once the live display stops, its line is erased before the message.
    shown = vcp(*args, env={"COLUMNS": "120", "TERM": "xterm", "FORCE_COLOR": "1"})
    assert shown.returncode == 2
    after = shown.stderr.rsplit("\x1b[?25h", 1)[1]  # the cursor back: the display stopped
    assert after.startswith("\n\x1b[1A\x1b[2K"), repr(after)
    assert re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", after).strip() == ERROR


# -- issue 17: bad input and a store with bad folders never give a traceback -------------------
def test_promote_refuses_what_is_not_a_version(quick_model):
    model_store.write_active(quick_model[0])
    for bad in ("", "../x", "a b"):
        proc = vcp("models", "promote", bad, env={"COLUMNS": "200"})
        assert proc.returncode == 2, (bad, proc.stdout, proc.stderr)  # '' used to promote
        assert f"error: {bad!r} is not a model version" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert model_store.read_active() == quick_model[0]


def test_a_model_that_does_not_load_is_not_promoted(quick_model):
    model_store.write_active(quick_model[0])
    bad = clone_model(quick_model[0], corrupt=True)
    try:
        proc = vcp("models", "promote", bad, env={"COLUMNS": "300"})
        assert proc.returncode == 1
        assert (f"refusing to promote vcp_breakout:{bad}: it cannot be loaded (its files are "
                "damaged or incomplete: XGBoostError); the active model is unchanged"
                in " ".join(proc.stderr.split()))
        assert model_store.read_active() == quick_model[0]
        # A pointer naming it anyway (files damaged after promotion): `models list` says so.
        model_store.write_active(bad)
        listing = vcp("models", "list", env={"COLUMNS": "300"})
        assert listing.returncode == 0
        assert f"* {bad}" in listing.stdout
        assert (f"warning: the active pointer names {bad}, which cannot be served"
                in listing.stderr)
    finally:
        model_store.write_active(quick_model[0])
        bentoml.models.delete(f"vcp_breakout:{bad}")


def test_models_list_skips_and_marks_unreadable_folders(quick_model):
    folder = model_store.versions_dir() / "zzzempty"
    folder.mkdir()
    try:
        proc = vcp("models", "list", env={"COLUMNS": "300"})
        assert proc.returncode == 0, proc.stderr  # was 1, with a BentoML traceback
        assert f"* {quick_model[0]}" in proc.stdout
        assert ("! zzzempty  unreadable, skipped: model version 'zzzempty' cannot be read "
                "from the store" in proc.stdout)
        shown = vcp("models", "show", "zzzempty")
        assert shown.returncode == 1 and "cannot be read from the store" in shown.stderr
    finally:
        folder.rmdir()


def test_batch_model_option_that_is_not_a_version_is_exit_2(small_store, tmp_path):
    proc = vcp("batch", "run", "--model", "../x", "--market-db", str(small_store.path),
               "--out", str(tmp_path / "out"), "--db", str(tmp_path / "p.db"),
               env={"TERM": "dumb", "COLUMNS": "200"})
    assert proc.returncode == 2  # was 1, with a traceback
    assert proc.stderr.startswith("error: --model: '../x' is not a model version")
    assert "Traceback" not in proc.stderr
