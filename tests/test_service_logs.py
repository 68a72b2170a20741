"""Service logs hold our structured lines, not MLflow's download progress bars (issue 16, point
29). The service loads its model from a real ``mlflow server`` over HTTP, where MLflow draws a
"Downloading artifacts" bar per model unless told not to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import train_and_register
from test_rest_mlflow_parity import _start
from test_rest_serve import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _mlflow_server(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return _start(argv, env, tmp_path / "mlflow-server.log", port), f"http://127.0.0.1:{port}"


def test_the_rest_service_logs_no_progress_bars_loading_over_http(tmp_path: Path) -> None:
    server, uri = _mlflow_server(tmp_path)
    try:
        train_and_register(uri, classifier="logistic_regression", promote=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IRIS_", "MLFLOW_"))}
        env["MLFLOW_TRACKING_URI"] = uri
        port = free_port()
        log = tmp_path / "rest.log"
        rest = _start([sys.executable, "-m", "iris_scorer.cli", "serve", "--port", str(port)], env, log, port)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and rest.poll() is None:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
                time.sleep(0.2)
            assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200, log.read_text()
        finally:
            rest.terminate()
            rest.wait(15)
        text = log.read_text()
        assert "model_loaded" in text or "rest_started" in text, text[-2000:]
        assert "Downloading artifacts" not in text, text[-2000:]
        assert "feature names" not in text, text[-2000:]
    finally:
        server.terminate()
        server.wait(15)
