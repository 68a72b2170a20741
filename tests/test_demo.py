"""`iris-scorer demo` end to end: broker, worker, REST, traffic with a shift, summary, clean stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_demo_runs_the_whole_flow_and_stops_everything(fresh_registry, tmp_path: Path) -> None:
    registry = fresh_registry  # the demo trains a challenger and may promote it: a registry of its own
    env = dict(os.environ)
    env.update({"MLFLOW_TRACKING_URI": registry.tracking_uri, "IRIS_REPORTS_DIR": str(tmp_path / "reports")})
    result = subprocess.run(
        [sys.executable, "-m", "iris_scorer.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "predictions: 3000/3000 ids scored" in out
    assert "dead-letter queue: 20/20 malformed messages" in out
    drift_lines = [line for line in out.splitlines() if line.strip().startswith(("ok ", "DRIFT"))]
    assert len(drift_lines) >= 5
    # 3,000 scored rows make six 500-row windows: each is either evaluated or counted as skipped
    counts = re.search(r"drift windows: (\d+) evaluated, (\d+) skipped", out)
    assert counts is not None, out
    assert int(counts[1]) == len(drift_lines)
    assert int(counts[1]) + int(counts[2]) >= 6
    # In-distribution traffic comes first and is not flagged; the shifted part is.
    assert drift_lines[0].strip().startswith("ok")
    assert drift_lines[-1].strip().startswith("DRIFT")
    reports = list((tmp_path / "reports" / "drift").glob("*.html"))
    assert len(reports) == len(drift_lines)
    assert "all demo processes stopped" in out
    # the champion/challenger loop: shadow on every request, labels for half, a decision at the end
    assert "shadow: 3000 requests scored by both models, agreement " in out
    assert "live performance: 6 windows of 250 labelled predictions" in out
    live = re.findall(r"^  (champion|challenger) +v(\d+) +labelled=(\d+) +accuracy=([\d.]+)", out, re.M)
    assert {alias for alias, *_ in live} == {"champion", "challenger"}, out
    assert all(int(n) == 1500 for _, _, n, _ in live), live
    decision = out.split("promote --from-live:", 1)[1]
    assert "on 1500 labelled ids in 6 windows" in decision, decision
    champion_now = registry.client.get_model_version_by_alias("iris-classifier", "champion").version
    challenger = registry.client.get_model_version_by_alias("iris-classifier", "challenger").version
    if "it wins" in decision:
        assert f"iris-classifier@champion: v{registry.champion_version} → v{challenger}" in decision
        assert str(champion_now) == str(challenger)
    else:
        assert "the aliases stay" in decision and str(champion_now) == registry.champion_version
    # Nothing the demo started is left running (its children carry our reports folder in their env).
    leftovers = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("IRIS_REPORTS_DIR") == str(tmp_path / "reports"):
                leftovers.append(proc.cmdline())
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    assert leftovers == []


def demo_env(registry, reports: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    env.update({"MLFLOW_TRACKING_URI": registry.tracking_uri, "IRIS_REPORTS_DIR": str(reports)})
    return env


def leftover_children(reports: Path) -> list[list[str]]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("IRIS_REPORTS_DIR") == str(reports):
                found.append(proc.cmdline())
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def wait_for_output(proc: subprocess.Popen[str], marker: str, timeout_s: float = 120) -> str:
    """Read the demo's stdout line by line until ``marker`` appears."""
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} in the demo's output: {''.join(seen)}")


@pytest.mark.parametrize(
    ("case", "start_ignoring_sigint", "to_group"),
    [
        # Ctrl-C in a terminal: SIGINT reaches the demo and everything in its process group
        ("ctrl-c in a terminal", False, True),
        # `kill -INT <demo pid>` on a demo started from a script, where SIGINT starts out ignored
        ("SIGINT to the demo started with SIGINT ignored", True, False),
        ("SIGTERM to the demo", False, False),
    ],
)
def test_an_interrupted_demo_says_so_stops_everything_and_exits_130(
    fresh_registry, tmp_path: Path, case: str, start_ignoring_sigint: bool, to_group: bool
) -> None:  # type: ignore[no-untyped-def]
    registry = fresh_registry  # the demo sets a challenger
    reports = tmp_path / "reports"

    def preexec() -> None:
        if start_ignoring_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, "-m", "iris_scorer.cli", "demo"],
        env=demo_env(registry, reports),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
        preexec_fn=preexec,
    )
    try:
        wait_for_output(proc, "demo: worker ready")
        sig = signal.SIGTERM if case == "SIGTERM to the demo" else signal.SIGINT
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert "publishing failed" not in err and "cannot reach the Kafka broker" not in err, err
    deadline = time.monotonic() + 20
    while leftover_children(reports) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftover_children(reports) == []


def test_taken_ports_fall_back_to_free_ones_and_the_addresses_are_printed(
    fresh_registry, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    registry = fresh_registry
    """Another program holds the demo's usual ports (a local Kafka on 9092, a web server on
    8000, ...): the demo binds free ones instead and says where everything is."""
    holders = []
    for port in (9092, 8000, 8001):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
            holders.append(sock)
        except OSError:  # taken by something else, which may let it go at any time
            sock.close()
    held = {str(sock.getsockname()[1]) for sock in holders}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "iris_scorer.cli", "demo"],
            env=demo_env(registry, tmp_path / "reports"),
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
    finally:
        for sock in holders:
            sock.close()
    assert result.returncode == 0, result.stdout + result.stderr
    printed = [
        line
        for line in result.stdout.splitlines()
        if line.startswith(("demo: embedded broker on", "demo: worker ready", "REST: "))
    ]
    addresses = {port for line in printed for port in re.findall(r"127\.0\.0\.1:(\d+)", line)}
    assert len(addresses) == 3 and not held & addresses, result.stdout
    assert "predictions: 3000/3000 ids scored" in result.stdout


def test_a_service_that_cannot_start_names_its_log_file(tmp_path: Path) -> None:
    from iris_scorer.children import Children, start_service
    from ml.errors import IrisError

    children = Children(tmp_path)
    try:
        with pytest.raises(IrisError) as info:
            start_service(
                children,
                "broken",
                [sys.executable, "-c", "import sys; print('no port for me', file=sys.stderr); sys.exit(3)"],
                env=dict(os.environ),
                address=re.compile(r"never printed (\d+)"),
            )
    finally:
        children.stop_all()
    assert str(tmp_path / "broken.log") in info.value.message, info.value.message
