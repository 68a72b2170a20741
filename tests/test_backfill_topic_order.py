"""A topic range is read in event-time order across partitions, so drift windows over event time
(which hold only a few windows open, ml.windows) see every partition's rows of a period together.

Read partition by partition, a day of hourly windows over two partitions made all of the second
partition late: its rows came after the first partition had moved the windows on by a day.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from consumers.backfill.topics import interleave_by_time
from ml.windows import EventTimeBuffer, EventTimeConfig

HOUR_MS = 3_600_000


def partition_tables(partition: int, hours: int, rows_per_hour: int, table_rows: int) -> Iterator[pa.Table]:
    """One partition's records in offset order (time ascending), read ``table_rows`` at a time."""
    stamps = np.arange(hours * rows_per_hour) * (HOUR_MS // rows_per_hour) + partition * 7
    for start in range(0, len(stamps), table_rows):
        chunk = stamps[start : start + table_rows]
        yield pa.table({"_ts": pa.array(chunk, pa.int64()), "partition": [partition] * len(chunk)})


def late_rows(tables: Iterator[pa.Table]) -> tuple[int, list[int]]:
    buffer = EventTimeBuffer(EventTimeConfig(window_ms=HOUR_MS, max_open_windows=8))
    sizes = []
    for table in tables:
        times = table["_ts"].to_numpy().astype(np.float64)
        sizes += [w.rows for w, _ in buffer.add(np.zeros((len(times), 4)), times)]
    sizes += [w.rows for w, _ in buffer.flush()]
    return buffer.state.late_rows, sizes


@pytest.mark.parametrize(
    ("case", "partitions", "hours", "table_rows"),
    [
        ("two partitions, a day of hourly windows", 2, 24, 100),
        ("eight partitions, tables of different sizes", 8, 30, 37),
        ("one partition (nothing to interleave)", 1, 24, 100),
    ],
)
def test_interleaved_partitions_leave_no_row_late(
    case: str, partitions: int, hours: int, table_rows: int
) -> None:
    readers = {p: partition_tables(p, hours, 100, table_rows) for p in range(partitions)}
    late, sizes = late_rows(interleave_by_time(readers))
    assert late == 0, case
    assert sizes == [100 * partitions] * hours


def test_partition_after_partition_is_the_defect_this_fixes() -> None:
    sequential = (t for p in range(2) for t in partition_tables(p, 24, 100, 100))
    late, _ = late_rows(sequential)
    assert late > 0  # the old read order: the second partition is mostly late


def test_every_table_comes_out_once_in_each_partitions_own_order() -> None:
    readers = {p: partition_tables(p, 5, 10, 3) for p in range(3)}
    out = list(interleave_by_time(readers))
    for p in range(3):
        mine = [t["_ts"].to_pylist() for t in out if t["partition"][0].as_py() == p]
        assert mine == [t["_ts"].to_pylist() for t in partition_tables(p, 5, 10, 3)]
