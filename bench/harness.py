"""Benchmark harness: repeats, ABAB interleaving, medians, ratios, goals, result files.

The pure part (``median``, ``spread``, ``ratio``, ``check_goal``, ``summarise``) is unit-tested in
``tests/test_bench_smoke.py``; the rest starts and stops processes (each in its own process
group, always stopped in ``finally``) and writes ``bench/results/<UTC>.json`` + ``bench/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
PYTHON = sys.executable
VENV_BIN = Path(sys.executable).parent


class Skip(Exception):
    """A system or scenario cannot run here; the message is printed and recorded."""


# --------------------------------------------------------------------------- pure statistics


def median(values: Sequence[float]) -> float | None:
    clean = [v for v in values if v is not None]
    return float(statistics.median(clean)) if clean else None


def spread(values: Sequence[float]) -> tuple[float, float] | None:
    clean = [v for v in values if v is not None]
    return (float(min(clean)), float(max(clean))) if clean else None


def ratio(ours: float | None, baseline: float | None) -> float | None:
    """ours / baseline, None when either is missing or the baseline is zero."""
    if ours is None or baseline is None or baseline == 0:
        return None
    return ours / baseline


def check_goal(value: float | None, op: str, target: float) -> bool | None:
    """True/False for ``value op target`` (op is ">=" or "<="); None when there is no value."""
    if value is None:
        return None
    if op == ">=":
        return value >= target
    if op == "<=":
        return value <= target
    raise ValueError(f"unknown goal operator {op!r}")


@dataclass(frozen=True)
class Goal:
    """``metric`` of ``ours`` compared with ``baseline`` (ratio ours/baseline) or absolute."""

    name: str
    metric: str
    op: str
    target: float
    ours: str
    baseline: str | None = None  # None: compare ours' own median with target


def summarise(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per system and metric: median, min, max and n over the repeats."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for system, samples in runs.items():
        metrics: dict[str, list[float]] = {}
        for sample in samples:
            for key, value in sample.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics.setdefault(key, []).append(float(value))
        out[system] = {}
        for key, values in metrics.items():
            lo_hi = spread(values)
            out[system][key] = {
                "median": median(values),
                "min": lo_hi[0] if lo_hi else None,
                "max": lo_hi[1] if lo_hi else None,
                "n": len(values),
            }
    return out


def evaluate_goals(
    summary: dict[str, dict[str, dict[str, Any]]], goals: Sequence[Goal]
) -> list[dict[str, Any]]:
    results = []
    for goal in goals:
        ours = summary.get(goal.ours, {}).get(goal.metric, {}).get("median")
        if goal.baseline is None:
            value = ours
        else:
            base = summary.get(goal.baseline, {}).get(goal.metric, {}).get("median")
            value = ratio(ours, base)
        passed = check_goal(value, goal.op, goal.target)
        results.append(
            {
                "goal": goal.name,
                "metric": goal.metric,
                "value": value,
                "op": goal.op,
                "target": goal.target,
                "pass": passed,
            }
        )
    return results


def interleave(systems: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """ABAB order: every system once per round, rounds repeated (A B C A B C ...)."""
    return [(r, s) for r in range(repeats) for s in systems]


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def rss_mb(self) -> float | None:
        """RSS of the process and its children, in MiB."""
        import psutil

        try:
            proc = psutil.Process(self.pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        except psutil.Error:
            return None
        return float(total) / 2**20

    def cpu_seconds(self, *, children_only: bool = False) -> float | None:
        """User + system CPU seconds of the process and its descendants (``children_only``: of
        the descendants alone, e.g. the worker's drift child)."""
        import psutil

        try:
            proc = psutil.Process(self.pid)
            times = proc.cpu_times()
            total = 0.0 if children_only else times.user + times.system
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    ct = child.cpu_times()
                    total += ct.user + ct.system
        except psutil.Error:
            return None
        return float(total)


_log_dir: Path | None = None  # created on first use: importing this module has no side effects


def log_dir() -> Path:
    """Folder of the child processes' logs (shown in skip reasons), removed by ``remove_logs``."""
    global _log_dir
    if _log_dir is None:
        _log_dir = Path(tempfile.mkdtemp(prefix="iris-bench-logs-"))
    return _log_dir


def remove_logs() -> None:
    global _log_dir
    if _log_dir is not None:
        shutil.rmtree(_log_dir, ignore_errors=True)
        _log_dir = None


def start(name: str, cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
    """Start ``cmd`` in its own process group, stdout+stderr to a log file."""
    log_path = log_dir() / f"{name}-{time.monotonic_ns()}.log"
    handle = log_path.open("wb")
    try:
        popen = subprocess.Popen(
            list(cmd),
            cwd=str(cwd or REPO_ROOT),
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        handle.close()
    return Proc(name, popen, log_path)


def stop(proc: Proc, timeout: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``timeout``."""
    if proc.popen.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(name: str, cmd: Sequence[str], env: dict[str, str] | None = None) -> Iterator[Proc]:
    proc = start(name, cmd, env)
    try:
        yield proc
    finally:
        stop(proc)


def wait_http(
    proc: Proc, url: str, timeout: float = 90.0, ok: Callable[[int], bool] = lambda s: s < 500
) -> None:
    """Poll ``url`` until it answers (status accepted by ``ok``); Skip if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise Skip(f"{proc.name} exited with {proc.popen.returncode}: {proc.tail(6)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if ok(resp.status):
                    return
        except urllib.error.HTTPError as exc:
            if ok(exc.code):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise Skip(f"{proc.name} did not answer {url} within {timeout:.0f}s: {proc.tail(6)}")


class RssSampler:
    """Peak RSS of a process tree, sampled every ``interval`` seconds in a thread."""

    def __init__(self, proc: Proc, interval: float = 0.1) -> None:
        self.proc = proc
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.proc.rss_mb()
            if value is not None:
                self.peak_mb = max(self.peak_mb, value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- results


def machine_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages: dict[str, str | None] = {}
    for name in (
        "iris-scorer",
        "starlette",
        "uvicorn",
        "fastapi",
        "faststream",
        "aiokafka",
        "confluent-kafka",
        "mlflow",
        "scikit-learn",
        "pandas",
        "pyarrow",
        "numpy",
        "orjson",
        "aiohttp",
        "evidently",
    ):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
    }


@dataclass
class ScenarioResult:
    name: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # metrics shown in the markdown table

    def add(self, system: str, sample: dict[str, float]) -> None:
        self.runs.setdefault(system, []).append(sample)

    def skip(self, system: str, reason: str) -> None:
        self.skipped[system] = reason
        print(f"  [skip] {self.name}/{system}: {reason}", flush=True)

    def to_json(self) -> dict[str, Any]:
        summary = summarise(self.runs)
        return {
            "name": self.name,
            "description": self.description,
            "params": self.params,
            "runs": self.runs,
            "summary": summary,
            "goals": evaluate_goals(summary, self.goals),
            "skipped": self.skipped,
            "notes": self.notes,
            "columns": self.columns,
        }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"## {report['started_at']} — `{report['command']}`",
        "",
        f"Machine: {report['machine']['cores']} cores, {report['machine']['cpu']}, Python "
        f"{report['machine']['python']}, {report['machine']['platform']}.",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in report["machine"]["packages"].items() if v) + ".",
        f"Mode: {report['mode']}; wall time {report['wall_seconds']:.0f} s.",
        "",
    ]
    for scenario in report["scenarios"]:
        lines += [f"### {scenario['name']}", "", scenario["description"], ""]
        if scenario["params"]:
            lines.append("Parameters: " + ", ".join(f"{k}={v}" for k, v in scenario["params"].items()) + ".")
            lines.append("")
        columns = scenario.get("columns") or sorted({m for s in scenario["summary"].values() for m in s})
        if scenario["summary"]:
            lines.append("| system | " + " | ".join(f"{c} median (min-max)" for c in columns) + " |")
            lines.append("|---" * (len(columns) + 1) + "|")
            for system, metrics in scenario["summary"].items():
                cells = []
                for column in columns:
                    m = metrics.get(column)
                    if not m:
                        cells.append("-")
                    else:
                        cells.append(f"{_fmt(m['median'])} ({_fmt(m['min'])}-{_fmt(m['max'])}, n={m['n']})")
                lines.append(f"| {system} | " + " | ".join(cells) + " |")
            lines.append("")
        if scenario["goals"]:
            lines.append("| goal | value | target | result |")
            lines.append("|---|---|---|---|")
            for g in scenario["goals"]:
                verdict = {True: "PASS", False: "FAIL", None: "n/a"}[g["pass"]]
                lines.append(
                    f"| {g['goal']} | {_fmt(g['value'])} | {g['op']} {_fmt(g['target'])} | {verdict} |"
                )
            lines.append("")
        for system, reason in scenario["skipped"].items():
            lines.append(f"- skipped {system}: {reason}")
        for note in scenario["notes"]:
            lines.append(f"- {note}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any]) -> tuple[Path, Path]:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = report["started_at"].replace(":", "").replace("-", "")
    json_path = RESULTS_DIR / f"{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if not RESULTS_MD.exists():
        RESULTS_MD.write_text(
            "# Benchmark results\n\nAppended by `python -m bench` (`make bench` / `make bench-full`); "
            "raw numbers in `bench/results/*.json`. Ratios are ours / baseline.\n\n"
        )
    with RESULTS_MD.open("a") as handle:
        handle.write(markdown(report))
    return json_path, RESULTS_MD


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
