"""Adaptive micro-batching: concurrent small scoring requests share one scoring call.

Like BentoML's and MLServer's adaptive batchers, but small. Callers ``await batcher.submit(rows)``
from the event loop; one dispatcher task drains the queue into a single call of the scoring
function (run on one worker thread, so CPU work never blocks the loop) and hands each caller
its own slice of the result.

Latency policy: a request that arrives while the batcher is idle is dispatched at once; while a
batch is being scored, newcomers queue up and leave together in the next call (at most
``max_rows`` rows). Only when the previous call was itself coalesced (the service is under
concurrent load) does the dispatcher linger up to ``max_wait_ms`` for more rows, so a lone
request is never delayed by the wait.

Cheap calls skip the thread: when ``inline(rows)`` says a call is cheap (the model has a NumPy
form, :mod:`ml.compiled`, and the request is small) and no batch is on the thread, the request
joins an inline batch that is scored on the event loop itself in the loop's next turn
(``call_soon``). A few microseconds of arithmetic cost less than the hop to the worker thread and
back (about 50-100 µs of wake-ups); requests that arrive in the same turn (one ``select`` of
uvicorn's sockets) still share one scoring call, so the per-call bookkeeping is amortised.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ml.predict import Scores

ScoreFn = Callable[[npt.NDArray[np.float64]], Scores]
Inline = Callable[[int], bool]
#: how long ``stop`` waits for the batch being scored (one scoring call: milliseconds normally)
STOP_GRACE_S = 5.0


@dataclass(slots=True)
class _Pending:
    rows: npt.NDArray[np.float64]
    future: asyncio.Future[Scores]


class BatcherClosed(RuntimeError):
    """``submit`` was called on a batcher that is not running."""


class MicroBatcher:
    """Coalesces concurrent ``submit`` calls into one call of ``score_fn``.

    ``score_fn`` takes an (n, 4) matrix and returns :class:`~ml.predict.Scores` for the n rows,
    all from one model version (e.g. ``lambda m: scorer.score(m, "rest")``). An exception in
    it is raised in every request of that batch.
    """

    def __init__(
        self, score_fn: ScoreFn, *, max_rows: int, max_wait_ms: float, inline: Inline | None = None
    ) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self._score_fn = score_fn
        self._inline = inline
        self._busy = False  # a batch is being scored on the worker thread
        self.max_rows = max_rows
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._coalesced_last = False
        self._closing = False
        self._inline_queue: list[_Pending] = []
        self._inline_scheduled = False
        #: How many scoring calls were made and how many requests they served (for tests and logs);
        #: ``inline_calls`` of them on the event loop.
        self.calls = 0
        self.requests = 0
        self.inline_calls = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the dispatcher task on the running loop."""
        if self.running:
            return
        self._wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="microbatch")
        self._task = self._loop.create_task(self._dispatch_forever(), name="microbatcher")

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop dispatching: the batch being scored finishes and its callers get their scores;
        requests still queued fail with :class:`BatcherClosed`. A scoring call still running after
        ``grace_s`` is abandoned (its callers get :class:`BatcherClosed` too)."""
        task, self._task = self._task, None
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), grace_s)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._flush_inline()  # requests already accepted on the loop are scored, not dropped
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed("the scoring service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, rows: npt.NDArray[np.float64]) -> Scores:
        """Score ``rows`` (shape (n, 4)) in the next batch; returns exactly their scores."""
        return await self.enqueue(rows)

    def enqueue(self, rows: npt.NDArray[np.float64]) -> asyncio.Future[Scores]:
        """:meth:`submit` without the coroutine: the future of ``rows``' scores, for a caller that
        awaits it itself (:class:`BatcherClosed` is raised at once)."""
        wakeup, loop = self._wakeup, self._loop
        if wakeup is None or loop is None or self._task is None or self._task.done():
            raise BatcherClosed("the micro-batcher is not running")
        future: asyncio.Future[Scores] = loop.create_future()
        if self._inline is not None and not self._busy and not self._queue and self._inline(len(rows)):
            self._inline_queue.append(_Pending(rows, future))
            if not self._inline_scheduled:
                self._inline_scheduled = True
                loop.call_soon(self._flush_inline)
            return future
        self._queue.append(_Pending(rows, future))
        wakeup.set()
        return future

    def _flush_inline(self) -> None:
        """Score every request that joined the inline batch during this loop turn, on the loop."""
        self._inline_scheduled = False
        pending, self._inline_queue = self._inline_queue, []
        batch = [p for p in pending if not p.future.done()]
        start = 0
        while start < len(batch):  # chunks of at most max_rows rows (always at least one request)
            end, rows = start, 0
            while end < len(batch) and (end == start or rows + len(batch[end].rows) <= self.max_rows):
                rows += len(batch[end].rows)
                end += 1
            chunk = batch[start:end]
            self.inline_calls += 1
            self._deliver(chunk, self._call(chunk))
            start = end

    def _call(self, batch: list[_Pending]) -> Scores | BaseException:
        self.calls += 1
        self.requests += len(batch)
        matrix = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
        try:
            return self._score_fn(matrix)
        except Exception as exc:  # every waiting request of the batch gets the scoring error
            return exc

    @staticmethod
    def _deliver(batch: list[_Pending], scores: Scores | BaseException) -> None:
        if isinstance(scores, BaseException):
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(scores)
            return
        start = 0
        for pending in batch:
            end = start + len(pending.rows)
            if not pending.future.done():
                pending.future.set_result(
                    scores
                    if len(batch) == 1
                    else Scores(
                        scores.labels[start:end],
                        scores.probabilities[start:end],
                        scores.model,
                        scores.index[start:end],
                    )
                )
            start = end

    async def _dispatch_forever(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while not self._closing:
            if not self._queue:
                self._wakeup.clear()
                self._coalesced_last = False
                await self._wakeup.wait()
                if self._closing:
                    return
            batch, rows = self._take()
            if self._coalesced_last and rows < self.max_rows and self.max_wait_s > 0:
                batch, rows = await self._linger(batch, rows)
            await self._run(loop, batch)

    def _take(self, batch: list[_Pending] | None = None, rows: int = 0) -> tuple[list[_Pending], int]:
        """Move queued requests into ``batch`` while they fit in ``max_rows`` (always at least one)."""
        batch = [] if batch is None else batch
        queue = self._queue
        while queue:
            size = len(queue[0].rows)
            if batch and rows + size > self.max_rows:
                break
            pending = queue.popleft()
            if pending.future.done():  # its caller went away (cancelled): nothing to score
                continue
            batch.append(pending)
            rows += size
        return batch, rows

    async def _linger(self, batch: list[_Pending], rows: int) -> tuple[list[_Pending], int]:
        assert self._wakeup is not None
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_rows and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            batch, rows = self._take(batch, rows)
            if self._queue:  # the next request does not fit: this batch is full
                break
        return batch, rows

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        if not batch:
            return
        self._coalesced_last = len(batch) > 1
        self._busy = True
        try:
            scores = await loop.run_in_executor(self._executor, self._call, batch)
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(BatcherClosed("the scoring service is shutting down"))
            raise
        finally:
            self._busy = False
        self._deliver(batch, scores)
