"""The start-up scenario: whole commands timed by hyperfine (Debian's ``hyperfine``), not by us.

- ``iris-scorer --help``;
- ``iris-scorer backfill`` on a 1,000-row CSV, *warm* (the version's verified NumPy form is in
  ``IRIS_MODEL_CACHE_DIR``, :mod:`ml.model_cache`; the alias is still resolved on every start) and
  *cold* (hyperfine's ``--prepare`` empties the cache before each run: a fresh pod or machine);
- E: ``mlflow models predict`` on the same rows, the same-run baseline.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import Goal, ScenarioResult
from bench.registry import BenchRegistry
from bench.scenarios import iris_scorer, mlflow_cli, write_inputs

ROWS = 1000


def hyperfine(
    commands: dict[str, str], env: dict[str, str], runs: int, prepare: dict[str, str]
) -> dict[str, Any]:
    """``hyperfine --export-json`` over ``commands`` (name -> shell command): name -> result."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        args = [
            "hyperfine",
            "--style",
            "none",
            "--warmup",
            "1",
            "--runs",
            str(runs),
            "--export-json",
            out.name,
        ]
        for name, command in commands.items():
            if name in prepare:
                args += ["--prepare", prepare[name]]
            else:
                args += ["--prepare", "true"]
            args += ["--command-name", name, command]
        subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, timeout=1800)
        results = json.loads(Path(out.name).read_text())["results"]
    return {r["command"]: r for r in results}


def startup(mode: Any, registry: BenchRegistry) -> ScenarioResult:
    result = ScenarioResult(
        "startup",
        f"Whole commands timed by hyperfine (1 warm-up, then {max(mode.repeats, 5)} runs each): "
        "`iris-scorer --help`; `iris-scorer backfill` on a "
        f"{ROWS:,}-row CSV with the version's verified NumPy form cached (warm) and with the cache "
        "emptied before every run (cold: a fresh pod); E = `mlflow models predict` on the same rows.",
        params={"rows": ROWS, "runs": max(mode.repeats, 5)},
    )
    result.columns = ["mean_s", "median_s", "stddev_s", "user_s", "system_s"]
    result.goals = [
        Goal("`iris-scorer --help` <= 0.25 s", "mean_s", "<=", 0.25, "help"),
        Goal("backfill 1k rows, warm, <= 1.2 s", "mean_s", "<=", 1.2, "backfill_1k_warm"),
        Goal("backfill 1k rows, warm: ours/E <= 0.5", "mean_s", "<=", 0.5, "backfill_1k_warm", "E_mlflow_1k"),
    ]
    if shutil.which("hyperfine") is None:
        for name in ("help", "backfill_1k_warm", "backfill_1k_cold", "E_mlflow_1k"):
            result.skip(name, "hyperfine is not installed (Debian package hyperfine; `make system-deps`)")
        return result
    work = Path(tempfile.mkdtemp(prefix="iris-bench-startup-"))
    try:
        inputs = write_inputs(work, ROWS)
        cache = work / "model-cache"
        env = registry.env() | {"IRIS_MODEL_CACHE_DIR": str(cache)}
        scorer = iris_scorer()
        backfill = f"{scorer} backfill --input {inputs['csv']} --output {work / 'out.parquet'}"
        commands = {
            "help": f"{scorer} --help",
            "backfill_1k_warm": backfill,
            "backfill_1k_cold": backfill,
            "E_mlflow_1k": (
                f"{mlflow_cli()} models predict -m {registry.version_uri} -i {inputs['features_csv']} "
                f"-o {work / 'e.json'} -t csv --env-manager local"
            ),
        }
        found = hyperfine(commands, env, max(mode.repeats, 5), {"backfill_1k_cold": f"rm -rf {cache}"})
        for name, r in found.items():
            sample = {
                "mean_s": r["mean"],
                "median_s": r["median"],
                "stddev_s": r["stddev"] or 0.0,
                "user_s": r["user"],
                "system_s": r["system"],
            }
            result.add(name, sample)
            print(f"  startup {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in sample.items()), flush=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        result.notes.append(f"hyperfine failed: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result
