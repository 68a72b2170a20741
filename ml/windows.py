"""Tumbling drift windows as explicit values (Quix Streams style): one engine, two clocks.

**Processing time** (the stream; the backfill's ``--drift-window 10000``): a window opens at its
first row and closes when it holds ``max_rows`` rows (``full``; a batch straddling the boundary
is split), when ``now_s - started_at_s >= max_seconds`` (``time``, checked on add and ``tick``),
or when rows of another model version arrive (``model_changed``). A window closed with fewer
than ``min_rows`` rows is reported with ``skip_reason="too_few_rows"``; a full window is always
evaluated (``min_rows`` is capped at ``max_rows``).

**Event time** (the backfill's ``--drift-window 1h``): a row belongs to the window
``[floor(ts_ms / window_ms) * window_ms, + window_ms)`` whatever the order rows come in (a row
exactly on a boundary belongs to the later one). At most ``max_open_windows`` (default
:data:`DEFAULT_MAX_OPEN_WINDOWS`) are open; one more closes the oldest (``max_open``). With
``allowed_lateness_ms`` set, a window also closes once the newest event time seen reaches its end
plus that lateness (``watermark``). A closed window never reopens: a row before
``accepting_from_ms`` is *late*, counted in ``late_rows`` and put in no window; rows without a
time (NaN) are counted in ``untimed_rows``. A batch is one instant: its rows are judged against
the state before it, then it advances the newest event time. Assignment is vectorised.

The decisions are pure functions of (state, input) → (new state, closed windows);
:class:`WindowBuffer` and :class:`EventTimeBuffer` are the small stateful holders of the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

CloseReason = Literal["full", "time", "model_changed", "max_open", "watermark", "flushed"]
TOO_FEW_ROWS = "too_few_rows"
DEFAULT_MAX_OPEN_WINDOWS = 8

Rows = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WindowConfig:
    max_rows: int
    max_seconds: float
    min_rows: int = 1

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.min_rows < 1 or self.max_seconds <= 0:
            raise ValueError("max_rows and min_rows must be >= 1 and max_seconds > 0")

    @property
    def effective_min_rows(self) -> int:
        return min(self.min_rows, self.max_rows)


@dataclass(frozen=True, slots=True)
class WindowState:
    """The open window: its sequence number, when its first row came, how many rows it has."""

    index: int = 0
    started_at_s: float | None = None
    rows: int = 0
    model_version: str | None = None

    @property
    def is_open(self) -> bool:
        return self.rows > 0


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """A window that just closed. ``batch_rows``: how many rows of the batch being added belong
    to it (the holder slices the batch with it; 0 for a close that happens before the batch).
    Event-time windows: ``started_at_s``/``ended_at_s`` are the window's bounds."""

    index: int
    started_at_s: float
    ended_at_s: float
    rows: int
    model_version: str | None
    reason: CloseReason
    batch_rows: int
    skip_reason: str | None = None

    @property
    def evaluate(self) -> bool:
        return self.skip_reason is None


def _close(
    state: WindowState, now_s: float, reason: CloseReason, batch_rows: int, config: WindowConfig
) -> ClosedWindow:
    assert state.started_at_s is not None
    skip = None if state.rows >= config.effective_min_rows else TOO_FEW_ROWS
    return ClosedWindow(
        index=state.index,
        started_at_s=state.started_at_s,
        ended_at_s=now_s,
        rows=state.rows,
        model_version=state.model_version,
        reason=reason,
        batch_rows=batch_rows,
        skip_reason=skip,
    )


def _next(state: WindowState) -> WindowState:
    return WindowState(index=state.index + 1, model_version=state.model_version)


def close_on_time(
    state: WindowState, now_s: float, config: WindowConfig
) -> tuple[WindowState, ClosedWindow | None]:
    """Close the open window if it has lasted ``max_seconds``; an empty window never closes."""
    if state.started_at_s is None or not state.is_open or now_s - state.started_at_s < config.max_seconds:
        return state, None
    return _next(state), _close(state, now_s, "time", 0, config)


