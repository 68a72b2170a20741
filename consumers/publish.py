"""``iris-scorer publish``: sample traffic to the requests topic.

Valid requests are drawn from per-species normal distributions (means and standard deviations of
scikit-learn's bundled Iris data), with ids ``r-<seed>-<n>``. ``shift`` moves petal length and
width by that many standard deviations (of the whole data set) — a distribution shift for the
drift monitor. ``bad`` malformed messages of varied kinds are interleaved evenly.

:func:`sample_rows` and :func:`sample_messages` are reused by the demo and the benchmark.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson

from consumers.kafka_config import build_kafka_config
from consumers.kafka_connect import explain_connect_failure
from ml.errors import IrisError
from ml.schema import FEATURE_MAX, FEATURES
from ml.settings import Settings

SHIFTED: tuple[str, ...] = ("petal_length", "petal_width")
#: Each kind of malformed message and the DLQ reason the worker gives it.
BAD_KINDS: tuple[tuple[str, str], ...] = (
    ("invalid_json", "invalid_json"),
    ("missing_field", "validation_error"),
    ("negative_value", "validation_error"),
    ("string_value", "validation_error"),
    ("nan_literal", "invalid_json"),
    ("empty_value", "empty"),
    ("not_an_object", "validation_error"),
    ("invalid_utf8", "invalid_json"),
)

Message = tuple[bytes | None, bytes]  # (key, value)


class PublishError(IrisError):
    code = "publish_failed"


def _class_stats() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    from ml.data import load_raw

    frame = load_raw()
    grouped = frame.groupby("species")[list(FEATURES)]
    means, stds = grouped.mean(), grouped.std()
    overall = frame[list(FEATURES)].std().to_numpy()
    return [str(s) for s in means.index], means.to_numpy(), stds.to_numpy(), overall


def sample_rows(
    count: int,
    *,
    shift: float = 0.0,
    seed: int = 0,
    start: int = 0,
    rate: float = 0.0,
    positions: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """``count`` valid request dicts (species chosen uniformly; features rounded to 0.01 cm).

    ``sent_at`` is now, or with a ``rate`` the time each row is due to be sent: row ``n`` (at
    ``positions[n]`` in the whole sequence, default ``n``) goes ``positions[n] / rate`` s from now.
    """
    rng = np.random.default_rng(seed)
    _, means, stds, overall = _class_stats()
    species = rng.integers(0, len(means), size=count)
    values = means[species] + rng.normal(size=(count, len(FEATURES))) * stds[species]
    if shift:
        for name in SHIFTED:
            column = FEATURES.index(name)
            values[:, column] += shift * overall[column]
    values = np.clip(np.round(values, 2), 0.01, FEATURE_MAX)
    now = datetime.now(UTC)
    if rate > 0:
        due = range(count) if positions is None else positions
        stamps = [_iso(now + timedelta(seconds=p / rate)) for p in due]
    else:
        stamps = [_iso(now)] * count
    return [
        {"id": f"r-{seed}-{start + n}", **dict(zip(FEATURES, row, strict=True)), "sent_at": sent_at}
        for n, (row, sent_at) in enumerate(zip(values.tolist(), stamps, strict=True))
    ]


def sample_labels(count: int, *, seed: int = 0, share: float = 1.0, start: int = 0) -> list[Message]:
    """Ground truth for ``share`` of :func:`sample_rows`' requests (same ``count``, ``seed`` and
    ``start``): ``{"id", "label", "labelled_at"}`` with the species each row was drawn from, keyed
    by the id, spread evenly over the traffic."""
    rng = np.random.default_rng(seed)
    names, means, _, _ = _class_stats()
    species = rng.integers(0, len(means), size=count)  # the same first draw as sample_rows
    now = _iso(datetime.now(UTC))
    chosen = [n for n in range(count) if int((n + 1) * share) > int(n * share)]
    return [
        (
            f"r-{seed}-{start + n}".encode(),
            orjson.dumps(
                {"id": f"r-{seed}-{start + n}", "label": str(names[species[n]]), "labelled_at": now}
            ),
        )
        for n in chosen
    ]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bad_message(kind: str, n: int, seed: int = 0) -> Message:
    """One malformed message of ``kind`` (see :data:`BAD_KINDS`)."""
    record_id = f"bad-{seed}-{n}"
    good: dict[str, Any] = {"id": record_id, "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}
    good["petal_width"] = 0.2
    bodies: dict[str, bytes] = {
        "invalid_json": b'{"id": "' + record_id.encode() + b'", "sepal_length": 5.1,',
        "missing_field": orjson.dumps({k: v for k, v in good.items() if k != "petal_length"}),
        "negative_value": orjson.dumps({**good, "sepal_width": -1.0}),
        "string_value": orjson.dumps({**good, "petal_width": "0.2"}),
        "nan_literal": b'{"id": "' + record_id.encode() + b'", "sepal_length": NaN, "sepal_width": 3.5, '
        b'"petal_length": 1.4, "petal_width": 0.2}',
        "empty_value": b"",
        "not_an_object": orjson.dumps([5.1, 3.5, 1.4, 0.2]),
        "invalid_utf8": b'{"id": "\xff\xfe", "sepal_length": 5.1}',
    }
    return record_id.encode(), bodies[kind]


def sample_messages(
    count: int, *, shift: float = 0.0, bad: int = 0, seed: int = 0, rate: float = 0.0
) -> list[Message]:
    """``count`` valid requests with ``bad`` malformed ones spread evenly among them (``sent_at``
    as in :func:`sample_rows`: with a ``rate``, when each message is due to be sent)."""
    total = count + bad
    # The i-th malformed message goes at position int((i + 0.5) * total / bad).
    slots = {int((i + 0.5) * total / bad) for i in range(bad)} if bad else set()
    positions = [p for p in range(total) if p not in slots]
    rows = sample_rows(count, shift=shift, seed=seed, rate=rate, positions=positions)
    valid: list[Message] = [(row["id"].encode(), orjson.dumps(row)) for row in rows]
    if not bad:
        return valid
    malformed = [bad_message(BAD_KINDS[i % len(BAD_KINDS)][0], i, seed) for i in range(bad)]
    bad_iter, valid_iter = iter(malformed), iter(valid)
    return [next(bad_iter) if position in slots else next(valid_iter) for position in range(total)]


async def send_messages(
    settings: Settings,
    messages: Sequence[Message],
    *,
    rate: float = 0.0,
    progress: bool = False,
    topic: str | None = None,
) -> int:
    """Produce ``messages`` to the requests topic (or ``topic``; ``rate`` per second, 0 = unlimited);
    wait for acks."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    kafka = build_kafka_config(settings)
    producer = AIOKafkaProducer(**kafka.producer_options(linger_ms=20))
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise PublishError(await explain_connect_failure(kafka, exc)) from None
    bar = _progress(len(messages)) if progress else None
    sent = 0
    try:
        started = settled_at = time.monotonic()
        pending: list[asyncio.Future[Any]] = []
        topic = topic or settings.requests_topic
        for index, (key, value) in enumerate(messages):
            if rate > 0:
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topic, value, key=key))
            # Wait for acks in chunks (not per message: each wait costs up to linger_ms).
            if len(pending) >= 2000 or (rate > 0 and time.monotonic() - settled_at >= 0.25):
                await _settle(pending, bar)
                sent += len(pending)
                pending = []
                settled_at = time.monotonic()
        await _settle(pending, bar)
        sent += len(pending)
    except KafkaError as exc:
        raise PublishError(
            f"publishing to {settings.requests_topic} failed: {type(exc).__name__}: {exc}."
        ) from None
    finally:
        if bar is not None:
            bar.close()
        await producer.stop()
    return sent


