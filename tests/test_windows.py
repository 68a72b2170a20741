"""Tumbling drift windows: pure decisions (parametrised edge cases) and the row holder."""

from __future__ import annotations

import numpy as np
import pytest

from ml.windows import (
    TOO_FEW_ROWS,
    WindowBuffer,
    WindowConfig,
    WindowState,
    add_rows,
    close_on_time,
)

CONFIG = WindowConfig(max_rows=10, max_seconds=60.0, min_rows=3)


def _open(rows: int, started_at_s: float = 0.0, version: str = "1", index: int = 0) -> WindowState:
    return WindowState(index=index, started_at_s=started_at_s, rows=rows, model_version=version)


# (state before, rows added, model version, now_s) -> (rows left open, [(reason, rows, batch_rows, skip)])
ADD_CASES = [
    pytest.param(WindowState(), 0, "1", 0.0, 0, [], id="empty batch on an empty window: nothing happens"),
    pytest.param(WindowState(), 4, "1", 5.0, 4, [], id="first rows open a window"),
    pytest.param(_open(9), 1, "1", 1.0, 0, [("full", 10, 1, None)], id="row exactly on the boundary closes"),
    pytest.param(_open(8), 1, "1", 1.0, 9, [], id="one row short of the boundary stays open"),
    pytest.param(
        _open(7), 5, "1", 1.0, 2, [("full", 10, 3, None)], id="batch straddles a boundary: split 3 + 2"
    ),
    pytest.param(
        WindowState(),
        25,
        "1",
        1.0,
        5,
        [("full", 10, 10, None), ("full", 10, 10, None)],
        id="one batch fills two windows and opens a third",
    ),
    pytest.param(
        WindowState(), 20, "1", 1.0, 0, [("full", 10, 10, None)] * 2, id="batch ends exactly on a boundary"
    ),
    pytest.param(
        _open(5, started_at_s=0.0), 1, "1", 60.0, 1, [("time", 5, 0, None)], id="time limit exactly reached"
    ),
    pytest.param(_open(5, started_at_s=0.0), 1, "1", 59.999, 6, [], id="just before the time limit"),
    pytest.param(
        _open(2, started_at_s=0.0),
        1,
        "1",
        61.0,
        1,
        [("time", 2, 0, TOO_FEW_ROWS)],
        id="time-closed window under min_rows is skipped",
    ),
    pytest.param(
        _open(3, started_at_s=0.0),
        0,
        "1",
        61.0,
        0,
        [("time", 3, 0, None)],
        id="exactly min_rows is evaluated",
    ),
    pytest.param(
        _open(6, version="1"), 2, "2", 1.0, 2, [("model_changed", 6, 0, None)], id="model change closes"
    ),
    pytest.param(
        _open(1, version="1"),
        2,
        "2",
        1.0,
        2,
        [("model_changed", 1, 0, TOO_FEW_ROWS)],
        id="model change with too few rows: skipped",
    ),
    pytest.param(WindowState(model_version="1"), 2, "2", 1.0, 2, [], id="model change on an empty window"),
    pytest.param(
        _open(5, started_at_s=0.0, version="1"),
        2,
        "2",
        70.0,
        2,
        [("time", 5, 0, None)],
        id="time and model change together: one close (time), new rows go to the new version",
    ),
]


@pytest.mark.parametrize(("state", "n_rows", "version", "now_s", "open_rows", "expected"), ADD_CASES)
def test_add_rows(
    state: WindowState,
    n_rows: int,
    version: str,
    now_s: float,
    open_rows: int,
    expected: list[tuple[str, int, int, str | None]],
) -> None:
    new_state, closed = add_rows(state, n_rows, version, now_s, CONFIG)
    assert [(w.reason, w.rows, w.batch_rows, w.skip_reason) for w in closed] == expected
    assert new_state.rows == open_rows
    assert new_state.model_version == version
    # every closed window takes the next sequence number
    assert [w.index for w in closed] == list(range(state.index, state.index + len(closed)))
    assert new_state.index == state.index + len(closed)
    # nothing is lost or counted twice: every row is in exactly one closed window or the open one
    assert state.rows + n_rows == sum(w.rows for w in closed) + new_state.rows


def test_add_rows_keeps_the_state_immutable_and_times_windows() -> None:
    state = _open(4, started_at_s=100.0)
    new_state, closed = add_rows(state, 6, "1", 130.0, CONFIG)
    assert state == _open(4, started_at_s=100.0)  # the input is a value: untouched
    assert (closed[0].started_at_s, closed[0].ended_at_s) == (100.0, 130.0)
    assert new_state == WindowState(index=1, started_at_s=None, rows=0, model_version="1")
    # the next rows open the next window at their own time
    after, _ = add_rows(new_state, 1, "1", 140.0, CONFIG)
    assert after.started_at_s == 140.0


TICK_CASES = [
    pytest.param(WindowState(), 1000.0, None, id="an empty window never closes on time"),
    pytest.param(_open(5, started_at_s=10.0), 69.0, None, id="one second early"),
    pytest.param(_open(5, started_at_s=10.0), 70.0, ("time", None), id="exactly max_seconds"),
    pytest.param(_open(1, started_at_s=10.0), 500.0, ("time", TOO_FEW_ROWS), id="stale and tiny: skipped"),
]


@pytest.mark.parametrize(("state", "now_s", "expected"), TICK_CASES)
def test_close_on_time(state: WindowState, now_s: float, expected: tuple[str, str | None] | None) -> None:
    new_state, closed = close_on_time(state, now_s, CONFIG)
    if expected is None:
        assert closed is None and new_state == state
    else:
        assert closed is not None
        assert (closed.reason, closed.skip_reason) == expected
        assert not new_state.is_open and new_state.index == state.index + 1


def test_min_rows_is_capped_at_max_rows() -> None:
    config = WindowConfig(max_rows=5, max_seconds=1.0, min_rows=50)
    _, closed = add_rows(WindowState(), 5, "1", 0.0, config)
    assert closed[0].evaluate  # a full window is always evaluated


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        WindowConfig(max_rows=0, max_seconds=1.0)
    with pytest.raises(ValueError):
        WindowConfig(max_rows=1, max_seconds=0.0)


def test_buffer_splits_batches_into_windows_with_their_rows() -> None:
    buffer = WindowBuffer(CONFIG)
    batch_a = np.arange(28, dtype=np.float64).reshape(7, 4)
    batch_b = np.arange(28, 48, dtype=np.float64).reshape(5, 4)
    assert buffer.add(batch_a, "1", 0.0) == []
    out = buffer.add(batch_b, "1", 1.0)
    assert len(out) == 1
    window, rows = out[0]
    assert window.rows == 10 and rows.shape == (10, 4)
    np.testing.assert_array_equal(rows, np.concatenate([batch_a, batch_b[:3]]))
    # the last two rows of batch_b open the next window; a model change closes it with them
    out = buffer.add(np.zeros((1, 4)), "2", 2.0)
    (window, rows) = out[0]
    assert (window.reason, window.model_version, window.skip_reason) == ("model_changed", "1", TOO_FEW_ROWS)
    np.testing.assert_array_equal(rows, batch_b[3:])
    assert buffer.state.rows == 1 and buffer.state.model_version == "2"


def test_buffer_tick_closes_on_time_with_all_rows() -> None:
    buffer = WindowBuffer(CONFIG)
    buffer.add(np.ones((4, 4)), "1", 0.0)
    assert buffer.tick(59.0) == []
    ((window, rows),) = buffer.tick(60.0)
    assert window.reason == "time" and window.evaluate and rows.shape == (4, 4)
    assert buffer.tick(1000.0) == []
