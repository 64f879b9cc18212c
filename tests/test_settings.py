"""The one settings object: defaults, parsing, and a bad value stopping every entry point with
a message that names the variable and what it accepts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serverutil import ROOT, free_port
from vcp.settings import Settings, SettingsError, load_settings

VCP_VARS = [k for k in os.environ if k.startswith("VCP_")]


@pytest.fixture()
def clean_env(monkeypatch, tmp_path):
    for k in VCP_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    monkeypatch.setenv("VCP_DATA_DIR", str(tmp_path))
    return tmp_path


def test_defaults_and_derived_paths(clean_env):
    s = load_settings()
    assert s.market_db_path == clean_env / "market.duckdb"
    assert s.predictions_db_path == clean_env / "predictions.db"
    assert s.outputs_dir == clean_env / "outputs"
    assert s.model_store_dir == clean_env / "bentoml"
    assert (s.max_batch_size, s.max_latency_ms, s.api_workers, s.rate_limit,
            s.rate_burst_total, s.stale_after_sessions, s.access_log) == (
        512, 1000, 1, 100, 200, 3, False)


def test_values_from_the_environment(clean_env, monkeypatch):
    monkeypatch.setenv("VCP_API_KEYS", " a, b,,c ")
    monkeypatch.setenv("VCP_ACCESS_LOG", "on")
    monkeypatch.setenv("VCP_RATE_LIMIT", "10")
    monkeypatch.setenv("VCP_MARKET_DB", "")  # empty counts as unset
    monkeypatch.setenv("BENTOML_HOME", str(clean_env / "models"))
    s = load_settings()
    assert s.api_keys == ("a", "b", "c") and s.access_log is True
    assert s.rate_burst_total == 20 and s.market_db_path == clean_env / "market.duckdb"
    assert s.model_store_dir == clean_env / "models"
    for off in ("off", "0", "no", "FALSE"):
        monkeypatch.setenv("VCP_ACCESS_LOG", off)
        assert load_settings().access_log is False


@pytest.mark.parametrize(("var", "value", "accepted"), [
    ("VCP_MAX_BATCH_SIZE", "abc", "a whole number >= 1"),
    ("VCP_MAX_BATCH_SIZE", "0", "a whole number >= 1"),
    ("VCP_ACCESS_LOG", "maybe", "true/false, yes/no, on/off or 1/0"),
    ("VCP_RATE_LIMIT", "fast", "requests/s >= 0"),
    ("VCP_REFRESH_SECONDS", "-1", "a number of seconds > 0"),
    ("VCP_BATCH_FAIL_AT", "read", "'write', 'write-kill', 'publish-kill' or 'db-full'"),
    ("VCP_MAX_BODY_BYTES", "100", "a whole number of bytes >= 1024"),
    ("VCP_TRUSTED_PROXIES", "10.0.0.1,proxy", "comma-separated addresses or networks"),
    ("VCP_AUTH_FAILURES_PER_MINUTE", "-1", "wrong keys per minute per address >= 0"),
    ("VCP_HEADER_TIMEOUT_SECONDS", "0", "a number of seconds > 0"),
    ("VCP_DATE_CONCURRENCY", "0", "a whole number >= 1"),
    ("VCP_DATE_CACHE_MB", "lots", "megabytes >= 0"),
])
def test_a_bad_value_names_the_variable_and_what_it_accepts(clean_env, monkeypatch, var,
                                                           value, accepted):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert f"{var}={value!r}: " in str(info.value)
    assert f"(accepted: {accepted}" in str(info.value)


def test_the_hardening_defaults(clean_env):
    s = load_settings()
    assert (s.max_body_bytes, s.metrics_key, s.trusted_proxies, s.auth_failures_per_minute,
            s.header_timeout_seconds, s.date_concurrency, s.date_wait_seconds,
            s.date_cache_mb) == (2 * 2**20, None, (), 30, 10, 1, 2, 512)


def test_values_that_only_conflict_together(clean_env, monkeypatch):
    monkeypatch.setenv("VCP_DRAIN_MIN_SECONDS", "40")
    with pytest.raises(SettingsError, match=r"VCP_DRAIN_MIN_SECONDS \(40\) must not exceed "
                                            r"VCP_DRAIN_MAX_SECONDS \(30\)"):
        load_settings()


def test_every_field_documents_what_it_accepts():
    assert all(f.description for f in Settings.model_fields.values())


def _run(cmd: list[str], env: dict[str, str], timeout: float = 60):
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)


def test_the_cli_stops_with_the_message_not_a_traceback():
    proc = _run([sys.executable, "-m", "vcp", "data", "info"], {"VCP_MAX_BATCH_SIZE": "abc"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: invalid settings: VCP_MAX_BATCH_SIZE='abc'")
    assert "Traceback" not in proc.stderr


def test_bentoml_serve_stops_with_the_message_before_starting(small_store):
    bentoml = str(Path(sys.executable).parent / "bentoml")
    proc = _run([bentoml, "serve", "service:VcpApi", "--port", str(free_port())],
                {"VCP_ACCESS_LOG": "sometimes", "VCP_MARKET_DB": str(small_store.path)})
    assert proc.returncode == 2
    assert "invalid settings: VCP_ACCESS_LOG='sometimes'" in proc.stderr
    assert "Traceback" not in proc.stderr
