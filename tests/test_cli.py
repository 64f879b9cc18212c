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
