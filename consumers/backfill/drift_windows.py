"""Drift over history for the backfill: one report per window of scored rows.

``--drift-window 10000`` makes windows of 10,000 rows; ``--drift-window 1h`` (``s``, ``m``, ``h``,
``d``) makes tumbling event-time windows aligned to the epoch, over ``sent_at`` (files) or the
record timestamp (topics). Both are :mod:`ml.windows` (the stream's engine): a row goes to the
window its time belongs to whatever the input order (interleaved partitions, unsorted files), with
at most ``IRIS_DRIFT_MAX_OPEN_WINDOWS`` windows open (default 8); a row whose window has already
closed is late: counted in :attr:`DriftWindows.late_rows`, put in no window. Rows without a time
are left out of time windows and counted in :attr:`DriftWindows.untimed_rows`. Windows with fewer
than ``IRIS_DRIFT_MIN_ROWS`` rows are skipped.

Each window is compared with the model's reference data by :func:`ml.drift.evaluate_drift` and
saved by :func:`ml.drift_reports.save_report` (HTML and JSON).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from ml.errors import BadInputError
from ml.logs import log_event
from ml.schema import FEATURES
from ml.windows import (
    DEFAULT_MAX_OPEN_WINDOWS,
    ClosedWindow,
    EventTimeBuffer,
    EventTimeConfig,
    WindowBuffer,
    WindowConfig,
)

logger = logging.getLogger(__name__)

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(?P<n>\d+)(?P<unit>[smhd])$")


@dataclass(frozen=True)
class WindowSpec:
    rows: int | None = None
    window_ms: int | None = None

    @classmethod
    def parse(cls, text: str) -> WindowSpec:
        text = text.strip().lower()
        if text.isdigit() and int(text) > 0:
            return cls(rows=int(text))
        match = _DURATION.match(text)
        if match and int(match["n"]) > 0:
            return cls(window_ms=int(match["n"]) * _UNITS_S[match["unit"]] * 1000)
        raise BadInputError(
            f"--drift-window {text!r} must be a row count (10000) or a duration (30m, 1h, 1d)."
        )


def row_times_ms(table: pa.Table) -> npt.NDArray[np.float64] | None:
    """Epoch milliseconds per row (NaN where unknown): the record timestamp, else ``sent_at``."""
    if "_ts" in table.column_names:
        return np.asarray(table["_ts"].to_numpy(zero_copy_only=False), dtype=np.float64)
    if "sent_at" in table.column_names:
        parsed = pd.to_datetime(
            pd.Series(table["sent_at"].to_numpy(zero_copy_only=False)),
            utc=True,
            format="ISO8601",
            errors="coerce",
        )
        ms = parsed.to_numpy(dtype="datetime64[ms]").astype(np.int64).astype(np.float64)
        ms[parsed.isna().to_numpy()] = np.nan
        return np.asarray(ms, dtype=np.float64)
    return None


def _moment(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class DriftWindows:
    """Puts scored rows into windows (:mod:`ml.windows`) and writes a report per closed window."""

    def __init__(
        self,
        spec: WindowSpec,
        reference: pd.DataFrame,
        *,
        params: Any,
        directory: Path,
        keep: int,
        min_rows: int,
        model_version: str,
        fallback_time: datetime,
        already_saved: int = 0,
        max_open_windows: int = DEFAULT_MAX_OPEN_WINDOWS,
        workspace_dir: Path | None = None,
        allowed_lateness_ms: int | None = None,
    ) -> None:
        self.spec = spec
        self.workspace_dir = workspace_dir
        self._workspace: Any = None  # opened on the first window saved
        self.reference = reference
        self.params = params
        self.directory = directory
        self.keep = keep
        self.min_rows = min_rows
        self.model_version = model_version
        self.fallback_time = fallback_time
        self.already_saved = already_saved
        self.closed = 0
        self.reports: list[str] = []
        self._by_rows: WindowBuffer | None = None
        self._by_time: EventTimeBuffer | None = None
        if spec.rows is not None:  # the times ride along as a last column, for the report's bounds
            self._by_rows = WindowBuffer(WindowConfig(max_rows=spec.rows, max_seconds=math.inf))
        else:
            assert spec.window_ms is not None
            self._by_time = EventTimeBuffer(
                EventTimeConfig(
                    window_ms=spec.window_ms,
                    max_open_windows=max_open_windows,
                    allowed_lateness_ms=allowed_lateness_ms,
                )
            )

    @property
    def late_rows(self) -> int:
        """Rows left out of time windows because their window had already closed."""
        return self._by_time.state.late_rows if self._by_time is not None else 0

    @property
    def untimed_rows(self) -> int:
        """Rows left out of time windows because they have no time."""
        return self._by_time.state.untimed_rows if self._by_time is not None else 0

    def add(self, matrix: npt.NDArray[np.float64], times_ms: npt.NDArray[np.float64] | None) -> None:
        times = times_ms if times_ms is not None else np.full(len(matrix), np.nan)
        if self._by_rows is not None:
            self._emit_rows(self._by_rows.add(np.column_stack([matrix, times]), self.model_version, 0.0))
        elif self._by_time is not None:
            self._emit_times(self._by_time.add(matrix, times))

    def finish(self) -> None:
        if self._by_rows is not None:
            self._emit_rows(self._by_rows.flush(0.0))
        elif self._by_time is not None:
            self._emit_times(self._by_time.flush())
            log_event(
                logger,
                "backfill drift windows finished",
                windows=self.closed,
                late_rows=self.late_rows,
                untimed_rows=self.untimed_rows,
                max_open_windows=self._by_time.config.max_open_windows,
            )

    def _emit_rows(self, closed: list[tuple[ClosedWindow, npt.NDArray[np.float64]]]) -> None:
        for _, block in closed:
            rows, times = block[:, : len(FEATURES)], block[:, len(FEATURES)]
            finite = times[np.isfinite(times)]
            if len(finite):
                start, end = _moment(float(finite.min())), _moment(float(finite.max()))
            else:
                start = end = self.fallback_time
            self._emit(rows, start, end)

    def _emit_times(self, closed: list[tuple[ClosedWindow, npt.NDArray[np.float64]]]) -> None:
        for window, rows in closed:
            start = datetime.fromtimestamp(window.started_at_s, tz=UTC)
            self._emit(rows, start, datetime.fromtimestamp(window.ended_at_s, tz=UTC))

    def _emit(self, rows: npt.NDArray[np.float64], start: datetime, end: datetime) -> None:
        from ml.drift import evaluate_drift
        from ml.drift_reports import DriftWorkspace, report_stem, save_report, window_labels

        index = self.closed
        self.closed += 1
        if index < self.already_saved:  # written before a resume
            return
        if len(rows) < self.min_rows:
            log_event(logger, "backfill drift window skipped", rows=len(rows), min_rows=self.min_rows)
            return
        metadata, tags = window_labels(report_stem(start, index), start, end, self.model_version, "backfill")
        result = evaluate_drift(
            self.reference,
            pd.DataFrame(rows, columns=list(FEATURES)),
            self.params,
            reference_name="the model's reference data",
            current_name=f"backfill window {index}",
            metadata=metadata,
            tags=tags,
        )
        html, _ = save_report(
            result,
            self.directory,
            window_start=start,
            window_end=end,
            keep=self.keep,
            index=index,
            model_version=self.model_version,
            source="backfill",
        )
        self.reports.append(str(html))
        if self.workspace_dir is not None:  # beside the stream's windows, tagged "backfill"
            if self._workspace is None:
                self._workspace = DriftWorkspace(self.workspace_dir, keep=self.keep)
            self._workspace.add(result, name=html.stem)
        log_event(
            logger,
            "backfill drift window",
            index=index,
            rows=len(rows),
            dataset_drift=result.dataset_drift,
            drifted_share=round(result.drifted_share, 3),
            report=str(html),
        )
