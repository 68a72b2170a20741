# ruff: noqa: F811 - the fixtures are imported from test_worker_integration
"""Reliability of the stream worker against a real broker process (issue 9).

Poison messages, kill -9 at three points of a 50k run, broker loss mid-run, registry outage at
start, and a hot swap under load. Figures are printed and, with ``IRIS_RELIABILITY_FIGURES``
set, written to that JSON file (see ``tests/reliability_report.py``). SIGTERM during load and
the broker being down at start are covered by ``tests/test_worker_integration.py``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_fixtures import free_port, start_embedded_broker, stop_broker
from stream_helpers import (
    Placed,
    produce_keyless_tombstone,
    produce_raw,
    produce_records,
    ready_status,
    record_figures,
    wait_until,
)
from test_worker_integration import (
    SETTINGS,
    Collector,
    Worker,
    collectors,  # noqa: F401 - fixture
    offsets,
    own_broker,  # noqa: F401 - fixture
    prediction_ids,
    publish,
    publish_in_background,
    slow_worker,
    valid_ids,
    worker_env,
    workers,  # noqa: F401 - fixture
)

from consumers.kafka_config import build_kafka_config
from consumers.publish import sample_messages
from ml.messages import decode_batch

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PREDICTIONS, DLQ, REQUESTS = SETTINGS.predictions_topic, SETTINGS.dlq_topic, SETTINGS.requests_topic
# The worker's own limits, as deployed (not lowered to make a too-large copy producible):
# IRIS_MAX_MESSAGE_BYTES, and the producer's max_request_size derived from it.
POISON_LIMIT = SETTINGS.max_message_bytes
REQUEST_LIMIT = build_kafka_config(SETTINGS).max_request_size


# --------------------------------------------------------------------------- poison messages

_GOOD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _obj(n: int, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": f"bad-{n}", **_GOOD}
    for key, value in changes.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return body


def poison_corpus() -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(name, key, value, expected DLQ error) for every malformed input (the keyless tombstone is
    produced separately)."""
    j = orjson.dumps
    cases: list[tuple[str, bytes | None, str]] = [
        ("invalid_utf8", b'{"id": "bad-0", "sepal_length": 5.1, "x": "\xff\xfe"}', "invalid_json"),
        ("lone_surrogate", b'{"id": "\xed\xa0\x80", "sepal_length": 5.1}', "invalid_json"),
        ("not_json", b"hello, world", "invalid_json"),
        ("truncated_json", b'{"id": "bad-3", "sepal_length": 5.1,', "invalid_json"),
        ("two_documents", j(_obj(4)) + b" " + j(_obj(4)), "invalid_json"),
        ("json_array", j([5.1, 3.5, 1.4, 0.2]), "validation_error"),
        ("json_null", b"null", "validation_error"),
        ("json_string", b'"5.1,3.5,1.4,0.2"', "validation_error"),
        ("json_number", b"42", "validation_error"),
        ("empty_value", b"", "empty"),
        ("tombstone_with_key", None, "empty"),
        ("whitespace_only", b"   \n", "invalid_json"),
        ("missing_id", j(_obj(12, id=...)), "validation_error"),
        ("missing_sepal_length", j(_obj(13, sepal_length=...)), "validation_error"),
        ("missing_sepal_width", j(_obj(14, sepal_width=...)), "validation_error"),
        ("missing_petal_length", j(_obj(15, petal_length=...)), "validation_error"),
        ("missing_petal_width", j(_obj(16, petal_width=...)), "validation_error"),
        ("string_feature", j(_obj(17, petal_width="0.2")), "validation_error"),
        ("bool_feature", j(_obj(18, sepal_width=True)), "validation_error"),
        ("null_feature", j(_obj(19, petal_length=None)), "validation_error"),
        ("numeric_id", j(_obj(20, id=20)), "validation_error"),
        ("empty_id", j(_obj(21, id="")), "validation_error"),
        (
            "nan_literal",
            b'{"id": "bad-22", "sepal_length": NaN, "sepal_width": 3.5, "petal_length": 1.4, '
            b'"petal_width": 0.2}',
            "invalid_json",
        ),
        (
            "infinity_literal",
            b'{"id": "bad-23", "sepal_length": Infinity, "sepal_width": 3.5, '
            b'"petal_length": 1.4, "petal_width": 0.2}',
            "invalid_json",
        ),
        ("negative_number", j(_obj(24, sepal_width=-1.0)), "validation_error"),
        ("huge_number", j(_obj(25, sepal_length=1e308)), "validation_error"),
        (
            "overflow_float",
            b'{"id": "bad-26", "sepal_length": 1e999, "sepal_width": 3.5, "petal_length": 1.4, '
            b'"petal_width": 0.2}',
            "invalid_json",
        ),
        (
            "huge_integer",
            b'{"id": "bad-27", "sepal_length": 123456789012345678901234567890, "sepal_width": 3.5, '
            b'"petal_length": 1.4, "petal_width": 0.2}',
            "validation_error",  # orjson reads integers beyond 64 bits as floats: out of range
        ),
        ("long_id_within_limit", j(_obj(28, id="x" * 60_000)), "validation_error"),
        ("one_mb_id", j(_obj(29, id="x" * (POISON_LIMIT + 1))), "too_large"),
        ("over_limit_padding", j({**_obj(30), "pad": "p" * (POISON_LIMIT + 1)}), "too_large"),
        ("nested_object_feature", j(_obj(31, sepal_length={"value": 5.1})), "validation_error"),
        ("nested_array_feature", j(_obj(32, sepal_length=[5.1])), "validation_error"),
        # orjson keeps the LAST of duplicate keys: a bad last value is a validation_error...
        ("duplicate_key_last_bad", j(_obj(33))[:-1] + b',"sepal_width":-3}', "validation_error"),
        ("deep_nesting", b"[" * 5000 + b"]" * 5000, "invalid_json"),
        (
            "deep_nesting_in_object",
            b'{"id": "bad-35", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            "invalid_json",
        ),
        ("bom_prefixed", b"\xef\xbb\xbf" + j(_obj(36)), "invalid_json"),
    ]
    return [(name, f"bad-{n}".encode(), value, code) for n, (name, value, code) in enumerate(cases)]


