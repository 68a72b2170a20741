"""``iris-scorer demo``: the whole event flow on embedded defaults, then a summary.

Trains if there is no champion, starts the embedded broker, the worker and the REST service as
child processes, publishes sample traffic (in-distribution, then shifted, with some malformed
messages), waits until every message is accounted for, prints a summary and stops everything,
also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from ml.errors import IrisError
from ml.settings import Settings

NORMAL_COUNT = 1500
SHIFTED_COUNT = 1500
BAD_COUNT = 20
SHIFT_SD = 1.5
WAIT_SECONDS = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cli() -> list[str]:
    return [sys.executable, "-m", "iris_scorer.cli"]


@dataclass
class Children:
    """Child processes started by the demo; stopped in reverse order, whatever happens."""

    logs: Path
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen([*_cli(), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"demo: {name} did not stop in time; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()


def wait_http(url: str, proc: subprocess.Popen[bytes], name: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise IrisError(f"{name} exited with code {proc.returncode} during start-up (see its log).")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise IrisError(f"{name} was not ready at {url} after {timeout_s:.0f} s (see its log).")


def wait_line(proc: subprocess.Popen[bytes], log: Path, marker: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and marker in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise IrisError(f"the broker exited with code {proc.returncode} (see {log}).")
        time.sleep(0.1)
    raise IrisError(f"the broker did not report ready within {timeout_s:.0f} s (see {log}).")


@dataclass
class Tally:
    predictions: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    prediction_ids: set[str] = field(default_factory=set)
    dlq: Counter[str] = field(default_factory=Counter)
    drift: list[dict[str, Any]] = field(default_factory=list)
    drift_skipped: int | None = None  # iris_drift_windows_skipped_total, all reasons


async def collect(settings: Settings, bootstrap: str, valid: int, bad: int, timeout_s: float) -> Tally:
    """Read predictions, DLQ and drift topics from the start until every message is accounted for."""
    from aiokafka import AIOKafkaConsumer

    tally = Tally()
    consumer = AIOKafkaConsumer(
        settings.predictions_topic,
        settings.dlq_topic,
        settings.drift_topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, messages in batch.items():
                for msg in messages:
                    quiet_since = time.monotonic()
                    if tp.topic == settings.predictions_topic:
                        body = orjson.loads(msg.value or b"{}")
                        tally.prediction_ids.add(body["id"])
                        tally.predictions[body["label"]] += 1
                        tally.versions[body["model_version"]] += 1
                    elif tp.topic == settings.dlq_topic:
                        headers = {k: v.decode(errors="replace") for k, v in msg.headers}
                        tally.dlq[headers.get("error", "?")] += 1
                    else:
                        tally.drift.append(orjson.loads(msg.value or b"{}"))
            done = len(tally.prediction_ids) >= valid and sum(tally.dlq.values()) >= bad
            # The last (shifted) window closes on time: wait for it a little after the data is in.
            if done and time.monotonic() - quiet_since > 2.0 and tally.drift:
                break
        return tally
    finally:
        await consumer.stop()


def ensure_champion(settings: Settings) -> None:
    from ml.pipeline import has_champion, run_pipeline

    if has_champion(settings):
        print("demo: champion model found in the registry")
        return
    print("demo: no champion model yet: training (dvc repro)")
    trained = run_pipeline(settings) == 0 and has_champion(settings)
    if not trained and run_pipeline(settings, force=True) != 0:
        raise IrisError("training failed: see the output above.")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(settings: Settings) -> int:
    ensure_champion(settings)
    reports = settings.reports_dir.resolve()
    logs = reports / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    broker_port = 9092 if port_is_free(9092) else free_port()
    rest_port = 8000 if port_is_free(8000) else free_port()
    worker_port = 8001 if port_is_free(8001) else free_port()
    bootstrap = f"127.0.0.1:{broker_port}"
    env = dict(os.environ)
    env.update(
        {
            "IRIS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            "IRIS_REPORTS_DIR": str(reports),
            "IRIS_DRIFT_WINDOW_SIZE": "500",
            "IRIS_DRIFT_WINDOW_SECONDS": "5",
            # the demo publishes its 3,000 requests in one burst: all six windows close within about
            # a second, more than the default queue of 4 holds while Evidently evaluates the first
            "IRIS_DRIFT_QUEUE_SIZE": "8",
            "IRIS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        }
    )
    children = Children(logs)
    started = time.monotonic()
    try:
        with sigterm_as_interrupt():
            broker = children.start("broker", ["broker", "--port", str(broker_port)], env)
            wait_line(broker, logs / "broker.log", "broker ready")
            print(f"demo: embedded broker on {bootstrap} (librdkafka mock cluster, in memory)")
            worker = children.start("worker", ["worker", "--http-port", str(worker_port)], env)
            rest = children.start("rest", ["serve", "--port", str(rest_port)], env)
            wait_http(f"http://127.0.0.1:{worker_port}/ready", worker, "worker")
            wait_http(f"http://127.0.0.1:{rest_port}/ready", rest, "REST service")
            print(
                f"demo: worker ready (http://127.0.0.1:{worker_port}), REST ready (http://127.0.0.1:{rest_port})"
            )

            publish = [*_cli(), "publish"]
            print(f"demo: publishing {NORMAL_COUNT} in-distribution requests and {BAD_COUNT} malformed ones")
            subprocess.run(
                [*publish, "--count", str(NORMAL_COUNT), "--bad", str(BAD_COUNT), "--seed", "1"],
                env=env,
                check=True,
            )
            print(f"demo: publishing {SHIFTED_COUNT} requests with petal features shifted by +{SHIFT_SD} sd")
            subprocess.run(
                [*publish, "--count", str(SHIFTED_COUNT), "--shift", str(SHIFT_SD), "--seed", "2"],
                env=env,
                check=True,
            )

            tally = asyncio.run(
                collect(settings, bootstrap, NORMAL_COUNT + SHIFTED_COUNT, BAD_COUNT, WAIT_SECONDS)
            )
            sample = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
            rest_answer = httpx.post(f"http://127.0.0.1:{rest_port}/predict", json=sample, timeout=10).json()
            tally.drift_skipped = skipped_windows(f"http://127.0.0.1:{worker_port}/metrics")
    except KeyboardInterrupt:
        print("demo: interrupted; stopping everything", file=sys.stderr)
        children.stop_all()
        return 130
    except subprocess.CalledProcessError as exc:
        children.stop_all()
        raise IrisError(f"publishing failed with exit code {exc.returncode}.") from None
    except BaseException:
        children.stop_all()
        raise
    children.stop_all()
    print_summary(tally, rest_answer, rest_port, logs, time.monotonic() - started)
    missing = NORMAL_COUNT + SHIFTED_COUNT - len(tally.prediction_ids)
    return 0 if missing == 0 and sum(tally.dlq.values()) == BAD_COUNT else 1


def skipped_windows(metrics_url: str) -> int | None:
    """The worker's ``iris_drift_windows_skipped_total`` summed over reasons (None if unreadable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(metrics_url, timeout=5).text
    except httpx.HTTPError:
        return None
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "iris_drift_windows_skipped_total"
        )
    )


