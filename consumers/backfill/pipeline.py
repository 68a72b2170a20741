"""Overlap the backfill's three stages: read the next chunk, score this one, write the last one.

Reading (pyarrow's CSV and Parquet decoders) and writing (Parquet encoding, Arrow IPC, CSV) run
in C++ with the GIL released, so one reader thread (which also validates, see
:func:`consumers.backfill.run.with_checks`) and one writer thread keep both cores busy while the main thread
scores. Both queues are short (``depth`` chunks), so memory
stays bounded by a few chunks whatever the input size, and order is kept: chunks come out of
:func:`prefetch` in input order and :class:`OrderedWriter` runs its jobs one at a time in
submission order (the manifest never names a part before the parts before it).

Errors are not lost: an exception in the reader is raised by the consumer at the position where
it happened; one in the writer is raised by the next ``submit`` or by ``drain``.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 2) -> Generator[T, None, None]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead of the consumer."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failure(exc))

    thread = threading.Thread(target=produce, name="backfill-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class OrderedWriter:
    """Runs jobs one at a time, in order, on one thread; at most ``depth`` wait or run at once."""

    def __init__(self, depth: int = 2) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill-writer")
        self._pending: deque[Future[Any]] = deque()
        self._depth = depth

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        while len(self._pending) >= self._depth:
            self._pending.popleft().result()
        self._pending.append(self._executor.submit(job, *args))

    def drain(self) -> None:
        """Wait for every job; raise the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Wait for every job without raising (used on the way out of a failed run)."""
        for future in self._pending:
            future.exception()
        self._pending.clear()
        self._executor.shutdown(wait=True)
