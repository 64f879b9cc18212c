"""Start a real `bentoml serve` subprocess on a free port for integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(market_db: Path, env: dict[str, str] | None = None, timeout: float = 90,
                   source: Path = ROOT):
    """Yield the server process (its `url`, its `log_path`) on the given store, serving the
    checkout `source`; stop it afterwards."""
    port = free_port()
    full_env = {**os.environ, "VCP_MARKET_DB": str(market_db), **(env or {})}
    log = open(Path(os.environ["VCP_DATA_DIR"]).parent / f"server-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "service:VcpApi", "--port", str(port),
         "--host", "127.0.0.1"],
        cwd=source, env=full_env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early; see {log.name}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {timeout} s; see {log.name}")
            time.sleep(0.3)
        proc.url = url  # type: ignore[attr-defined]
        proc.log_path = Path(log.name)  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def api_worker_rss_mb(proc: subprocess.Popen) -> float:
    """Resident memory (MB) of the server's API worker processes (not the model runner)."""
    import psutil

    total = 0.0
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "--service-name vcp_api" in " ".join(child.cmdline()):
                total += child.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return total
