"""The pinned Evidently/pandas pair works as installed: a tripwire for upgrades (issue 13.7, 16.11).

Evidently 0.7.23 imports ``pandas.core.dtypes.common.infer_dtype_from_object``, which pandas 3
removed, so ``requirements.in`` keeps pandas 2. No shim patches pandas: if an upgrade of either
side breaks Evidently's import, its UI or its CLI, these tests fail instead of ``evidently ui``.
"""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
EVIDENTLY_CLI = Path(sys.executable).parent / "evidently"


def _lock_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, pinned = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = pinned.strip()
    return pins


def test_installed_pair_is_the_locked_pair() -> None:
    pins = _lock_pins()
    assert (version("evidently"), version("pandas")) == (pins["evidently"], pins["pandas"])


def test_lock_satisfies_the_pandas_constraint_of_requirements_in() -> None:
    # requirements.in states why pandas is held back; the lock must honour it.
    lines = (ROOT / "requirements.in").read_text(encoding="utf-8").splitlines()
    pandas_req = next(
        Requirement(line) for line in lines if line.startswith("pandas") and "stubs" not in line
    )
    assert pandas_req.specifier, "requirements.in must bound pandas while Evidently needs pandas 2"
    assert pandas_req.specifier.contains(_lock_pins()["pandas"])


@pytest.mark.parametrize(
    "module",
    [
        "evidently.presets",  # DataDriftPreset, what ml.drift runs
        "evidently.ui.workspace",  # the workspace ml.drift_reports files snapshots in
        "evidently.ui.service.app",  # the `evidently ui` application
        "evidently.cli.ui",  # the `evidently ui` command
        "evidently.legacy.tests.data_integrity_tests",  # the import that pandas 3 broke
    ],
)
def test_evidently_module_imports_without_a_pandas_shim(module: str) -> None:
    with warnings.catch_warnings():
        # Deprecation noise of Evidently's own dependencies (litestar, plotly), as in ml.drift;
        # what this test is for is an ImportError.
        warnings.simplefilter("ignore")
        importlib.import_module(module)


def test_evidently_ui_help_runs_from_the_venv(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(EVIDENTLY_CLI), "ui", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert "--workspace" in done.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_evidently_ui_serves_a_workspace(tmp_path: Path) -> None:
    workspace, port = tmp_path / "workspace", _free_port()
    workspace.mkdir()
    log = (tmp_path / "ui.log").open("w")
    server = subprocess.Popen(
        [str(EVIDENTLY_CLI), "ui", "--workspace", str(workspace), "--port", str(port)],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert status == 200, f"evidently ui gave {status}: {(tmp_path / 'ui.log').read_text()}"
        projects = httpx.get(f"http://127.0.0.1:{port}/api/projects", timeout=5)
        assert projects.status_code == 200 and projects.json() == []
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
