"""The real DVC pipeline in a scratch copy of the repository: full run, no-op, partial re-run, bad params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ml import tracking
from ml.register import current_alias_version

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _repro(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    dvc = str(Path(sys.executable).parent / "dvc")
    return subprocess.run(
        [dvc, "repro", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "ml", root / "ml", ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def test_full_run_registers_a_champion(workdir: Path) -> None:
    result = _repro(workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _ran(result.stdout) == ["prepare", "train", "evaluate", "register"]
    assert (workdir / "dvc.lock").exists()
    client = tracking.client(f"sqlite:///{workdir / 'mlflow.db'}")
    assert current_alias_version(client, "iris-classifier", "champion") == "1"
    metrics = yaml.safe_load((workdir / "data/evaluation/metrics.json").read_text())
    assert metrics["f1_macro"] >= 0.9


def test_second_run_is_a_no_op(workdir: Path) -> None:
    result = _repro(workdir)
    assert result.returncode == 0, result.stderr
    assert _ran(result.stdout) == []


def test_changing_a_train_param_reruns_only_dependent_stages(workdir: Path) -> None:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["hyperparameters"]["logistic_regression"]["C"] = 2.0
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    result = _repro(workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _ran(result.stdout) == ["train", "evaluate", "register"]
    client = tracking.client(f"sqlite:///{workdir / 'mlflow.db'}")
    assert len(client.search_model_versions("name='iris-classifier'")) == 2


def test_bad_param_fails_the_stage_and_leaves_the_registry(workdir: Path) -> None:
    client = tracking.client(f"sqlite:///{workdir / 'mlflow.db'}")
    before = current_alias_version(client, "iris-classifier", "champion")
    versions = len(client.search_model_versions("name='iris-classifier'"))
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["classifier"] = "svm"
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    result = _repro(workdir)
    assert result.returncode != 0
    assert "train.classifier" in result.stderr
    assert current_alias_version(client, "iris-classifier", "champion") == before
    assert len(client.search_model_versions("name='iris-classifier'")) == versions
