"""The real DVC pipeline in a scratch git clone of the repository's pipeline files (issue 16,
points 16-21): a fresh clone's run leaves git clean, a second run is a no-op, one param re-runs
only what depends on it, ``dvc metrics diff HEAD`` compares with the commit, ``dvc exp run -S``
and ``dvc exp show`` work, ``dvc plots show`` renders offline, a tie does not move the alias, and
a bad param fails its stage leaving the registry as it was."""

from __future__ import annotations

import json
import os
import re
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
#: What a clone holds of the pipeline: code, params, the lock, and the git-tracked evaluation.
PIPELINE_FILES = ("dvc.yaml", "dvc.lock", "params.yaml", ".gitignore", ".dvcignore")


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    return env


def _dvc(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    dvc = str(Path(sys.executable).parent / "dvc")
    return subprocess.run(
        [dvc, *args], cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=timeout
    )


def _git(workdir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def _client(workdir: Path):  # type: ignore[no-untyped-def]
    return tracking.client(f"sqlite:///{workdir / 'mlflow.db'}")


def _set_param(workdir: Path, key: str, value: object) -> None:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository holding the pipeline as committed: a fresh clone."""
    root = tmp_path_factory.mktemp("pipeline")
    for name in PIPELINE_FILES:
        if (REPO / name).exists():
            shutil.copy(REPO / name, root / name)
    for folder in ("ml", "evaluation", ".dvc"):
        shutil.copytree(
            REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache")
        )
    (root / ".cache").symlink_to(REPO / ".cache")  # the vega assets of `make plots-assets`
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "clone")
    return root


def test_a_fresh_clone_trains_registers_and_leaves_git_clean(workdir: Path) -> None:
    result = _dvc(workdir, "repro")
    assert result.returncode == 0, result.stdout + result.stderr
    # the data files are not in git: their stages run; evaluation/ is, and register's deps are as locked
    assert _ran(result.stdout) == ["prepare", "train"], result.stdout
    assert _git(workdir, "status", "--porcelain") == "", "the committed dvc.lock and evaluation/ are current"
    # the registry is empty in a fresh clone: `iris-scorer train` re-runs with --force, as here
    forced = _dvc(workdir, "repro", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert current_alias_version(_client(workdir), "iris-classifier", "champion") == "1"
    assert _git(workdir, "status", "--porcelain") == "", "outputs are deterministic: no run id in them"
    metrics = json.loads((workdir / "evaluation/metrics.json").read_text())
    assert metrics["f1_macro"] >= 0.9


def test_second_run_is_a_no_op(workdir: Path) -> None:
    result = _dvc(workdir, "repro")
    assert result.returncode == 0, result.stderr
    assert _ran(result.stdout) == []


def test_a_param_reruns_only_its_stages_and_metrics_diff_compares_with_head(workdir: Path) -> None:
    _set_param(workdir, "train.hyperparameters.C", 0.05)
    result = _dvc(workdir, "repro")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _ran(result.stdout) == ["train", "evaluate", "register"]
    assert len(_client(workdir).search_model_versions("name='iris-classifier'")) == 2
    diff = _dvc(workdir, "metrics", "diff", "HEAD", "--json")
    assert diff.returncode == 0 and "failed to load" not in diff.stderr, diff.stderr
    changes = json.loads(diff.stdout)["evaluation/metrics.json"]
    assert set(changes) >= {"accuracy", "f1_macro"} and all(
        "old" in v and "new" in v for v in changes.values()
    )


def test_reverting_a_param_registers_a_tie_that_does_not_move_the_alias(workdir: Path) -> None:
    client = _client(workdir)
    champion = current_alias_version(client, "iris-classifier", "champion")
    _git(workdir, "checkout", "--", "params.yaml")  # back to the committed C: the same model as v1
    result = _dvc(workdir, "repro")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ties champion" in result.stdout or "worse than champion" in result.stdout, result.stdout
    assert current_alias_version(client, "iris-classifier", "champion") == champion


def test_dvc_exp_run_with_a_param_and_exp_show_lists_it(workdir: Path) -> None:
    run = _dvc(workdir, "exp", "run", "-n", "c-half", "-S", "train.hyperparameters.C=0.5", timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    show = _dvc(workdir, "exp", "show", "--json")
    assert show.returncode == 0, show.stderr
    rows = json.loads(show.stdout)
    names = [e.get("name") for row in rows for e in (row.get("experiments") or [])]
    assert "c-half" in names, show.stdout[:2000]
    table = _dvc(workdir, "exp", "show", "--csv")
    assert "c-half" in table.stdout and "workspace" in table.stdout
    _git(workdir, "checkout", "--", ".")


def test_dvc_plots_show_renders_offline(workdir: Path, tmp_path: Path) -> None:
    assert (REPO / ".cache/vega/vega-embed.min.js").exists(), "run `make plots-assets` (make test does)"
    shown = _dvc(workdir, "plots", "show")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    page = (workdir / "dvc_plots" / "index.html").read_text()
    loads = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert loads and not [u for u in loads if "://" in u], loads  # nothing from a CDN
    assert any(u.endswith("confusion_matrix.png") for u in loads)  # the image plot is declared too
    assert "dvc_plots" in (workdir / ".gitignore").read_text()
    from test_rest_docs import headless

    dom = headless(
        f"file://{workdir / 'dvc_plots' / 'index.html'}",
        tmp_path,
        "--allow-file-access-from-files",
        "--dump-dom",
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'class="vega-embed' in dom.stdout and ("<canvas" in dom.stdout or "<svg" in dom.stdout), (
        dom.stdout[:3000]
    )


def test_bad_param_fails_the_stage_and_leaves_the_registry(workdir: Path) -> None:
    client = _client(workdir)
    before = current_alias_version(client, "iris-classifier", "champion")
    versions = len(client.search_model_versions("name='iris-classifier'"))
    _set_param(workdir, "train.classifier", "svm")
    result = _dvc(workdir, "repro")
    assert result.returncode != 0
    assert "train.classifier" in result.stderr
    assert current_alias_version(client, "iris-classifier", "champion") == before
    assert len(client.search_model_versions("name='iris-classifier'")) == versions
    _git(workdir, "checkout", "--", "params.yaml")
