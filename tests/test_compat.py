"""consumers.compat holds every use of FastStream's and aiokafka's internals: these tests fail when
another version of either is installed (re-read the code each hook names, adjust the hook, then
move the pin in ``WRITTEN_FOR``), and check the structure each hook relies on."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import textwrap
from pathlib import Path

import pytest

from consumers import compat

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("package", sorted(compat.WRITTEN_FOR))
def test_the_installed_version_is_the_one_the_hooks_were_written_for(package: str) -> None:
    installed = importlib.metadata.version(package)
    assert installed == compat.WRITTEN_FOR[package], (
        f"{package} {installed} is installed; consumers/compat.py was written for "
        f"{compat.WRITTEN_FOR[package]}: re-check its hooks against {package} {installed}, then update WRITTEN_FOR"
    )


def test_the_pins_in_the_lock_are_the_versions_written_for() -> None:
    lock = (ROOT / "requirements.lock").read_text() if (ROOT / "requirements.lock").exists() else ""
    if not lock:
        pytest.skip("no requirements.lock in this checkout")
    for package, version in compat.WRITTEN_FOR.items():
        assert f"{package}=={version}" in lock, f"requirements.lock does not pin {package}=={version}"


def _source(obj: object) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(obj)))  # type: ignore[arg-type]


def test_faststream_fetches_a_batch_through_the_subscribers_get_msg() -> None:
    from faststream.kafka.subscriber.usecase import BatchSubscriber, LogicSubscriber

    loop = _source(LogicSubscriber._run_consume_loop)
    calls = [n for n in ast.walk(loop) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    assert any(c.func.attr == "get_msg" and ast.unparse(c.func.value) == "self" for c in calls), (  # type: ignore[attr-defined]
        "FastStream's consume loop no longer calls self.get_msg(consumer): wrap_batch_fetch sees nothing"
    )
    assert list(inspect.signature(BatchSubscriber.get_msg).parameters) == ["self", "consumer"]
    assert inspect.iscoroutinefunction(BatchSubscriber.get_msg)


def test_faststream_keeps_the_consumer_it_built_on_the_subscriber() -> None:
    from faststream.kafka.subscriber.usecase import LogicSubscriber

    start = ast.unparse(_source(LogicSubscriber.start))
    assert "self.consumer = " in start, (
        "subscriber_consumer() relies on LogicSubscriber.start setting .consumer"
    )


def test_aiokafka_unpacks_batches_with_the_locals_failed_position_reads() -> None:
    from aiokafka.consumer.fetcher import PartitionRecords

    unpack = _source(PartitionRecords._unpack_records)
    names = {n.id for n in ast.walk(unpack) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    assert {"tp", "next_batch"} <= names
    text = ast.unparse(unpack)
    assert "next_batch.base_offset" in text and "self.next_fetch_offset" in text


def test_failed_position_reads_the_frame_of_a_real_unpack() -> None:
    """A real PartitionRecords over a batch that does not decode: the error names its place."""
    from aiokafka.consumer.fetcher import PartitionRecords
    from aiokafka.errors import CorruptRecordException
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.memory_records import MemoryRecords
    from aiokafka.structs import TopicPartition

    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=-1,
        batch_size=1 << 20,
    )  # fmt: skip
    builder.append(0, timestamp=None, key=None, value=b"{}", headers=[])
    raw = bytearray(builder.build())
    raw[12 + 4 + 1 + 4 + 4] ^= 0xFF  # a byte inside the CRC-covered part: the CRC check fails
    records = PartitionRecords(
        TopicPartition("iris.requests", 3),
        MemoryRecords(bytes(raw)),
        [],
        41,
        None,
        None,
        True,
        "read_uncommitted",
    )
    with pytest.raises(CorruptRecordException) as raised:
        list(records)
    assert compat.failed_position(raised.value) == ("iris.requests", 3, 0)


def test_aiokafka_connects_through_create_conn_with_the_options_open_connection_passes() -> None:
    from aiokafka import conn

    parameters = inspect.signature(conn.create_conn).parameters
    for name in (
        "ssl_context",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
    ):
        assert name in parameters, (
            f"aiokafka.conn.create_conn has no {name}: consumers.compat.open_connection"
        )
    assert inspect.iscoroutinefunction(conn.create_conn)
