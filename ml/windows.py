"""Tumbling drift windows as explicit values (Quix Streams style).

A window opens at its first row and closes when one of these happens first:

- ``full``: it holds ``max_rows`` rows (a batch that straddles the boundary is split: the
  rest of the batch opens the next window);
- ``time``: ``now_s - started_at_s >= max_seconds`` (checked on every add and on ``tick``);
- ``model_changed``: rows scored by another model version arrive; the window closes and the
  next one is compared with the new version's reference.

A window closed with fewer than ``min_rows`` rows is not evaluated: it is reported with
``skip_reason="too_few_rows"``. A full window is always evaluated (``min_rows`` is capped at
``max_rows``).

The decisions are pure functions of (:class:`WindowState`, input) → (new state, closed
windows); :class:`WindowBuffer` is the small stateful holder that keeps the rows themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

CloseReason = Literal["full", "time", "model_changed"]
TOO_FEW_ROWS = "too_few_rows"


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
    to it (the holder slices the batch with it; 0 for a close that happens before the batch)."""

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
    if not state.is_open or state.started_at_s is None:
        return state, None
    if now_s - state.started_at_s < config.max_seconds:
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


class WindowBuffer:
    """Holds the open window's rows (numpy chunks) and applies the pure decisions above.

    Not thread-safe: the caller serialises calls (the drift monitor holds a lock).
    """

    def __init__(self, config: WindowConfig, state: WindowState | None = None) -> None:
        self.config = config
        self.state = state if state is not None else WindowState()
        self._chunks: list[npt.NDArray[np.float64]] = []

    def add(
        self, rows: npt.NDArray[np.float64], model_version: str | None, now_s: float
    ) -> list[tuple[ClosedWindow, npt.NDArray[np.float64]]]:
        """Append a 2-D batch; return each closed window with its rows."""
        self.state, closed = add_rows(self.state, len(rows), model_version, now_s, self.config)
        out: list[tuple[ClosedWindow, npt.NDArray[np.float64]]] = []
        cursor = 0
        for window in closed:
            if window.batch_rows:
                self._chunks.append(rows[cursor : cursor + window.batch_rows])
                cursor += window.batch_rows
            out.append((window, self._take()))
        if cursor < len(rows):
            self._chunks.append(rows[cursor:])
        return out

    def tick(self, now_s: float) -> list[tuple[ClosedWindow, npt.NDArray[np.float64]]]:
        self.state, window = close_on_time(self.state, now_s, self.config)
        return [] if window is None else [(window, self._take())]

    def _take(self) -> npt.NDArray[np.float64]:
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.empty((0, 0), dtype=np.float64)
        return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