async def _settle(pending: list[asyncio.Future[Any]], bar: Any) -> None:
    if pending:
        await asyncio.gather(*pending)
        if bar is not None:
            bar.update(len(pending))


def _progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", desc="publish", file=sys.stderr)


def run_publish(
    settings: Settings, *, count: int, rate: float, shift: float, bad: int, seed: int, labels: float = 0.0
) -> int:
    """``iris-scorer publish``: prints one final count line (and one for the labels); 0 on success.
    With ``labels`` (a share, 0-1), the true species of that share of the valid requests is then
    published to the feedback topic: delayed labels, as a labelling process would send them."""
    messages = sample_messages(count, shift=shift, bad=bad, seed=seed, rate=rate)
    started = time.monotonic()
    sent = asyncio.run(send_messages(settings, messages, rate=rate, progress=sys.stderr.isatty()))
    elapsed = max(time.monotonic() - started, 1e-9)
    print(
        f"published {sent} messages ({count} valid, {bad} malformed, shift={shift:g}) "
        f"to {settings.requests_topic} in {elapsed:.2f} s ({sent / elapsed:.0f} msg/s)"
    )
    if labels > 0:
        truth = sample_labels(count, seed=seed, share=labels)
        asyncio.run(send_messages(settings, truth, topic=settings.feedback_topic))
        print(
            f"published {len(truth)} labels ({labels:.0%} of the valid requests) to {settings.feedback_topic}"
        )
    return 0
