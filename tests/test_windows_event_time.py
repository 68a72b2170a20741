"""Event-time tumbling windows (:mod:`ml.windows`): pure assignment as parametrised tables, the
row holder, and the invariant that every row lands in exactly one window or is counted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.settings import Settings
from ml.windows import (
    DEFAULT_MAX_OPEN_WINDOWS,
    TOO_FEW_ROWS,
    EventTimeBuffer,
    EventTimeConfig,
    EventTimeState,
    WindowBuffer,
    WindowConfig,
    assign_times,
    flush_times,
    window_start_ms,
)

NAN = math.nan
W = 10  # window_ms in the tables: windows [0, 10), [10, 20), ...


def _run(
    batches: list[list[float]], config: EventTimeConfig
) -> tuple[list[tuple[int, int, str]], EventTimeState]:
    """Feed the batches, flush, return every closed window as (start_ms, rows, reason) in order."""
    state, closed = EventTimeState(), []
    for batch in batches:
        state, assignment = assign_times(state, np.array(batch, dtype=np.float64), config)
        closed += assignment.closed
    state, flushed = flush_times(state, config)
    closed += flushed
    assert [w.index for w in closed] == list(range(len(closed)))  # sequence numbers in close order
    return [(round(w.started_at_s * 1000), w.rows, w.reason) for w in closed], state


# (batches of event times in ms, max_open_windows, allowed_lateness_ms)
#   -> (closed windows (start_ms, rows, reason), late rows, untimed rows)
CASES = [
    pytest.param([], 3, None, [], 0, 0, id="no batches: no windows"),
    pytest.param([[], [5.0], []], 3, None, [(0, 1, "flushed")], 0, 0, id="empty batches change nothing"),
    pytest.param(
        [[9.0, 10.0]],
        3,
        None,
        [(0, 1, "flushed"), (10, 1, "flushed")],
        0,
        0,
        id="a row exactly on a boundary belongs to the later window",
    ),
    pytest.param([[-1.0]], 3, None, [(-10, 1, "flushed")], 0, 0, id="before the epoch: floors down"),
    pytest.param(
        [[25.0, 3.0, 14.0, 7.0], [1.0, 28.0]],
        3,
        None,
        [(0, 3, "flushed"), (10, 1, "flushed"), (20, 2, "flushed")],
        0,
        0,
        id="unsorted input: each row goes to its own window",
    ),
    pytest.param(
        # partition 0 then partition 1, each over the same 3 windows, as a topic range delivers them
        [[0.0, 5.0], [12.0, 15.0], [21.0, 29.0], [1.0, 6.0], [11.0, 19.0], [20.0, 22.0]],
        3,
        None,
        [(0, 4, "flushed"), (10, 4, "flushed"), (20, 4, "flushed")],
        0,
        0,
        id="two partitions interleaved: windows as if sorted",
    ),
    pytest.param(
        [[NAN, 5.0, NAN], [NAN]],
        3,
        None,
        [(0, 1, "flushed")],
        0,
        3,
        id="NaN times are left out of windows and counted",
    ),
    pytest.param(
        [[0.0, 10.0, 20.0], [30.0], [5.0, 15.0]],
        3,
        None,
        [(0, 1, "max_open"), (10, 2, "flushed"), (20, 1, "flushed"), (30, 1, "flushed")],
        1,
        0,
        id="K windows open then one more: the oldest closes; its late row is counted, not moved",
    ),
    pytest.param(
        [[10.0, 20.0, 30.0], [5.0]],
        3,
        None,
        [(10, 1, "flushed"), (20, 1, "flushed"), (30, 1, "flushed")],
        1,
        0,
        id="K windows open: a row older than the oldest open window is late",
    ),
    pytest.param(
        [[0.0, 10.0, 20.0, 30.0, 40.0, 41.0]],
        3,
        None,
        [(0, 1, "max_open"), (10, 1, "max_open"), (20, 1, "flushed"), (30, 1, "flushed"), (40, 2, "flushed")],
        0,
        0,
        id="one batch over more than K windows: the oldest close with their rows, none late",
    ),
    pytest.param(
        [[25.0], [12.0]],
        8,
        10,
        [(10, 1, "flushed"), (20, 1, "flushed")],
        0,
        0,
        id="late within allowed_lateness_ms: joins its still open window",
    ),
    pytest.param(
        [[5.0], [35.0], [12.0]],
        8,
        10,
        [(0, 1, "watermark"), (30, 1, "flushed")],
        1,
        0,
        id="late beyond allowed_lateness_ms: its window closed on the watermark, the row is counted",
    ),
    pytest.param(
        [[5.0, 35.0]],
        8,
        10,
        [(0, 1, "watermark"), (30, 1, "flushed")],
        0,
        0,
        id="a batch is one instant: its rows are judged before it moves the watermark",
    ),
]


@pytest.mark.parametrize(("batches", "max_open", "lateness_ms", "expected", "late", "untimed"), CASES)
def test_event_time_windows(
    batches: list[list[float]],
    max_open: int,
    lateness_ms: int | None,
    expected: list[tuple[int, int, str]],
    late: int,
    untimed: int,
) -> None:
    config = EventTimeConfig(window_ms=W, max_open_windows=max_open, allowed_lateness_ms=lateness_ms)
    closed, state = _run(batches, config)
    assert closed == expected
    assert (state.late_rows, state.untimed_rows) == (late, untimed)
    # nothing lost or counted twice: every row is in one window, late or untimed
    assert sum(rows for _, rows, _ in closed) + late + untimed == sum(len(b) for b in batches)


def test_the_state_is_a_plain_value_and_the_input_is_untouched() -> None:
    config = EventTimeConfig(window_ms=W, max_open_windows=2)
    state = EventTimeState()
    after, assignment = assign_times(state, np.array([3.0, 17.0, 18.0]), config)
    assert state == EventTimeState()
    assert after == EventTimeState(
        open_windows=((0, 1), (10, 2)), next_index=0, newest_ms=18.0, accepting_from_ms=0
    )
    assert assignment.window_start_ms.tolist() == [0, 10, 10] and assignment.accepted.all()


def test_min_rows_and_window_bounds_of_a_closed_window() -> None:
    config = EventTimeConfig(window_ms=3_600_000, max_open_windows=1, min_rows=2)
    _, assignment = assign_times(EventTimeState(), np.array([1.0, 3_600_000.0]), config)
    (window,) = assignment.closed
    assert (window.started_at_s, window.ended_at_s, window.rows) == (0.0, 3600.0, 1)
    assert window.skip_reason == TOO_FEW_ROWS


def test_window_start_is_floor_of_time_over_window() -> None:
    times = np.array([0.0, 9.999, 10.0, -0.5, NAN])
    assert window_start_ms(times, W).tolist() == [0, 0, 10, -10, 0]


def test_buffer_groups_unsorted_rows_into_their_windows() -> None:
    buffer = EventTimeBuffer(EventTimeConfig(window_ms=W, max_open_windows=2))
    times = np.array([21.0, 3.0, 12.0, 7.0, NAN, 14.0])
    rows = np.column_stack([times, np.arange(6.0), np.zeros(6), np.zeros(6)])
    ((first, first_rows),) = buffer.add(rows, times)  # three windows in one batch, two may stay open
    assert (first.reason, first.rows) == ("max_open", 2)
    np.testing.assert_array_equal(first_rows, rows[[1, 3]])  # in arrival order within the window
    closed = buffer.flush()
    assert [(w.started_at_s * 1000, w.rows) for w, _ in closed] == [(10.0, 2), (20.0, 1)]
    np.testing.assert_array_equal(closed[0][1], rows[[2, 5]])
    assert buffer.state.untimed_rows == 1 and buffer.state.open_windows == ()
    with pytest.raises(ValueError):
        buffer.add(rows, times[:2])


def test_defaults_and_config_checks() -> None:
    assert EventTimeConfig(window_ms=1).max_open_windows == DEFAULT_MAX_OPEN_WINDOWS == 8
    assert EventTimeConfig(window_ms=1).allowed_lateness_ms is None
    assert Settings.model_fields["drift_max_open_windows"].default == DEFAULT_MAX_OPEN_WINDOWS
    for bad in (
        {"window_ms": 0},
        {"window_ms": 1, "max_open_windows": 0},
        {"window_ms": 1, "allowed_lateness_ms": -1},
    ):
        with pytest.raises(ValueError):
            EventTimeConfig(**bad)


# Row-count windows (backfill --drift-window N) are the stream's engine without a time limit.
# (batches of rows, model version per batch) -> (rows per closed window, reason) incl. the flush
ROW_CASES = [
    pytest.param([3, 3, 5], ["1"] * 3, [(4, "full"), (4, "full"), (3, "flushed")], id="cut across batches"),
    pytest.param([8], ["1"], [(4, "full"), (4, "full")], id="a batch ends exactly on a boundary"),
    pytest.param([0, 2, 0], ["1"] * 3, [(2, "flushed")], id="empty batches"),
    pytest.param(
        [2, 1], ["1", "2"], [(2, "model_changed"), (1, "flushed")], id="model version change closes"
    ),
]


@pytest.mark.parametrize(("sizes", "versions", "expected"), ROW_CASES)
def test_row_count_windows(sizes: list[int], versions: list[str], expected: list[tuple[int, str]]) -> None:
    buffer = WindowBuffer(WindowConfig(max_rows=4, max_seconds=math.inf))
    closed = []
    for i, (size, version) in enumerate(zip(sizes, versions, strict=True)):
        closed += buffer.add(np.ones((size, 4)), version, float(i * 1_000_000))  # never closes on time
    closed += buffer.flush(0.0)
    assert [(w.rows, w.reason) for w, _ in closed] == expected
    assert [len(rows) for _, rows in closed] == [n for n, _ in expected]
