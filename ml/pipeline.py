"""Running the DVC training pipeline and asking whether it produced a champion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ml import tracking
from ml.errors import BadInputError, IrisError
from ml.model import resolve
from ml.settings import Settings


def has_champion(settings: Settings) -> bool:
    """True when ``settings.model_uri`` resolves in the registry now."""
    try:
        resolve(tracking.client(settings.mlflow_tracking_uri), settings.model_uri)
    except IrisError:
        return False
    return True


def run_pipeline(settings: Settings, *, force: bool = False) -> int:
    """``dvc repro`` with this interpreter's ``python`` first on PATH (the stages run ``python -m``)."""
    if not Path("dvc.yaml").exists():
        raise BadInputError("dvc.yaml not found in the current folder: run from the repository root.")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    dvc = Path(sys.executable).parent / "dvc"
    cmd = [str(dvc) if dvc.exists() else "dvc", "repro", *(["--force"] if force else [])]
    return subprocess.run(cmd, env=env, check=False).returncode
