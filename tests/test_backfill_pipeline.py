"""The backfill's reader and writer threads: order kept, memory bounded, errors not lost; and the
backfill command's fast exit still flushes its output and keeps its exit status."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.backfill.pipeline import OrderedWriter, prefetch

CLI = Path(sys.executable).parent / "iris-scorer"


def test_prefetch_yields_every_item_in_order() -> None:
    assert list(prefetch(iter(range(1000)), depth=3)) == list(range(1000))


def test_prefetch_reads_at_most_depth_items_ahead() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    with contextlib.closing(prefetch(source(), depth=2)) as items:
        assert next(items) == 0
        time.sleep(0.3)  # give the reader every chance to run ahead
        # item 0 consumed, items 1-2 in the queue, item 3 produced and waiting for room
        assert len(produced) <= 4


def test_prefetch_raises_the_readers_error_where_it_happened() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad chunk 3")

    seen: list[int] = []
    with pytest.raises(ValueError, match="bad chunk 3"):
        for item in prefetch(source()):
            seen.append(item)
    assert seen == [1, 2]


def test_closing_prefetch_early_stops_the_reader_thread() -> None:
    def endless() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    with contextlib.closing(prefetch(endless())) as items:
        assert next(items) == 0
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_ordered_writer_runs_jobs_one_at_a_time_in_submission_order() -> None:
    done: list[int] = []
    running = 0
    overlap = False

    def job(i: int) -> None:
        nonlocal running, overlap
        running += 1
        overlap |= running > 1
        time.sleep(0.001 * (i % 3))  # uneven job lengths
        done.append(i)
        running -= 1

    writer = OrderedWriter(depth=2)
    for i in range(50):
        writer.submit(job, i)
    writer.drain()
    writer.close()
    assert done == list(range(50))
    assert not overlap


def test_ordered_writer_bounds_the_jobs_in_flight() -> None:
    release = threading.Event()
    writer = OrderedWriter(depth=2)
    writer.submit(release.wait)
    writer.submit(release.wait)
    blocked = threading.Thread(target=writer.submit, args=(release.wait,))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a third job was accepted while two were pending"
    release.set()
    blocked.join(5)
    assert not blocked.is_alive()
    writer.drain()
    writer.close()


def test_ordered_writer_raises_a_failed_job_on_the_next_submit_or_drain() -> None:
    def fail() -> None:
        raise OSError("disk full")

    writer = OrderedWriter(depth=1)
    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.submit(lambda: None)
    writer.close()

    writer = OrderedWriter(depth=4)
    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.drain()
    writer.close()


def test_ordered_writer_close_waits_for_pending_jobs_without_raising() -> None:
    done: list[int] = []

    def slow(i: int) -> None:
        time.sleep(0.05)
        done.append(i)

    writer = OrderedWriter(depth=3)
    writer.submit(lambda: 1 / 0)
    writer.submit(slow, 1)
    writer.submit(slow, 2)
    writer.close()
    assert done == [1, 2]


@pytest.mark.parametrize(
    ("args", "status", "stream", "needle"),
    [
        (["backfill", "--help"], 0, "stdout", "--input"),
        (
            ["backfill", "--input", "/nonexistent/in.parquet", "--output", "x.parquet"],
            2,
            "stderr",
            "nonexistent",
        ),
    ],
)
def test_backfill_fast_exit_keeps_output_and_status(
    tmp_path: Path, args: list[str], status: int, stream: str, needle: str
) -> None:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'none.db'}")
    done = subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert done.returncode == status, done.stderr
    assert needle in getattr(done, stream)
