"""The REST scenario: wrk against our service, the bare-Starlette floor and the baselines A and B.

Every system is one process on the same machine, started the same way and driven by wrk
(:mod:`bench.wrk`, a C load generator) in rounds interleaved ABAB. The floor is the cost of the
framework itself (``bench/baselines/starlette_floor.py``: read the body, orjson-decode it, answer
a constant); ours is measured in its default configuration and once more with every request
access-logged (``IRIS_ACCESS_LOG=all``), so the log's price stays visible.

Why wrk and not the aiohttp generator this scenario used before: on 2 cores that generator
topped out at 12.4k req/s by its own measurement, so it under-reported any server above about
5k; wrk drives the floor to about 20k req/s here from its two threads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bench import wrk
from bench.harness import (
    PYTHON,
    VENV_BIN,
    Goal,
    Proc,
    ScenarioResult,
    Skip,
    free_port,
    interleave,
    start,
    stop,
    wait_http,
)
from bench.registry import BenchRegistry

RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
FLOOR = "floor_starlette"
OURS = "ours"


@dataclass
class RestSystem:
    name: str
    cmd: list[str]
    path: str
    ready_path: str
    body: dict[str, Any]
    env: dict[str, str]
    port: int = 0
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def systems(registry: BenchRegistry) -> list[RestSystem]:
    env = registry.env()
    default = {k: v for k, v in env.items() if k != "IRIS_LOG_LEVEL"}  # our defaults, as shipped
    scorer, mlflow = str(VENV_BIN / "iris-scorer"), str(VENV_BIN / "mlflow")
    return [
        RestSystem(
            FLOOR, [PYTHON, "-m", "bench.baselines.starlette_floor"], "/predict", "/ready", RECORD, env
        ),
        RestSystem(OURS, [scorer, "serve", "--port"], "/predict", "/ready", RECORD, default),
        RestSystem(
            "ours_access_log_all",
            [scorer, "serve", "--port"],
            "/predict",
            "/ready",
            RECORD,
            default | {"IRIS_ACCESS_LOG": "all"},
        ),
        RestSystem(
            "A_fastapi_naive",
            [PYTHON, "-m", "bench.baselines.fastapi_naive", "{port}", registry.version_uri],
            "/predict",
            "/health",
            RECORD,
            env,
        ),
        RestSystem(
            "B_mlflow_serve",
            [
                mlflow,
                "models",
                "serve",
                "-m",
                registry.version_uri,
                *("--env-manager", "local", "--workers", "1", "-p"),
            ],
            "/invocations",
            "/ping",
            {"dataframe_records": [RECORD]},
            env,
        ),
    ]


def goals(hi: int, lo: int) -> list[Goal]:
    return [
        Goal(f"throughput c{hi}: ours/floor >= 0.6", f"rps_c{hi}", ">=", 0.6, OURS, FLOOR),
        Goal(f"p99 c{hi}: ours/floor <= 2", f"p99_ms_c{hi}", "<=", 2.0, OURS, FLOOR),
        Goal(f"p50 c{lo}: ours/floor <= 1.5", f"p50_ms_c{lo}", "<=", 1.5, OURS, FLOOR),
        Goal(f"throughput c{hi}: ours/A >= 2", f"rps_c{hi}", ">=", 2.0, OURS, "A_fastapi_naive"),
        Goal(f"throughput c{hi}: ours/B >= 2", f"rps_c{hi}", ">=", 2.0, OURS, "B_mlflow_serve"),
        Goal(f"p99 c{hi}: ours/B <= 1", f"p99_ms_c{hi}", "<=", 1.0, OURS, "B_mlflow_serve"),
        Goal(f"errors c{hi}: ours == 0", f"errors_c{hi}", "<=", 0.0, OURS),
        Goal(f"errors c{lo}: ours == 0", f"errors_c{lo}", "<=", 0.0, OURS),
    ]


def rest(mode: Any, registry: BenchRegistry) -> ScenarioResult:
    result = ScenarioResult(
        "rest",
        "POST one record per request, closed loop, wrk (2 threads; 1 at c1) in its own process. "
        "floor = bare Starlette route that orjson-decodes the body and returns a constant; "
        "ours = `iris-scorer serve` as shipped (access log of failed requests only); "
        "ours_access_log_all = the same with IRIS_ACCESS_LOG=all; A = FastAPI naive (sync handler, "
        "pandas, 1 uvicorn worker); B = `mlflow models serve --env-manager local --workers 1`.",
        params={
            "duration_s": mode.rest_duration_s,
            "concurrency": list(mode.rest_concurrency),
            "repeats": mode.repeats,
        },
    )
    hi, lo = max(mode.rest_concurrency), min(mode.rest_concurrency)
    result.columns = [
        f"{m}_c{c}" for c in mode.rest_concurrency for m in ("rps", "p50_ms", "p99_ms", "errors")
    ]
    result.columns += [f"cpu_us_per_req_c{hi}", "rss_mb"]
    result.goals = goals(hi, lo)
    reason = wrk.available()
    if reason:
        for system in systems(registry):
            result.skip(system.name, reason)
        return result
    live: list[RestSystem] = []
    try:
        for system in systems(registry):
            system.port = free_port()
            cmd = [part.replace("{port}", str(system.port)) for part in system.cmd]
            if "{port}" not in " ".join(system.cmd):
                cmd.append(str(system.port))
            system.proc = start(system.name, cmd, system.env)
            live.append(system)
        for system in list(live):
            assert system.proc is not None
            try:
                wait_http(
                    system.proc,
                    f"http://127.0.0.1:{system.port}{system.ready_path}",
                    timeout=120,
                    ok=lambda s: s == 200,
                )
                warm = wrk.run(system.url, 1, 1.0, json.dumps(system.body).encode(), threads=1)
                if warm["ok"] == 0:  # its answers must be 2xx, else the system is broken, not slow
                    raise Skip(f"no successful request in the warm-up: {system.proc.tail(5)}")
            except Skip as exc:
                result.skip(system.name, str(exc))
                stop(system.proc)
                live.remove(system)
        for _round, name in interleave([s.name for s in live], mode.repeats):
            system = next(s for s in live if s.name == name)
            assert system.proc is not None
            if not system.proc.alive():
                continue
            body = json.dumps(system.body).encode()
            sample: dict[str, float] = {}
            for c in mode.rest_concurrency:
                cpu0 = system.proc.cpu_seconds()
                out = wrk.run(system.url, c, mode.rest_duration_s, body, threads=1 if c == 1 else 2)
                cpu1 = system.proc.cpu_seconds()
                if cpu0 is not None and cpu1 is not None and out["requests"]:
                    # server CPU per request (the cost model in bench/RESULTS.md is built from it)
                    sample[f"cpu_us_per_req_c{c}"] = (cpu1 - cpu0) / out["requests"] * 1e6
                sample |= {
                    f"rps_c{c}": out["rps"],
                    f"p50_ms_c{c}": out["p50_ms"],
                    f"p99_ms_c{c}": out["p99_ms"],
                }
                sample[f"errors_c{c}"] = out["errors"]
            sample["rss_mb"] = system.proc.rss_mb() or 0.0
            result.add(name, sample)
            print(f"  rest {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in sample.items()), flush=True)
    finally:
        for system in live:
            if system.proc is not None:
                stop(system.proc)
    return result
