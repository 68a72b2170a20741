"""The committed dvc.lock matches the code and params it records: a fresh clone's `dvc status` is clean."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

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
