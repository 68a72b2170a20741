"""``iris-scorer demo``: the whole event flow on embedded defaults, then a summary.

Trains if there is no champion, starts the embedded broker, the worker and the REST service as
child processes, publishes sample traffic (in-distribution, then shifted, with some malformed
messages), waits until every message is accounted for, prints a summary and stops everything,
also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from iris_scorer import demo_live
from iris_scorer.children import Children, cli_command, interruptible, start_on_port, wait_http
from ml.errors import IrisError
from ml.settings import Settings

NORMAL_COUNT = 1500
SHIFTED_COUNT = 1500
BAD_COUNT = 20
SHIFT_SD = 1.5
WAIT_SECONDS = 180.0
WINDOW_ROWS = 500  # drift window of the demo's worker: 3,000 requests make six windows


#: the lines each service logs once it has bound its port (the port it actually got)
BROKER_READY = re.compile(r"broker ready bootstrap=127\.0\.0\.1:(\d+)")
WORKER_BOUND = re.compile(r"event=worker_http address=http://127\.0\.0\.1:(\d+)")
REST_BOUND = re.compile(r"event=rest_listening address=http://127\.0\.0\.1:(\d+)")


@dataclass
class Tally:
    predictions: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    prediction_ids: set[str] = field(default_factory=set)
    dlq: Counter[str] = field(default_factory=Counter)
    drift: list[dict[str, Any]] = field(default_factory=list)
    drift_skipped: int | None = None  # iris_drift_windows_skipped_total, all reasons
    live: demo_live.LiveTally = field(default_factory=demo_live.LiveTally)


async def collect(
    settings: Settings,
    bootstrap: str,
    valid: int,
    bad: int,
    timeout_s: float,
    metrics_url: str,
    expected_windows: int,
) -> Tally:
    """Read predictions, DLQ and drift topics from the start until every message is accounted for
    and every drift window of the traffic is either published or counted as skipped by the worker
    (a busy machine evaluates windows slowly: a fixed quiet period would cut the summary short)."""
    from aiokafka import AIOKafkaConsumer

    tally = Tally()
    consumer = AIOKafkaConsumer(
        settings.predictions_topic,
        settings.dlq_topic,
        settings.drift_topic,
        settings.shadow_topic,
        settings.performance_topic,
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
                    elif tp.topic == settings.shadow_topic:
                        tally.live.add_shadow(orjson.loads(msg.value or b"{}"))
                    elif tp.topic == settings.performance_topic:
                        tally.live.windows.append(orjson.loads(msg.value or b"{}"))
                    elif tp.topic == settings.dlq_topic:
                        headers = {k: v.decode(errors="replace") for k, v in msg.headers}
                        tally.dlq[headers.get("error", "?")] += 1
                    else:
                        tally.drift.append(orjson.loads(msg.value or b"{}"))
            labelled = int(valid * demo_live.LABEL_SHARE) // demo_live.WINDOW_LABELS
            done = (
                len(tally.prediction_ids) >= valid
                and sum(tally.dlq.values()) >= bad
                and len(tally.live.windows) >= labelled
            )
            # The last (shifted) window closes on time: wait for it a little after the data is in.
            if done and time.monotonic() - quiet_since > 2.0:
                skipped = await asyncio.to_thread(skipped_windows, metrics_url) or 0
                if len(tally.drift) + skipped >= expected_windows:
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


def run_demo(settings: Settings) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress reaches a pipe (`| tee`) as it happens
    with interruptible():
        try:
            return _run_demo(settings)
        except KeyboardInterrupt:
            print("demo: interrupted; everything it started is stopped", file=sys.stderr)
            return 130


def _run_demo(settings: Settings) -> int:
    ensure_champion(settings)
    demo_live.ensure_challenger(settings)
    reports = settings.reports_dir.resolve()
    logs = reports / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            "IRIS_REPORTS_DIR": str(reports),
            "IRIS_DRIFT_WINDOW_SIZE": str(WINDOW_ROWS),
            "IRIS_DRIFT_WINDOW_SECONDS": "5",
            # the demo publishes its 3,000 requests in one burst: all six windows close within about
            # a second, more than the default queue of 4 holds while Evidently evaluates the first
            "IRIS_DRIFT_QUEUE_SIZE": "8",
            # and all six are evaluated: the burst would otherwise hit the drift CPU budget (0.1 of
            # a core, meant for sustained high rates) and skip most of them
            "IRIS_DRIFT_CPU_SHARE": "1",
            "IRIS_KAFKA_SESSION_TIMEOUT_MS": "6000",
            # champion against challenger: both score every request, labels join on half of them
            "IRIS_SHADOW": "true",
            "IRIS_PERFORMANCE_WINDOW_SIZE": str(demo_live.WINDOW_LABELS),
        }
    )
    children = Children(logs)
    started = time.monotonic()
    try:
        _broker, broker_port = start_on_port(
            children, "broker", ["broker"], "--port", 9092, env, BROKER_READY
        )
        bootstrap = f"127.0.0.1:{broker_port}"
        env["IRIS_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        print(f"demo: embedded broker on {bootstrap} (librdkafka mock cluster, in memory)")
        worker, worker_port = start_on_port(
            children, "worker", ["worker"], "--http-port", 8001, env, WORKER_BOUND
        )
        rest, rest_port = start_on_port(children, "REST service", ["serve"], "--port", 8000, env, REST_BOUND)
        wait_http(f"http://127.0.0.1:{worker_port}/ready", worker, "worker", children.log_path("worker"))
        wait_http(
            f"http://127.0.0.1:{rest_port}/ready", rest, "REST service", children.log_path("REST service")
        )
        print(
            f"demo: worker ready (http://127.0.0.1:{worker_port}), REST ready (http://127.0.0.1:{rest_port})"
        )

        publish = [*cli_command(), "publish"]
        labels = ["--labels", str(demo_live.LABEL_SHARE)]
        print(
            f"demo: publishing {NORMAL_COUNT} in-distribution requests and {BAD_COUNT} malformed ones",
            flush=True,
        )
        _publish(
            children,
            [*publish, "--count", str(NORMAL_COUNT), "--bad", str(BAD_COUNT), "--seed", "1", *labels],
            env,
        )
        print(
            f"demo: publishing {SHIFTED_COUNT} requests with petal features shifted by +{SHIFT_SD} sd",
            flush=True,
        )
        _publish(
            children,
            [*publish, "--count", str(SHIFTED_COUNT), "--shift", str(SHIFT_SD), "--seed", "2", *labels],
            env,
        )

        tally = asyncio.run(
            collect(
                settings,
                bootstrap,
                NORMAL_COUNT + SHIFTED_COUNT,
                BAD_COUNT,
                WAIT_SECONDS,
                f"http://127.0.0.1:{worker_port}/metrics",
                (NORMAL_COUNT + SHIFTED_COUNT) // WINDOW_ROWS,
            )
        )
        sample = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        rest_answer = httpx.post(f"http://127.0.0.1:{rest_port}/predict", json=sample, timeout=10).json()
        tally.drift_skipped = skipped_windows(f"http://127.0.0.1:{worker_port}/metrics")
        tally.live.decision = demo_live.promote_from_live(env)
    finally:
        children.stop_all()
    print_summary(tally, rest_answer, rest_port, logs, time.monotonic() - started)
    missing = NORMAL_COUNT + SHIFTED_COUNT - len(tally.prediction_ids)
    return 0 if missing == 0 and sum(tally.dlq.values()) == BAD_COUNT else 1


def _publish(children: Children, command: list[str], env: dict[str, str]) -> None:
    """Run the sample publisher to its end; an interrupt stops it with everything else."""
    proc = children.start("publisher", command, env, to_log=False)
    code = proc.wait()
    children.forget("publisher")
    if code != 0:
        raise IrisError(f"publishing failed with exit code {code} (its error is printed above).")


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
    demo_live.print_live(tally.live)
    print(f"logs: {logs}   wall time: {wall_s:.1f} s")
    print("all demo processes stopped")
