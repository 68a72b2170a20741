"""Pure pieces of the backfill: the offsets-for-times fallback and the drift window maths."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from consumers.backfill.drift_windows import DriftWindows, WindowSpec, row_times_ms
from consumers.backfill.topics import _offsets_for_times
from ml.errors import BadInputError

HOUR_MS = 3_600_000


class _Found:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class FakeConsumer:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def offsets_for_times(self, timestamps: dict[str, int]) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"p0": _Found(5), "p1": _Found(9)}, {"p0": 5, "p1": 9}),  # the broker knows: start there
        ({"p0": None, "p1": _Found(9)}, {"p1": 9}),  # None (embedded broker): p0 is scanned
        (RuntimeError("unsupported"), {}),  # an old broker without the API: scan everything
    ],
)
def test_offsets_for_times_falls_back_to_scanning(answer: Any, expected: dict[str, int]) -> None:
    loop = asyncio.new_event_loop()
    try:
        assert _offsets_for_times(loop, FakeConsumer(answer), ["p0", "p1"], 1000) == expected
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("text", "rows", "window_ms"),
    [("10000", 10000, None), ("30m", None, 1_800_000), ("1h", None, HOUR_MS), ("1d", None, 86_400_000)],
)
def test_window_spec_parses_rows_and_durations(text: str, rows: int | None, window_ms: int | None) -> None:
    spec = WindowSpec.parse(text)
    assert (spec.rows, spec.window_ms) == (rows, window_ms)


@pytest.mark.parametrize("text", ["0", "1w", "-5", "h", "1.5h"])
def test_window_spec_rejects_nonsense(text: str) -> None:
    with pytest.raises(BadInputError, match="--drift-window"):
        WindowSpec.parse(text)


class Recording(DriftWindows):
    """Records the windows it would report on instead of running Evidently."""

    def __init__(self, spec: WindowSpec, already_saved: int = 0, max_open_windows: int = 8) -> None:
        super().__init__(
            spec,
            pd.DataFrame(),
            params=None,
            directory=Path("unused"),
            keep=1,
            min_rows=1,
            model_version="1",
            fallback_time=datetime(2026, 1, 1, tzinfo=UTC),
            already_saved=already_saved,
            max_open_windows=max_open_windows,
        )
        self.windows: list[tuple[int, datetime, datetime]] = []

    def _emit(self, rows: Any, start: datetime, end: datetime) -> None:
        index = self.closed
        self.closed += 1
        if index >= self.already_saved:
            self.windows.append((len(rows), start, end))


def test_row_windows_cut_across_chunks_and_keep_the_last_partial_window() -> None:
    windows = Recording(WindowSpec(rows=4))
    for size in (3, 3, 5):  # 11 rows in three chunks
        windows.add(np.ones((size, 4)), None)
    windows.finish()
    assert [w[0] for w in windows.windows] == [4, 4, 3]


def test_time_windows_are_aligned_to_the_epoch_and_leave_out_rows_without_time() -> None:
    windows = Recording(WindowSpec(window_ms=HOUR_MS))
    t0 = 1_767_225_600_000  # 2026-01-01T00:00Z
    times = np.array([t0 + 1, t0 + 10, t0 + HOUR_MS - 1, t0 + HOUR_MS, np.nan, t0 + 3 * HOUR_MS])
    windows.add(np.ones((3, 4)), times[:3])  # first chunk: hour 0 only
    windows.add(np.ones((3, 4)), times[3:])  # hour 1, a row without time, hour 3
    windows.finish()
    assert [(rows, start.hour, end.hour) for rows, start, end in windows.windows] == [
        (3, 0, 1),
        (1, 1, 2),
        (1, 3, 4),
    ]


def test_windows_written_before_a_resume_are_not_written_again() -> None:
    windows = Recording(WindowSpec(rows=2), already_saved=2)
    windows.add(np.ones((6, 4)), None)
    windows.finish()
    assert len(windows.windows) == 1 and windows.closed == 3


def test_row_times_prefer_the_record_timestamp_then_sent_at() -> None:
    table = pa.table({"sent_at": ["2026-01-01T00:00:01Z", "not a time", None]})
    times = row_times_ms(table)
    assert times is not None
    assert times[0] == 1_767_225_601_000 and np.isnan(times[1:]).all()
    with_ts = table.append_column("_ts", pa.array([5, 6, 7], pa.int64()))
    assert (row_times_ms(with_ts) == [5, 6, 7]).all()
    assert row_times_ms(pa.table({"x": [1]})) is None


T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


def _feed(windows: DriftWindows, times: np.ndarray, chunk_rows: int) -> None:
    """Rows in ``chunk_rows`` chunks; column 0 holds each row's time so a window's rows can be checked."""
    for at in range(0, len(times), chunk_rows):
        part = times[at : at + chunk_rows]
        windows.add(np.column_stack([part, np.ones((len(part), 3))]), part)
    windows.finish()


class Bounds(Recording):
    """Records (rows, earliest row time, latest row time, window start, window end) per window."""

    def __init__(self, spec: WindowSpec) -> None:
        super().__init__(spec)
        self.bounds: list[tuple[int, float, float, datetime, datetime]] = []

    def _emit(self, rows: Any, start: datetime, end: datetime) -> None:
        self.bounds.append((len(rows), rows[:, 0].min(), rows[:, 0].max(), start, end))
        self.closed += 1


def test_two_partitions_interleaved_as_a_topic_range_delivers_them() -> None:
    # issue 13: 2 partitions x 100 rows/hour over 00:00-02:59; the topic range reads partition 0's
    # rows, then partition 1's, in chunks. The old engine gave 100/100/400.
    one_partition = T0 + np.arange(300) * 36_000.0  # every 36 s: 100 per hour
    windows = Bounds(WindowSpec(window_ms=HOUR_MS))
    _feed(windows, np.concatenate([one_partition, one_partition]), chunk_rows=50)
    assert [w[0] for w in windows.bounds] == [200, 200, 200]
    assert windows.late_rows == 0 and windows.untimed_rows == 0


def test_three_million_unsorted_rows_each_in_the_window_of_its_time() -> None:
    # issue 13: a 3M-row file with unsorted timestamps put 2.8M rows in the last hourly window.
    rng = np.random.default_rng(13)
    times = T0 + np.floor(rng.uniform(0, 5 * HOUR_MS, 3_000_000))
    windows = Bounds(WindowSpec(window_ms=HOUR_MS))
    _feed(windows, times, chunk_rows=100_000)
    expected = np.bincount(((times - T0) // HOUR_MS).astype(np.int64)).tolist()
    assert [w[0] for w in windows.bounds] == expected and sum(expected) == 3_000_000
    for hour, (_, earliest, latest, start, end) in enumerate(windows.bounds):
        assert T0 + hour * HOUR_MS <= earliest <= latest < T0 + (hour + 1) * HOUR_MS
        assert (start.timestamp() * 1000, end.timestamp() * 1000) == (
            T0 + hour * HOUR_MS,
            T0 + (hour + 1) * HOUR_MS,
        )
    assert windows.late_rows == 0


def test_rows_behind_the_open_windows_are_counted_late_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    windows = Recording(WindowSpec(window_ms=HOUR_MS))
    # 10 hourly windows in one chunk: the first 2 close, 8 stay open
    hours = T0 + np.arange(10, dtype=np.float64) * HOUR_MS
    windows.add(np.ones((10, 4)), hours)
    windows.add(np.ones((3, 4)), np.array([T0 + 1.0, T0 + HOUR_MS + 1.0, np.nan]))  # 2 late, 1 untimed
    windows.add(np.ones((2, 4)), None)  # no time column: untimed
    with caplog.at_level("INFO", logger="consumers.backfill.drift_windows"):
        windows.finish()
    assert [w[0] for w in windows.windows] == [1] * 10
    assert (windows.late_rows, windows.untimed_rows) == (2, 3)
    (line,) = [r for r in caplog.records if r.getMessage() == "backfill drift windows finished"]
    assert (line.late_rows, line.untimed_rows, line.windows) == (2, 3, 10)  # type: ignore[attr-defined]


def test_max_open_windows_is_configurable() -> None:
    windows = Recording(WindowSpec(window_ms=HOUR_MS), max_open_windows=2)
    windows.add(np.ones((3, 4)), T0 + np.arange(3, dtype=np.float64) * HOUR_MS)  # hour 0 closes: 2 stay open
    windows.add(np.ones((1, 4)), np.array([float(T0)]))
    windows.finish()
    assert [w[0] for w in windows.windows] == [1, 1, 1] and windows.late_rows == 1