def add_rows(
    state: WindowState, n_rows: int, model_version: str | None, now_s: float, config: WindowConfig
) -> tuple[WindowState, list[ClosedWindow]]:
    """Add ``n_rows`` rows scored by ``model_version`` at ``now_s``; return the new state and the
    windows closed on the way, in order. The sum of their ``batch_rows`` is <= ``n_rows``; the
    remaining rows of the batch are in the returned (open) state."""
    if n_rows < 0:
        raise ValueError("n_rows must be >= 0")
    closed: list[ClosedWindow] = []
    state, timed_out = close_on_time(state, now_s, config)
    if timed_out is not None:
        closed.append(timed_out)
    if state.model_version != model_version:
        if state.is_open:
            closed.append(_close(state, now_s, "model_changed", 0, config))
            state = _next(state)
        state = replace(state, model_version=model_version)
    remaining = n_rows
    while remaining > 0:
        if not state.is_open:
            state = replace(state, started_at_s=now_s)
        take = min(remaining, config.max_rows - state.rows)
        state = replace(state, rows=state.rows + take)
        remaining -= take
        if state.rows >= config.max_rows:
            closed.append(_close(state, now_s, "full", take, config))
            state = _next(state)
    return state, closed


def _concat(chunks: list[Rows]) -> Rows:
    if not chunks:
        return np.empty((0, 0), dtype=np.float64)
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


class WindowBuffer:
    """Holds the open window's rows (numpy chunks) and applies the pure decisions above.

    Not thread-safe: the caller serialises calls (the drift monitor holds a lock).
    """

    def __init__(self, config: WindowConfig, state: WindowState | None = None) -> None:
        self.config = config
        self.state = state if state is not None else WindowState()
        self._chunks: list[Rows] = []

    def add(self, rows: Rows, model_version: str | None, now_s: float) -> list[tuple[ClosedWindow, Rows]]:
        """Append a 2-D batch; return each closed window with its rows."""
        self.state, closed = add_rows(self.state, len(rows), model_version, now_s, self.config)
        out: list[tuple[ClosedWindow, Rows]] = []
        cursor = 0
        for window in closed:
            if window.batch_rows:
                self._chunks.append(rows[cursor : cursor + window.batch_rows])
                cursor += window.batch_rows
            out.append((window, self._take()))
        if cursor < len(rows):
            self._chunks.append(rows[cursor:])
        return out

    def tick(self, now_s: float) -> list[tuple[ClosedWindow, Rows]]:
        self.state, window = close_on_time(self.state, now_s, self.config)
        return [] if window is None else [(window, self._take())]

    def flush(self, now_s: float) -> list[tuple[ClosedWindow, Rows]]:
        """Close the open window whatever its size or age (the end of a finite input)."""
        if not self.state.is_open:
            return []
        window = _close(self.state, now_s, "flushed", 0, self.config)
        self.state = _next(self.state)
        return [(window, self._take())]

    def _take(self) -> Rows:
        chunks, self._chunks = self._chunks, []
        return _concat(chunks)


# -- event time


@dataclass(frozen=True, slots=True)
class EventTimeConfig:
    window_ms: int
    max_open_windows: int = DEFAULT_MAX_OPEN_WINDOWS
    allowed_lateness_ms: int | None = None  # None: only ``max_open_windows`` bounds lateness
    min_rows: int = 1

    def __post_init__(self) -> None:
        lateness_ms = 0 if self.allowed_lateness_ms is None else self.allowed_lateness_ms
        if min(self.window_ms, self.max_open_windows, self.min_rows) < 1 or lateness_ms < 0:
            raise ValueError("window_ms, max_open_windows, min_rows must be >= 1, allowed_lateness_ms >= 0")


@dataclass(frozen=True, slots=True)
class EventTimeState:
    """Open windows as ``(started_at_ms, rows)``, oldest first, and the lateness bookkeeping."""

    open_windows: tuple[tuple[int, int], ...] = ()
    next_index: int = 0
    newest_ms: float = -math.inf  # the newest event time seen (the watermark)
    accepting_from_ms: float = -math.inf  # a row before this is late: its window has closed
    late_rows: int = 0
    untimed_rows: int = 0


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a batch's rows go: ``window_start_ms[i]`` for the rows where ``accepted[i]``."""

    window_start_ms: npt.NDArray[np.int64]
    accepted: npt.NDArray[np.bool_]
    closed: list[ClosedWindow]


def window_start_ms(times_ms: npt.NDArray[np.float64], window_ms: int) -> npt.NDArray[np.int64]:
    """The start of each time's window (NaN → 0; mask those out first)."""
    finite = np.where(np.isfinite(times_ms), times_ms, 0.0)
    return (np.floor(finite / window_ms) * window_ms).astype(np.int64)


