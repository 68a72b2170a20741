"""The adaptive micro-batcher (app.batching): coalescing, bounds, slicing and error propagation.

Deterministic: a scoring function that blocks on an event holds the first batch while more
requests queue up; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from app.batching import BatcherClosed, MicroBatcher
from ml.predict import Scores


class FakeScorer:
    """Labels each row with its first feature; blocks the first call until ``release`` is set."""

    def __init__(
        self, *, block_first: bool = False, fail: Exception | None = None, block_calls: int = 0
    ) -> None:
        self.sizes: list[int] = []
        self.blocked = max(block_calls, 1 if block_first else 0)
        self.releases = [threading.Event() for _ in range(self.blocked)]
        self.entries = [threading.Event() for _ in range(max(self.blocked, 1))]
        self.release = self.releases[0] if self.releases else threading.Event()
        self.entered = self.entries[0]
        self.fail = fail

    def __call__(self, matrix: np.ndarray) -> Scores:
        self.sizes.append(len(matrix))
        call = len(self.sizes) - 1
        if call < len(self.entries):
            self.entries[call].set()
        if call < self.blocked:
            assert self.releases[call].wait(10)
        if self.fail is not None:
            raise self.fail
        labels = np.asarray([f"row-{int(v)}" for v in matrix[:, 0]])
        return Scores(labels, np.zeros((len(matrix), 3)), None, np.zeros(len(matrix), np.intp))  # type: ignore[arg-type]


def rows(*starts: int) -> np.ndarray:
    return np.asarray([[s, 1.0, 1.0, 1.0] for s in starts], dtype=np.float64)


async def wait_entered(fake: FakeScorer) -> None:
    await asyncio.to_thread(fake.entered.wait, 10)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_lone_request_is_dispatched_alone_without_waiting_for_company() -> None:
    fake = FakeScorer()

    async def main() -> Scores:
        # A wait far longer than the test timeout: it must not apply to an idle batcher.
        batcher = MicroBatcher(fake, max_rows=64, max_wait_ms=600_000)
        await batcher.start()
        try:
            return await asyncio.wait_for(batcher.submit(rows(7)), 30)
        finally:
            await batcher.stop()

    scores = run(main())
    assert scores.labels.tolist() == ["row-7"]
    assert fake.sizes == [1]


def test_requests_queued_during_a_call_share_the_next_call_and_get_their_slices() -> None:
    fake = FakeScorer(block_first=True)

    async def main() -> list[Scores]:
        batcher = MicroBatcher(fake, max_rows=64, max_wait_ms=0)
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(rows(0)))
            await wait_entered(fake)
            others = [asyncio.create_task(batcher.submit(rows(10 * i + 1, 10 * i + 2))) for i in range(1, 6)]
            await asyncio.sleep(0)  # let them enqueue
            fake.release.set()
            return [await first, *[await t for t in others]]
        finally:
            await batcher.stop()

    results = run(main())
    assert fake.sizes == [1, 10]  # five 2-row requests coalesced into one call
    assert results[0].labels.tolist() == ["row-0"]
    for i, scores in enumerate(results[1:], start=1):
        assert scores.labels.tolist() == [f"row-{10 * i + 1}", f"row-{10 * i + 2}"]


def test_a_call_never_exceeds_max_rows_but_an_oversized_request_still_runs() -> None:
    fake = FakeScorer(block_first=True)

    async def main() -> list[Scores]:
        batcher = MicroBatcher(fake, max_rows=4, max_wait_ms=0)
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(rows(0)))
            await wait_entered(fake)
            tasks = [asyncio.create_task(batcher.submit(rows(i, i, i))) for i in range(1, 5)]
            big = asyncio.create_task(batcher.submit(rows(*range(9))))
            await asyncio.sleep(0)
            fake.release.set()
            return [await first, *[await t for t in tasks], await big]
        finally:
            await batcher.stop()

    results = run(main())
    assert fake.sizes == [1, 3, 3, 3, 3, 9]
    assert len(results[-1]) == 9


def test_under_load_the_next_batch_lingers_until_it_is_full() -> None:
    fake = FakeScorer(block_calls=2)

    async def main() -> list[Scores]:
        # Lingering is bounded by max_rows here: a full batch leaves before the (huge) wait.
        batcher = MicroBatcher(fake, max_rows=4, max_wait_ms=600_000)
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(rows(0)))
            await asyncio.to_thread(fake.entries[0].wait, 10)
            pair = [asyncio.create_task(batcher.submit(rows(i))) for i in (1, 2)]
            await asyncio.sleep(0)
            fake.releases[0].set()
            await asyncio.to_thread(fake.entries[1].wait, 10)  # the coalesced call [1, 2] is running
            lone = asyncio.create_task(batcher.submit(rows(3)))
            await asyncio.sleep(0)
            fake.releases[1].set()
            await asyncio.wait_for(asyncio.gather(first, *pair), 30)
            for _ in range(20):  # the dispatcher took row 3 and now lingers for company
                await asyncio.sleep(0)
            assert not lone.done()
            filler = asyncio.create_task(batcher.submit(rows(4, 5, 6)))
            return list(await asyncio.wait_for(asyncio.gather(lone, filler), 30))
        finally:
            await batcher.stop()

    lone, filler = run(main())
    assert fake.sizes == [1, 2, 4]
    assert lone.labels.tolist() == ["row-3"]
    assert filler.labels.tolist() == ["row-4", "row-5", "row-6"]


def test_a_scoring_error_reaches_every_request_of_the_batch() -> None:
    fake = FakeScorer(block_first=True, fail=RuntimeError("model exploded"))

    async def main() -> list[Any]:
        batcher = MicroBatcher(fake, max_rows=64, max_wait_ms=0)
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(rows(0)))
            await wait_entered(fake)
            others = [asyncio.create_task(batcher.submit(rows(i))) for i in range(3)]
            await asyncio.sleep(0)
            fake.release.set()
            return await asyncio.gather(first, *others, return_exceptions=True)
        finally:
            await batcher.stop()

    outcomes = run(main())
    assert len(outcomes) == 4
    assert all(isinstance(o, RuntimeError) and str(o) == "model exploded" for o in outcomes)
    assert fake.sizes == [1, 3]


def test_stopped_batcher_refuses_and_fails_queued_requests() -> None:
    fake = FakeScorer(block_first=True)

    async def main() -> tuple[Any, Any]:
        batcher = MicroBatcher(fake, max_rows=64, max_wait_ms=0)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(rows(0)))
        await wait_entered(fake)
        queued = asyncio.create_task(batcher.submit(rows(1)))
        await asyncio.sleep(0)
        fake.release.set()  # let the executor thread finish so stop() can join it
        await batcher.stop()
        outcome = await asyncio.gather(first, queued, return_exceptions=True)
        with pytest.raises(BatcherClosed):
            await batcher.submit(rows(2))
        return outcome[0], outcome[1]

    first, queued = run(main())
    assert isinstance(queued, BatcherClosed)  # never started: refused with a reason
    # the batch being scored when stop() came finishes, and its caller gets its own scores
    assert isinstance(first, Scores), first
    assert first.labels.tolist() == ["row-0"]


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        MicroBatcher(FakeScorer(), max_rows=0, max_wait_ms=1)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(FakeScorer(), max_rows=1, max_wait_ms=-1)


def test_enqueue_hands_back_the_future_and_refuses_at_once_when_stopped() -> None:
    """``enqueue`` is ``submit`` without its coroutine frame (the REST one-record path awaits the
    future itself): same scores, and a stopped batcher refuses before anything is queued."""
    fake = FakeScorer()

    async def main() -> tuple[list[str], list[str]]:
        batcher = MicroBatcher(fake, max_rows=64, max_wait_ms=0, inline=lambda n: True)
        with pytest.raises(BatcherClosed):
            batcher.enqueue(rows(9))  # not started yet
        await batcher.start()
        futures = [batcher.enqueue(rows(i)) for i in range(3)]
        submitted = await batcher.submit(rows(7))
        scores = await asyncio.gather(*futures)
        await batcher.stop()
        with pytest.raises(BatcherClosed):
            batcher.enqueue(rows(8))
        return [s.labels.tolist()[0] for s in scores], submitted.labels.tolist()

    enqueued, submitted = run(main())
    assert enqueued == ["row-0", "row-1", "row-2"]
    assert submitted == ["row-7"]
    assert fake.sizes == [4]  # enqueued and submitted in one loop turn: one inline call