def _padded(n: int, size: int) -> bytes:
    """A request without features (a validation error) of exactly ``size`` bytes."""
    head = orjson.dumps({"id": f"edge-{n}", "pad": ""})
    return head[:-2] + b"p" * (size - len(head)) + b'"}'


def edge_corpus() -> list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]], str, str | None]]:
    """(name, key, value, headers, expected DLQ error, compression) at and around every limit."""
    bad = b"{not json"
    cases: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]], str, str | None]] = [
        (f"compressed_{codec}", b"edge-codec-" + codec.encode(), bad, [], "invalid_json", codec)
        for codec in ("gzip", "snappy", "lz4", "zstd")
    ]
    cases += [
        ("at_message_limit", b"edge-1", _padded(1, POISON_LIMIT), [], "validation_error", None),
        ("just_over_message_limit", b"edge-2", _padded(2, POISON_LIMIT + 1), [], "too_large", None),
        ("at_request_limit", b"edge-3", _padded(3, REQUEST_LIMIT), [], "too_large", None),
        ("just_over_request_limit", b"edge-4", _padded(4, REQUEST_LIMIT + 1), [], "too_large", None),
        ("three_request_limits", b"edge-5", _padded(5, 3 * REQUEST_LIMIT), [], "too_large", None),
        ("huge_key", b"k" * (2 * REQUEST_LIMIT), bad, [], "invalid_json", None),
        ("huge_headers", b"edge-7", bad, [("trace", b"t" * (2 * REQUEST_LIMIT))], "invalid_json", None),
        (
            "non_utf8_header_values",
            b"edge-8",
            bad,
            [("bin", b"\xff\xfe\x00"), ("ok", b"1")],
            "invalid_json",
            None,
        ),
    ]
    return cases