def print_summary(
    tally: Tally, rest_answer: dict[str, Any], rest_port: int, logs: Path, wall_s: float
) -> None:
    expected = NORMAL_COUNT + SHIFTED_COUNT
    print("\n==================== iris-scorer demo summary ====================")
    print(f"predictions: {len(tally.prediction_ids)}/{expected} ids scored")
    for label, count in sorted(tally.predictions.items()):
        print(f"  {label:<12} {count}")
    print(f"  model versions: {dict(tally.versions)}")
    print(f"dead-letter queue: {sum(tally.dlq.values())}/{BAD_COUNT} malformed messages")
    for reason, count in sorted(tally.dlq.items()):
        print(f"  {reason:<18} {count}")
    skipped = (
        ""
        if tally.drift_skipped is None
        else f" evaluated, {tally.drift_skipped} skipped (too few rows or backlog)"
    )
    print(f"drift windows: {len(tally.drift)}{skipped}")
    for window in sorted(tally.drift, key=lambda w: str(w.get("window_start"))):
        flag = "DRIFT" if window.get("dataset_drift") else "ok   "
        print(
            f"  {flag} rows={window.get('rows'):>4} share={window.get('drifted_share', 0):.2f} "
            f"{window.get('window_start')} → {window.get('window_end')}  {window.get('report')}"
        )
    print(
        f"REST: POST http://127.0.0.1:{rest_port}/predict → {rest_answer.get('label')} (v{rest_answer.get('model_version')})"
    )
    print(f"logs: {logs}   wall time: {wall_s:.1f} s")
    print("all demo processes stopped")
