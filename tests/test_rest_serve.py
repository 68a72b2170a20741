"""`iris-scorer serve` as a real process: uvicorn up without a registry, structured logs, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SECRET = "serve-test-secret-key"
GOOD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli() -> list[str]:
    return [sys.executable, "-m", "iris_scorer.cli"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    port, dead = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{dead}",  # registry down: must stay up, not ready
        "IRIS_API_KEY": SECRET,
        "IRIS_MODEL_POLL_SECONDS": "0.5",
    }
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [*cli(), "serve", "--port", str(port)],
            env=env,
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            text=True,
        )
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        else:
            raise AssertionError(f"serve never answered /health:\n{log.read_text()}")
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_serve_stays_up_without_registry_and_stops_cleanly(
    server: tuple[subprocess.Popen[str], int, Path],
) -> None:
    proc, port, log = server
    base = f"http://127.0.0.1:{port}"
    ready = httpx.get(f"{base}/ready", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["error"] == "model_not_ready"
    auth = {"authorization": f"Bearer {SECRET}"}
    assert httpx.post(f"{base}/predict", json=GOOD, headers=auth, timeout=5).status_code == 503
    assert httpx.post(f"{base}/predict", json=GOOD, timeout=5).status_code == 401
    assert "iris_http_requests_total" in httpx.get(f"{base}/metrics", timeout=5).text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    text = log.read_text()
    assert "event=http_request" in text and "route=/predict" in text and "status=401" in text
    assert "event=rest_stopped" in text
    assert SECRET not in text
    assert '"POST /predict HTTP/1.1"' not in text  # uvicorn's own access log is off


def test_serve_refuses_a_malformed_model_uri() -> None:
    env = {**os.environ, "IRIS_MODEL_URI": "runs:/abc/model"}
    result = subprocess.run(
        [*cli(), "serve", "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "IRIS_MODEL_URI" in result.stderr
