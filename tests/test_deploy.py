"""`bentoml build` of bentofile.yaml packs the service code, the active model and a Dockerfile.

Built into the test model store (conftest's temporary BENTOML_HOME) with the quick model. No
Docker engine is needed: the generated Dockerfile is checked as text.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bento(quick_model, tmp_path_factory) -> Path:
    from training_artifacts.model_store import active_or_latest

    version = quick_model[0]
    active = active_or_latest().tag
    assert active.version == version
    # What `make build` does: pack the active version rather than the newest.
    spec = (ROOT / "bentofile.yaml").read_text().replace("vcp_breakout:latest", str(active))
    bentofile = tmp_path_factory.mktemp("build") / "bentofile.yaml"
    bentofile.write_text(spec)
    out = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "-f", str(bentofile), "-o", "tag", "."],
        cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    tag = out.stdout.strip().splitlines()[-1].split("__tag__:")[-1].strip()
    name, bento_version = tag.split(":")
    path = Path(os.environ["BENTOML_HOME"]) / "bentos" / name / bento_version
    assert path.is_dir(), (tag, out.stdout)
    return path


def test_bento_holds_the_service_code(bento):
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "service:VcpApi"
    assert info["name"] == "vcp_api"
    src = bento / "src"
    for rel in ("service.py", "serving/api.py", "serving/ratelimit.py", "serving/http.py",
                "serving/bentoml_workarounds.py", "inference/registry.py",
                "inference/snapshot.py", "market/store.py", "features/vector.py",
                "training_artifacts/model_store.py", "vcp/settings.py", "batch/__init__.py",
                "serving/docs.py", "inference/charts.py", "pyproject.toml"):
        assert (src / rel).is_file(), rel
    for unwanted in ("data", "tests", ".venv", "loadtests", "benchmarks"):
        assert not (src / unwanted).exists(), unwanted
    assert not list(src.rglob("*.duckdb")) and not list(src.rglob("__pycache__"))


def test_bento_packs_the_active_model(bento, quick_model, tmp_path):
    """BentoML 1.4 keeps the model in the store, referenced by tag in bento.yaml, and copies it
    into the exported archive and the `containerize` build context (under models/)."""
    import tarfile

    import bentoml

    info = yaml.safe_load((bento / "bento.yaml").read_text())
    version = quick_model[0]
    assert [m["tag"] for m in info["models"]] == [f"vcp_breakout:{version}"]
    archive = tmp_path / "vcp_api.bento"
    bentoml.bentos.export_bento(f"vcp_api:{bento.name}", str(archive))
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        model_yaml = next(n for n in names
                          if n.endswith(f"models/vcp_breakout/{version}/model.yaml"))
        meta = yaml.safe_load(tar.extractfile(model_yaml).read())
    assert any(n.endswith("env/docker/Dockerfile") for n in names)
    assert any(n.endswith("src/service.py") for n in names)
    from features import FEATURES

    assert meta["metadata"]["features"] == FEATURES


def test_bento_requirements_and_dockerfile(bento):
    reqs = (bento / "env" / "python" / "requirements.txt").read_text()
    for pkg in ("bentoml", "xgboost-cpu", "fastapi", "duckdb", "scikit-learn"):
        assert pkg in reqs, pkg
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "python:3.11-slim" in dockerfile
    assert "libgomp1" in dockerfile
    for env in ("BENTOML_DO_NOT_TRACK=true", "VCP_DATA_DIR=/data", "VCP_RATE_LIMIT=100"):
        name, value = env.split("=")
        assert f"ARG {name}={value}" in dockerfile or f"ENV {env}" in dockerfile, env
    assert "EXPOSE 3000" in dockerfile
    assert (bento / "env" / "docker" / "entrypoint.sh").is_file()
