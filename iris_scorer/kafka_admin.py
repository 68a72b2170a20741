"""The few admin calls the local Kafka needs (aiokafka), callable from sync code.

Each call retries transient errors (a node just killed may still be picked by the client) until
its deadline, so a test that kills a broker can ask who leads now.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from iris_scorer.kafka_jars import KafkaLocalError

T = TypeVar("T")


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion, in a helper thread if this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, asyncio.run(factory())))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


async def _with_admin(bootstrap: str, call: Callable[[Any], Awaitable[T]], timeout_s: float) -> T:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            return await call(admin)
        except (KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise KafkaLocalError(f"the Kafka admin API at {bootstrap} kept failing: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        await asyncio.sleep(0.3)


def broker_ids(bootstrap: str, timeout_s: float = 10.0) -> set[int]:
    """The node ids the cluster metadata lists as brokers now."""

    async def call(admin: Any) -> set[int]:
        return {b["node_id"] for b in (await admin.describe_cluster())["brokers"]}

    return run_async(lambda: _with_admin(bootstrap, call, timeout_s))


def partition_leaders(bootstrap: str, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """partition -> leader node id (-1: none) for ``topic``."""

    async def call(admin: Any) -> dict[int, int]:
        (described,) = await admin.describe_topics([topic])
        return {p["partition"]: p["leader"] for p in described["partitions"]}

    return run_async(lambda: _with_admin(bootstrap, call, timeout_s))


def create_topics(
    bootstrap: str, topics: Sequence[str], partitions: int, replication: int, timeout_s: float = 60.0
) -> None:
    """Create the missing ``topics`` and wait until every partition of each has a leader."""

    async def call(admin: Any) -> None:
        from aiokafka.admin import NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        missing = [t for t in topics if t not in set(await admin.list_topics())]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(t, partitions, replication) for t in missing])
        deadline = time.monotonic() + timeout_s
        while True:
            described = await admin.describe_topics(list(topics))
            if all(d["partitions"] and all(p["leader"] >= 0 for p in d["partitions"]) for d in described):
                return
            if time.monotonic() > deadline:
                raise KafkaLocalError(f"topics {', '.join(topics)} still have partitions without a leader.")
            await asyncio.sleep(0.2)

    run_async(lambda: _with_admin(bootstrap, call, timeout_s))
