"""Every place the worker depends on FastStream's or aiokafka's internals, and nowhere else.

Each hook here exists because the libraries offer no public way to do it; each was written for the
versions in :data:`WRITTEN_FOR`, and ``tests/test_compat.py`` fails when another version is
installed (re-read the library code named below, adjust, then move the pin) and checks the
structure each hook relies on.

- :func:`wrap_batch_fetch`: FastStream's consume loop (``_run_consume_loop`` in
  ``faststream/kafka/subscriber/usecase.py``) calls the subscriber's ``get_msg(consumer)`` once per
  batch and swallows what it raises (an ``UnsupportedCodecError``, a ``CorruptRecordException``,
  a ``KafkaError``) after logging it in its own words. Replacing ``get_msg`` on the subscriber
  instance is the only way to see those failures.
- :func:`failed_position`: aiokafka raises those errors from ``PartitionRecords._unpack_records``
  (``aiokafka/consumer/fetcher.py``) without saying where; its frame's locals ``tp``,
  ``next_batch.base_offset`` and ``self.next_fetch_offset`` name the partition and offset.
- :func:`subscriber_consumer`: the ``AIOKafkaConsumer`` FastStream built for a subscriber (its
  ``consumer`` attribute, set in ``start``), whose ``commit`` and ``stop`` the worker routes
  through its commit throttle (:mod:`consumers.worker_commits`); FastStream's ack calls
  ``consumer.commit()``.
- :func:`open_connection`: one connection through ``aiokafka.conn.create_conn`` (undocumented), to
  learn why the clients could not connect: aiokafka's bootstrap logs the real error (a refused
  SASL password, an untrusted certificate) and raises only ``KafkaConnectionError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

#: the library versions these hooks were written for and tested with
WRITTEN_FOR = {"faststream": "0.7.8", "aiokafka": "0.14.0"}

Fetch = Callable[[Any], Awaitable[Any]]


def wrap_batch_fetch(subscriber: Any, wrap: Callable[[Fetch], Fetch]) -> None:
    """Replace the subscriber's per-batch fetch ``get_msg(consumer)`` with ``wrap(get_msg)``."""
    subscriber.get_msg = wrap(subscriber.get_msg)


def failed_position(exc: BaseException) -> tuple[str | None, int | None, int | None]:
    """(topic, partition, offset) of the record batch aiokafka could not unpack, if its frames say;
    ``(None, None, None)`` when they do not."""
    found: tuple[str | None, int | None, int | None] = (None, None, None)
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame.f_locals
        tp = frame.get("tp")
        if tp is not None and hasattr(tp, "partition") and hasattr(tp, "topic"):
            offset = getattr(frame.get("next_batch"), "base_offset", None)
            if offset is None:
                offset = getattr(frame.get("self"), "next_fetch_offset", None)
            found = (str(tp.topic), int(tp.partition), None if offset is None else int(offset))
        tb = tb.tb_next
    return found


def subscriber_consumer(subscriber: Any) -> Any | None:
    """The started subscriber's ``AIOKafkaConsumer`` (``None`` before start or in FastStream's
    in-memory test broker, which has none)."""
    return getattr(subscriber, "consumer", None)


async def open_connection(host: str, port: int, options: dict[str, Any], timeout_s: float) -> Any:
    """One aiokafka connection (TLS handshake and SASL authentication included) with the client
    options of :meth:`consumers.kafka_config.KafkaConfig.client_options`; raises what the
    handshake or the authentication raised. aiokafka's clients log that error and raise only
    ``KafkaConnectionError("Unable to bootstrap")``; ``aiokafka.conn.create_conn`` is the
    undocumented function they connect with."""
    import asyncio

    from aiokafka.conn import create_conn

    keys = (
        "ssl_context",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
    )
    return await asyncio.wait_for(
        create_conn(
            host,
            port,
            request_timeout_ms=int(timeout_s * 1000),
            **{k: options[k] for k in keys if k in options},
        ),
        timeout_s,
    )