def assign_times(
    state: EventTimeState, times_ms: npt.NDArray[np.float64], config: EventTimeConfig
) -> tuple[EventTimeState, Assignment]:
    """Assign a batch of event times (epoch ms, NaN: unknown) to windows; close what must close."""
    times = np.asarray(times_ms, dtype=np.float64)
    timed = np.isfinite(times)
    starts = window_start_ms(times, config.window_ms)
    late = timed & (starts < state.accepting_from_ms)
    accepted = timed & ~late
    counts = dict(state.open_windows)
    batch_starts, batch_counts = np.unique(starts[accepted], return_counts=True)
    for start, n in zip(batch_starts.tolist(), batch_counts.tolist(), strict=True):
        counts[start] = counts.get(start, 0) + n
    newest = max(state.newest_ms, float(times[timed].max(initial=-math.inf)))
    line = -math.inf  # windows starting before it close: the newest time passed their end + lateness
    if config.allowed_lateness_ms is not None and newest > -math.inf:
        line = math.floor((newest - config.allowed_lateness_ms) / config.window_ms) * config.window_ms
    order = sorted(counts)
    kept = [start for start in order if start >= line][-config.max_open_windows :]
    closing: list[tuple[int, CloseReason]] = [
        (start, "watermark" if start < line else "max_open") for start in order if start not in kept
    ]
    full = len(kept) == config.max_open_windows  # no room: nothing older than the oldest may open
    closed = _closed_windows(state.next_index, counts, closing, config)
    new_state = EventTimeState(
        open_windows=tuple((start, counts[start]) for start in kept),
        next_index=state.next_index + len(closed),
        newest_ms=newest,
        accepting_from_ms=max(
            state.accepting_from_ms, line, kept[0] if full else -math.inf, _end(closing, config)
        ),
        late_rows=state.late_rows + int(late.sum()),
        untimed_rows=state.untimed_rows + int((~timed).sum()),
    )
    return new_state, Assignment(starts, accepted, closed)


def flush_times(state: EventTimeState, config: EventTimeConfig) -> tuple[EventTimeState, list[ClosedWindow]]:
    """Close every open window, oldest first (the end of a finite input)."""
    closing: list[tuple[int, CloseReason]] = [(start, "flushed") for start, _ in state.open_windows]
    closed = _closed_windows(state.next_index, dict(state.open_windows), closing, config)
    accepting_from = max(state.accepting_from_ms, _end(closing, config))
    return replace(
        state, open_windows=(), next_index=state.next_index + len(closed), accepting_from_ms=accepting_from
    ), closed


def _end(closing: list[tuple[int, CloseReason]], config: EventTimeConfig) -> float:
    """Where the newest closing window ends: a closed window never reopens, nor anything older."""
    return closing[-1][0] + config.window_ms if closing else -math.inf


def _closed_windows(
    index: int, counts: dict[int, int], closing: list[tuple[int, CloseReason]], config: EventTimeConfig
) -> list[ClosedWindow]:
    return [
        ClosedWindow(
            index=index + i,
            started_at_s=start / 1000,
            ended_at_s=(start + config.window_ms) / 1000,
            rows=counts[start],
            model_version=None,
            reason=reason,
            batch_rows=0,
            skip_reason=None if counts[start] >= config.min_rows else TOO_FEW_ROWS,
        )
        for i, (start, reason) in enumerate(closing)
    ]


class EventTimeBuffer:
    """Holds the rows of the open event-time windows, grouped per window with one argsort."""

    def __init__(self, config: EventTimeConfig, state: EventTimeState | None = None) -> None:
        self.config = config
        self.state = state if state is not None else EventTimeState()
        self._chunks: dict[int, list[Rows]] = {}

    def add(self, rows: Rows, times_ms: npt.NDArray[np.float64]) -> list[tuple[ClosedWindow, Rows]]:
        """Add a 2-D batch with one event time per row; return each closed window with its rows."""
        if len(rows) != len(times_ms):
            raise ValueError(f"{len(rows)} rows but {len(times_ms)} times")
        self.state, assignment = assign_times(self.state, times_ms, self.config)
        starts = assignment.window_start_ms[assignment.accepted]
        order = np.argsort(starts, kind="stable")
        grouped, starts = rows[assignment.accepted][order], starts[order]
        keys, first = np.unique(starts, return_index=True)
        pieces = np.split(grouped, first[1:]) if len(keys) else []  # no row accepted: no piece
        for start, piece in zip(keys.tolist(), pieces, strict=True):
            self._chunks.setdefault(start, []).append(piece)
        return [(w, self._take(w)) for w in assignment.closed]

    def flush(self) -> list[tuple[ClosedWindow, Rows]]:
        self.state, closed = flush_times(self.state, self.config)
        return [(w, self._take(w)) for w in closed]

    def _take(self, window: ClosedWindow) -> Rows:
        return _concat(self._chunks.pop(round(window.started_at_s * 1000), []))