def test_poison_at_every_limit_is_dead_lettered_and_its_partition_moves_on(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    """Each edge case on its own partition, a valid message right behind it: the DLQ copy (cut
    to fit when it must, and saying so), the valid one scored, the committed offset past both."""
    corpus = edge_corpus()
    for name, _, value, _, code, _ in corpus:
        got = decode_batch([value], POISON_LIMIT).bad
        assert got and got[0].code == code, name
    followers = sample_messages(len(corpus) + 1, seed=41)
    records: list[Placed] = []
    for n, ((_, key, value, own_headers, _, codec), follower) in enumerate(
        zip(corpus, followers, strict=False)
    ):
        records.append((n % 4, key, value, own_headers, codec))
        records.append((n % 4, *follower, [], None))
    positions = produce_records(own_broker, REQUESTS, records)
    keyless = produce_keyless_tombstone(own_broker, REQUESTS, partition=1)
    last = produce_records(own_broker, REQUESTS, [(1, *followers[-1], [], None)])[0]
    expected = {positions[2 * n]: case for n, case in enumerate(corpus)}
    behind = {positions[2 * n + 1]: (followers[n][0] or b"").decode() for n in range(len(corpus))}
    behind[last] = (followers[-1][0] or b"").decode()

    collector = Collector(own_broker, (PREDICTIONS, DLQ))
    collectors.append(collector)
    worker = Worker(worker_env(registry, own_broker, tmp_path))
    workers.append(worker)
    worker.wait_ready()
    collector.wait_for(
        lambda: (
            set(prediction_ids(collector)) >= set(behind.values()) and collector.count(DLQ) > len(expected)
        ),
        "every edge case dead-lettered and the message behind it scored",
    )
    collector.wait_for(lambda: (lambda c, e: c == e)(*offsets(own_broker)), "offsets committed to the end")
    committed, _ = offsets(own_broker)
    dead = {}
    for record in collector.records[DLQ]:
        headers = dict(record.headers)
        dead[(int(headers["source_partition"]), int(headers["source_offset"]))] = (record, headers)
    assert set(dead) == set(expected) | {keyless}
    assert dead[keyless][1]["tombstone"] == b"1" and dead[keyless][0].value == b""
    for position, (name, key, value, own, code, _) in expected.items():
        record, headers = dead[position]
        assert headers["error"].decode() == code, name
        assert headers["source_topic"] == REQUESTS.encode(), name
        assert record_size_of(record) <= REQUEST_LIMIT, name
        assert committed[position[0]] > position[1], f"{name}: the committed offset moved past it"
        if headers.get("value_truncated") == b"true":
            assert len(value) + len(key or b"") > REQUEST_LIMIT - 4096, f"{name} was cut but fitted"
            assert headers["original_size"] == str(len(value)).encode() and value.startswith(record.value)
        else:
            assert record.value == value, f"{name}: DLQ bytes must be the original bytes"
        if name == "huge_key":
            assert headers["key_truncated"] == b"true" and (key or b"").startswith(record.key)
        else:
            assert record.key == key, name
        if name == "huge_headers":
            assert headers["headers_dropped"] == b"1" and "trace" not in headers
        else:
            assert [h for h in record.headers if h[0] in dict(own)] == own, f"{name}: own headers unchanged"
    for name in ("at_message_limit", "just_over_message_limit"):
        position = next(p for p, case in expected.items() if case[0] == name)
        assert "value_truncated" not in dead[position][1], f"{name} fits: copied whole"
    for name in ("at_request_limit", "just_over_request_limit", "three_request_limits"):
        position = next(p for p, case in expected.items() if case[0] == name)
        assert dead[position][1]["value_truncated"] == b"true", name
    assert set(prediction_ids(collector)) >= set(behind.values())
    log = worker.output()
    assert "batch_failed" not in log and "consumer_error" not in log
    assert worker.terminate() == 0


def record_size_of(record: Any) -> int:
    return (
        64
        + len(record.key or b"")
        + len(record.value or b"")
        + sum(16 + len(n) + len(v) for n, v in record.headers)
    )


def test_poison_corpus_goes_to_the_dlq_intact_and_the_worker_survives(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    corpus = poison_corpus()
    assert len(corpus) >= 25
    # The expected codes are also what ml.messages says (one place decides).
    for name, _, value, code in corpus:
        got = decode_batch([value], POISON_LIMIT).bad
        assert got and got[0].code == code, name
    # ...and a duplicate key whose last value is good is scored (orjson: last one wins).
    dup_ok = (b"dup-ok", orjson.dumps({"id": "dup-ok", **_GOOD})[:-1] + b',"sepal_width":3.0}')
    assert not decode_batch([dup_ok[1]], POISON_LIMIT).bad

    valid = sample_messages(len(corpus) + 1, seed=21)
    messages: list[tuple[bytes | None, bytes | None]] = []
    for (_, key, value, _), ok in zip(corpus, valid, strict=False):
        messages += [ok, (key, value)]
    messages += [valid[-1], dup_ok]
    positions = produce_raw(own_broker, REQUESTS, messages)
    expected = {
        pos: (key, value, code) for pos, (_, key, value, code) in zip(positions[1::2], corpus, strict=False)
    }
    # A tombstone with neither key nor value (a non-Python client can produce it).
    keyless = produce_keyless_tombstone(own_broker, REQUESTS, partition=positions[0][0])
    expected[keyless] = (None, None, "empty")
    after = sample_messages(5, seed=22)
    publish(own_broker, after)

    collector = Collector(own_broker, (PREDICTIONS, DLQ))
    collectors.append(collector)
    worker = Worker(worker_env(registry, own_broker, tmp_path))
    workers.append(worker)
    pid = worker.proc.pid
    worker.wait_ready()
    good_ids = valid_ids(valid) | valid_ids(after) | {"dup-ok"}
    collector.wait_for(
        lambda: set(prediction_ids(collector)) >= good_ids and collector.count(DLQ) >= len(expected),
        "every valid message scored and every malformed one dead-lettered",
    )
    collector.wait_for(lambda: (lambda c, e: c == e)(*offsets(own_broker)), "offsets committed to the end")

    dead = {}
    for record in collector.records[DLQ]:
        headers = dict(record.headers)
        dead[(int(headers["source_partition"]), int(headers["source_offset"]))] = (record, headers)
    assert set(dead) == set(expected), "exactly the malformed messages are dead-lettered"
    codes: dict[str, str] = {}
    for position, (key, value, code) in expected.items():
        record, headers = dead[position]
        assert record.key == key
        if value is None:
            assert headers["tombstone"] == b"1"
            assert record.value == (None if key is not None else b"")
        else:
            assert record.value == value, "DLQ bytes must be the original bytes"
        assert headers["error"].decode() == code
        assert headers["source_topic"] == REQUESTS.encode()
        codes[(key or b"<keyless tombstone>").decode()] = code
    assert set(prediction_ids(collector)) == good_ids
    assert worker.proc.poll() is None and worker.proc.pid == pid, "the worker never restarted"
    log = worker.output()
    assert "batch_failed" not in log and "task_crashed" not in log
    record_figures(
        "poison_messages",
        {
            "malformed": len(expected),
            "valid_scored": len(good_ids),
            "worker_restarts": 0,
            "batch_failures": 0,
        },
    )
    assert worker.terminate() == 0


# --------------------------------------------------------------------------- crash safety


CRASH_COUNT = 50_000
KILL_AT = (0.1, 0.3, 0.5)  # kill -9 once this fraction is predicted (the worker overshoots by a few k)


def test_kill_9_three_times_during_50k_loses_nothing(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    started = time.monotonic()
    messages = sample_messages(CRASH_COUNT, seed=31)
    expected = valid_ids(messages)
    collector = Collector(own_broker, (PREDICTIONS,))
    collectors.append(collector)
    # The worker drains a 50k backlog in about a second, faster than the test can aim a kill at
    # it: the test's launcher (tests/stream_worker.py) passes the worker an after_batch pause of
    # 50 ms, after a batch's outputs are acknowledged and before its offsets are committed (about
    # 5 s for the whole run). A kill then usually lands in that pause, the worst case for
    # duplicates: a whole produced batch is consumed again.
    env = worker_env(registry, own_broker, tmp_path, IRIS_BATCH_MAX_WAIT_MS="50")
    # A backlog (published up front): each kill hits a busy worker.
    publish(own_broker, messages)
    kills: list[dict[str, Any]] = []
    recoveries: list[float] = []

    def restart() -> Worker:
        worker = Worker(env, slow_worker(0.05))
        workers.append(worker)
        worker.wait_ready()
        if kills:  # seconds from the kill to the new worker's first prediction
            after = kills[-1]["at_predictions"]
            collector.wait_for(lambda: collector.count(PREDICTIONS) > after, "predictions after restart")
            recoveries.append(round(time.monotonic() - kills[-1]["killed_at"], 1))
        return worker

    for fraction in KILL_AT:
        worker = restart()
        target = int(fraction * CRASH_COUNT)
        collector.wait_for(lambda t=target: collector.count(PREDICTIONS) >= t, f"{target} predictions")  # type: ignore[misc]
        worker.proc.kill()
        worker.proc.wait(10)
        time.sleep(0.5)  # let the collector catch up with what the killed worker had produced
        kills.append({"at_predictions": collector.count(PREDICTIONS), "killed_at": time.monotonic()})
    last = restart()
    collector.wait_for(
        lambda: set(prediction_ids(collector)) >= expected, "every id predicted", deadline_s=240
    )
    collector.wait_for(lambda: (lambda c, e: c == e)(*offsets(own_broker)), "offsets committed to the end")
    ids = prediction_ids(collector)
    missing = expected - set(ids)
    duplicates = len(ids) - len(set(ids))
    runtime = time.monotonic() - started
    assert not missing, f"{len(missing)} valid ids without a prediction"
    assert set(ids) == expected
    assert kills[-1]["at_predictions"] < CRASH_COUNT, "the last kill came after the end: not mid-stream"
    record_figures(
        "crash_kill9",
        {
            "messages": CRASH_COUNT,
            "kills": len(kills),
            "predictions_at_each_kill": [k["at_predictions"] for k in kills],
            "predictions_total": len(ids),
            "duplicates_total": duplicates,
            "duplicates_per_kill": round(duplicates / len(kills), 1),
            "lost": len(missing),
            "recovery_s_kill_to_next_prediction": recoveries,
            "batch_max_records": SETTINGS.batch_max_records,
            "commit_interval_ms": SETTINGS.commit_interval_ms,
            "runtime_s": round(runtime, 1),
        },
    )
    assert last.terminate() == 0


# --------------------------------------------------------------------------- broker loss


def test_broker_lost_mid_run_turns_ready_off_then_recovers(
    registry: Any, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    proc, bootstrap = start_embedded_broker()
    port = int(bootstrap.rsplit(":", 1)[1])
    try:
        worker = Worker(worker_env(registry, bootstrap, tmp_path))
        workers.append(worker)
        worker.wait_ready()
        first = sample_messages(1000, seed=41)
        publish(bootstrap, first)
        collector = Collector(bootstrap, (PREDICTIONS,))
        collector.wait_for(lambda: set(prediction_ids(collector)) >= valid_ids(first), "first predictions")
        collector.stop()
        proc.kill()  # the broker dies (kill -9): every byte it held is gone
        proc.wait(10)
        lost_s = wait_until(lambda: ready_status(worker.port)[0] == 503, "/ready 503 after broker loss", 60)
        _, body = ready_status(worker.port)
        assert "broker" in body["detail"]
        assert worker.proc.poll() is None, "the worker keeps retrying rather than exiting"
        stop_broker(proc)
        proc, bootstrap = start_embedded_broker(port=port)
        # The embedded broker came back EMPTY (no group, no offsets, no data): aiokafka's consumer
        # then loops on GroupIdNotFound heartbeats instead of rejoining (real Kafka keeps group
        # state and answers UNKNOWN_MEMBER_ID, which makes it rejoin). The connection is back, so
        # the broker reason clears; the stuck consumer must then show on /ready, never a silent 200.
        back_s = wait_until(
            lambda: "broker not connected" not in str(ready_status(worker.port)[1]),
            "the broker reason to clear after the broker returns",
            90,
        )
        status, body = ready_status(worker.port)
        if status != 200:
            wait_until(
                lambda: "GroupIdNotFound" in str(ready_status(worker.port)[1]),
                "/ready to name the consumer's failure",
                30,
            )
            assert worker.output().count("reason=fetch_error") >= 1
        out = worker.output()
        assert "kafka_connection_lost" in out and "kafka_connection_restored" in out
        # A restarted worker consumes.
        stopping = time.monotonic()
        assert worker.terminate(timeout=15) == 0
        stop_s = time.monotonic() - stopping
        again = Worker(worker_env(registry, bootstrap, tmp_path))
        workers.append(again)
        again.wait_ready()
        second = sample_messages(500, seed=42)
        publish(bootstrap, second)
        collector = Collector(bootstrap, (PREDICTIONS,))
        collectors.append(collector)
        collector.wait_for(
            lambda: set(prediction_ids(collector)) >= valid_ids(second), "predictions after return"
        )
        record_figures(
            "broker_loss",
            {
                "not_ready_after_s": round(lost_s, 1),
                "connected_after_return_s": round(back_s, 1),
                "ready_after_return": status == 200,
                "worker_exited_on_loss": False,
                "sigterm_stop_after_loss_s": round(stop_s, 1),
            },
        )
        assert again.terminate() == 0
    finally:
        stop_broker(proc)


# --------------------------------------------------------------------------- registry outage


@contextlib.contextmanager
def mlflow_server(db_uri: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    mlflow = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen(
        [
            mlflow,
            "server",
            "--backend-store-uri",
            db_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield server
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def test_registry_down_at_start_then_appears(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    port = free_port()
    env = worker_env(registry, own_broker, tmp_path, IRIS_MODEL_POLL_SECONDS="2")
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
    worker = Worker(env)
    workers.append(worker)
    wait_until(lambda: "model_check_failed" in worker.output(), "a logged failed model check", 60)
    status, body = ready_status(worker.port)
    assert status == 503 and "no model loaded" in body["detail"]
    line = next(x for x in worker.output().splitlines() if "model_check_failed" in x)
    assert "unreachable" in line and f"127.0.0.1:{port}" in line, line
    failures_while_down = worker.output().count("model_check_failed")
    with mlflow_server(registry.tracking_uri, port):
        started = time.monotonic()
        worker.wait_ready(deadline_s=120)
        recovered_s = time.monotonic() - started
        messages = sample_messages(50, seed=51)
        publish(own_broker, messages)
        collector = Collector(own_broker, (PREDICTIONS,))
        collectors.append(collector)
        collector.wait_for(lambda: set(prediction_ids(collector)) >= valid_ids(messages), "predictions")
    # The registry is gone again: the loaded model keeps serving.
    wait_until(lambda: worker.output().count("model_check_failed") > failures_while_down, "a failed poll", 30)
    more = sample_messages(50, seed=52)
    publish(own_broker, more)
    collector.wait_for(
        lambda: set(prediction_ids(collector)) >= valid_ids(more), "predictions after registry loss"
    )
    assert ready_status(worker.port)[0] == 200
    record_figures(
        "registry_outage", {"ready_after_registry_up_s": round(recovered_s, 1), "serving_while_down": True}
    )
    assert worker.terminate() == 0


# --------------------------------------------------------------------------- hot swap under load


def test_alias_move_under_load_switches_versions_without_loss(
    fresh_registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    from ml.register import promote

    old = fresh_registry.champion_version
    new = fresh_registry.train_version("random_forest", promote=False)
    env = worker_env(fresh_registry, own_broker, tmp_path, IRIS_MODEL_POLL_SECONDS="0.5")
    worker = Worker(env)
    workers.append(worker)
    worker.wait_ready()
    messages = sample_messages(12_000, seed=61)
    collector = Collector(own_broker, (PREDICTIONS,))
    collectors.append(collector)
    sender = publish_in_background(own_broker, messages, rate=2000)
    collector.wait_for(lambda: collector.count(PREDICTIONS) >= 2000, "predictions before the swap")
    swapped_at = dt.datetime.now(dt.UTC)
    promote(fresh_registry.client, "iris-classifier", new, "champion")
    sender.join(120)
    collector.wait_for(lambda: set(prediction_ids(collector)) >= valid_ids(messages), "every prediction")
    records = list(collector.records[PREDICTIONS])
    assert len({r.key for r in records}) == len(valid_ids(messages)), "zero lost"
    versions = [orjson.loads(r.value) for r in records]
    assert {p["model_version"] for p in versions} == {old, new}
    # Per partition (one worker, processed in order) the version switches once and never back.
    for partition in {r.partition for r in records}:
        seq = [
            orjson.loads(r.value)["model_version"]
            for r in sorted(records, key=lambda r: r.offset)
            if r.partition == partition
        ]
        first_new = seq.index(new) if new in seq else len(seq)
        assert all(v == new for v in seq[first_new:]), f"partition {partition} went back to the old version"
    first_new_at = min(
        dt.datetime.fromisoformat(p["scored_at"].replace("Z", "+00:00"))
        for p in versions
        if p["model_version"] == new
    )
    last_old_at = max(
        dt.datetime.fromisoformat(p["scored_at"].replace("Z", "+00:00"))
        for p in versions
        if p["model_version"] == old
    )
    assert last_old_at <= first_new_at, "an old-version prediction scored after a new-version one"
    record_figures(
        "hot_swap_worker",
        {
            "messages": len(messages),
            "poll_seconds": 0.5,
            "switch_latency_s": round((first_new_at - swapped_at).total_seconds(), 2),
            "lost": 0,
        },
    )
    assert worker.terminate() == 0


# --------------------------------------------------------------------------- secrets


WORKER_SECRETS = ("wk-API-1c2d3e4f5a6b7c8d-SECRET", "wk-SASL-9f8e7d6c5b4a3921-SECRET")


def test_worker_never_prints_or_serves_its_secrets(
    registry: Any, own_broker: str, tmp_path: Path, workers: list[Worker], collectors: list[Collector]
) -> None:
    import httpx

    api_key, password = WORKER_SECRETS
    env = worker_env(
        registry,
        own_broker,
        tmp_path,
        IRIS_API_KEY=api_key,
        IRIS_KAFKA_SASL_PASSWORD=password,  # PLAINTEXT: unused, but set (as a misconfigured pod would)
        IRIS_LOG_LEVEL="DEBUG",
    )
    worker = Worker(env)
    workers.append(worker)
    worker.wait_ready()
    messages = sample_messages(200, bad=16, seed=71)
    publish(own_broker, messages)
    collector = Collector(own_broker, (PREDICTIONS, DLQ))
    collectors.append(collector)
    collector.wait_for(lambda: set(prediction_ids(collector)) >= valid_ids(messages), "predictions")
    bodies = [
        httpx.get(f"http://127.0.0.1:{worker.port}{path}", timeout=5).text
        for path in ("/health", "/ready", "/metrics", "/drift/latest")
    ]
    assert worker.terminate() == 0
    outputs = [
        worker.output(),
        *bodies,
        *(r.value.decode("utf-8", "replace") for r in collector.records[PREDICTIONS]),
    ]
    outputs += [repr(r.headers) for r in collector.records[DLQ]]
    for secret in WORKER_SECRETS:
        assert all(secret not in text for text in outputs), "a secret appears in worker output"
