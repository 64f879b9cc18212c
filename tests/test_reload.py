"""Hot reload across workers under load, a corrupted model, and API keys: real servers."""

from __future__ import annotations

import threading
import time

import bentoml
import httpx
import pytest

from tests.models import clone_model
from tests.serverutil import running_server
from training_artifacts import model_store
from training_artifacts.train import TrainConfig, save, train


@pytest.fixture
def restore_active(quick_model):
    yield
    model_store.write_active(quick_model[0])


@pytest.fixture(scope="module")
def second_model(small_store):
    version, _ = save(train(small_store, TrainConfig.for_mode(quick=True, seed=2)))
    return version


def _setup_codes(store, n=20):
    """BSE codes of the stocks the model scores on the latest session (setups in the
    universe): their answers carry the serving model's version."""
    from tests.oracle import features_at

    latest = features_at(store)
    master = store.master()
    return [master.by_isin(isin).bse_code for isin in latest.isins[latest.candidate][:n]]


def test_hot_reload_under_load_reaches_every_worker(small_store, quick_model, second_model,
                                                    restore_active):
    first = quick_model[0]
    model_store.write_active(first)
    codes = _setup_codes(small_store)
    env = {"VCP_RUNNER_WORKERS": "2", "VCP_API_WORKERS": "2", "VCP_RATE_LIMIT": "0"}
    with running_server(small_store.path, env=env) as proc:
        url = proc.url
        seen: list[tuple[float, int, str | None]] = []
        stop = threading.Event()

        def client(k: int) -> None:
            with httpx.Client(timeout=30) as http:
                i = k
                while not stop.is_set():
                    r = http.post(f"{url}/api/v1/predict",
                                  json={"bse_code": codes[i % len(codes)]})
                    version = r.json().get("model_version") if r.status_code == 200 else None
                    seen.append((time.monotonic(), r.status_code, version))
                    i += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        reload = httpx.post(f"{url}/api/v1/models/reload", json={"version": second_model},
                            timeout=30)
        reloaded_at = time.monotonic()
        assert reload.status_code == 200, reload.text
        assert reload.json()["active"] == second_model and reload.json()["previous"] == first
        time.sleep(13)
        stop.set()
        for t in threads:
            t.join()
    assert len(seen) > 100
    assert all(status == 200 for _, status, _ in seen), {s for _, s, _ in seen}
    before = {v for t, _, v in seen if t < reloaded_at - 1}
    settled = [v for t, _, v in seen if t > reloaded_at + 10]
    assert before == {first}
    assert settled and set(settled) == {second_model}


def test_corrupted_model_keeps_previous_version_and_health_degrades(
        small_store, quick_model, restore_active):
    good = quick_model[0]
    model_store.write_active(good)
    bad = model_store.get_model(clone_model(good, corrupt=True))
    code = _setup_codes(small_store, 1)[0]
    try:
        with running_server(small_store.path) as proc:
            url = proc.url
            r = httpx.post(f"{url}/api/v1/models/reload", json={"version": bad.tag.version},
                           timeout=30)
            assert r.status_code == 422 and "could not be loaded" in r.json()["error"]
            # The kind of failure, not the server's paths or xgboost's native stack trace.
            assert r.json()["error"].endswith("its files are damaged or incomplete: "
                                              "XGBoostError")
            assert model_store.read_active() == good  # the pointer stays on the good one
            p = httpx.post(f"{url}/api/v1/predict", json={"bse_code": code}, timeout=30)
            assert p.status_code == 200 and p.json()["model_version"] == good
            health = httpx.get(f"{url}/api/v1/health", timeout=30).json()
            assert health["status"] == "ok" and health["active_model"] == good
        # A pointer naming it anyway (its files damaged after it was promoted): a restart
        # falls back to a version that loads, and health says why.
        model_store.write_active(bad.tag.version)
        with running_server(small_store.path) as proc:
            p = httpx.post(f"{proc.url}/api/v1/predict", json={"bse_code": code}, timeout=30)
            assert p.status_code == 200 and p.json()["model_version"] != bad.tag.version
            health = httpx.get(f"{proc.url}/api/v1/health").json()
            assert health["status"] == "degraded"
            reason = next(r for r in health["reasons"] if bad.tag.version in r)
            assert "/" not in reason and "Stack trace" not in reason
    finally:
        model_store.write_active(good)
        bentoml.models.delete(bad.tag)


def test_api_keys_and_admin_key_for_reload(small_store, quick_model, restore_active):
    model_store.write_active(quick_model[0])
    code = _setup_codes(small_store, 1)[0]
    env = {"VCP_API_KEYS": "user-key-1,user-key-2", "VCP_ADMIN_KEYS": "admin-key"}
    with running_server(small_store.path, env=env) as proc:
        url = proc.url

        def predict(key=None):
            headers = {"X-API-Key": key} if key else {}
            return httpx.post(f"{url}/api/v1/predict", json={"bse_code": code},
                              headers=headers, timeout=30)

        assert predict().status_code == 401
        assert predict("wrong").status_code == 401
        assert predict("user-key-2").status_code == 200
        assert predict("admin-key").status_code == 200
        reload_as_user = httpx.post(f"{url}/api/v1/models/reload", json={},
                                    headers={"X-API-Key": "user-key-1"}, timeout=30)
        assert reload_as_user.status_code == 403
        reload_as_admin = httpx.post(f"{url}/api/v1/models/reload", json={},
                                     headers={"X-API-Key": "admin-key"}, timeout=30)
        assert reload_as_admin.status_code == 200, reload_as_admin.text
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        assert "error" in predict().json()
