"""The committed dvc.lock matches the code and params it records: a fresh clone's `dvc status` is clean."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def test_every_tracked_dependency_in_dvc_lock_has_its_current_hash() -> None:
    lock = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))
    tracked, stale = _tracked(), []
    for stage, entry in lock["stages"].items():
        for dep in entry.get("deps", []):
            if dep["path"] not in tracked:
                continue  # a data file the pipeline makes; its hash is checked by `dvc repro` itself
            data = (REPO / dep["path"]).read_bytes()
            if hashlib.md5(data).hexdigest() != dep["md5"] or len(data) != dep["size"]:
                stale.append(f"{stage}: {dep['path']}")
    assert stale == [], f"dvc.lock is stale (run `dvc repro` and commit dvc.lock): {stale}"


def test_every_param_in_dvc_lock_has_its_current_value() -> None:
    lock = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    stale = [
        f"{stage}: {section}"
        for stage, entry in lock["stages"].items()
        for section, value in entry.get("params", {}).get("params.yaml", {}).items()
        if params.get(section) != value
    ]
    assert stale == [], f"dvc.lock records old params (run `dvc repro` and commit dvc.lock): {stale}"


def test_every_stage_in_dvc_yaml_is_locked_with_its_command() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    lock = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    assert {name: s["cmd"] for name, s in stages.items()} == {name: s["cmd"] for name, s in lock.items()}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()[2:]}


def _kernels() -> list[str]:
    """OpenBLAS kernels this CPU can run: Haswell (AVX2) always, SkylakeX where AVX-512 exists."""
    return ["Haswell", *(["SkylakeX"] if "avx512f" in _cpu_flags() else [])]


@pytest.mark.parametrize("kernel", _kernels())
def test_the_trained_model_bytes_do_not_depend_on_the_machines_blas_kernel(
    tmp_path: Path, kernel: str
) -> None:
    """OpenBLAS picks its kernels by CPU (Haswell on an AVX2 machine, SkylakeX where AVX-512
    exists), and the fitted floats differ in their last bits between them: a lock recorded on one
    machine was stale on the other. The train stage pins the kernel; here it runs as the stage does,
    in an environment that asks for each kernel this CPU has, and must give the locked bytes."""
    import shutil
    import sys

    lock = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["train"]
    work = tmp_path / "repo"
    shutil.copytree(REPO / "ml", work / "ml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "OPENBLAS_CORETYPE": kernel,
        "HOME": str(tmp_path),
    }
    prepare = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["prepare"]["cmd"]
    for cmd in (prepare, stage["cmd"]):
        result = subprocess.run(
            ["sh", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{cmd}: {result.stderr}"
    locked = {out["path"]: out["md5"] for out in lock["train"]["outs"]}
    made = hashlib.md5((work / "data/model/model.pkl").read_bytes()).hexdigest()
    assert made == locked["data/model/model.pkl"], f"OPENBLAS_CORETYPE={kernel} changed the model's bytes"
