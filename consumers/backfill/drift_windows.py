"""Drift over history for the backfill: one report per window of scored rows.

``--drift-window 10000`` makes windows of 10,000 rows; ``--drift-window 1h`` (``s``, ``m``, ``h``,
``d``) makes tumbling time windows aligned to the epoch, over ``sent_at`` (files) or the record
timestamp (topics). Time windows assume the input is roughly in time order: a window closes when a
row of a later window arrives, and a late row joins the open window. Rows without a time are left
out of time windows. Windows with fewer than ``IRIS_DRIFT_MIN_ROWS`` rows are skipped.

Each window is compared with the model's reference data by :func:`ml.drift.evaluate_drift` and
saved by :func:`ml.drift_reports.save_report` (HTML and JSON).
"""

from __future__ import annotations

import logging
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
    """Accumulates scored rows into windows and writes a report per closed window."""

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
    ) -> None:
        self.spec = spec
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
        self._rows: list[npt.NDArray[np.float64]] = []
        self._times: list[npt.NDArray[np.float64]] = []
        self._count = 0
        self._key: int | None = None

    def add(self, matrix: npt.NDArray[np.float64], times_ms: npt.NDArray[np.float64] | None) -> None:
        if self.spec.rows is not None:
            self._add_rows(matrix, times_ms if times_ms is not None else np.full(len(matrix), np.nan))
        elif times_ms is not None:
            self._add_timed(matrix, times_ms)

    def _add_rows(self, matrix: npt.NDArray[np.float64], times: npt.NDArray[np.float64]) -> None:
        assert self.spec.rows is not None
        size = self.spec.rows
        while len(matrix):
            take = min(size - self._count, len(matrix))
            self._rows.append(matrix[:take])
            self._times.append(times[:take])
            self._count += take
            matrix, times = matrix[take:], times[take:]
            if self._count >= size:
                self._close_rows()

    def _close_rows(self) -> None:
        rows, times = self._take()
        finite = times[np.isfinite(times)]
        if len(finite):
            start, end = _moment(float(finite.min())), _moment(float(finite.max()))
        else:
            start = end = self.fallback_time
        self._emit(rows, start, end)

    def _add_timed(self, matrix: npt.NDArray[np.float64], times: npt.NDArray[np.float64]) -> None:
        assert self.spec.window_ms is not None
        known = np.isfinite(times)
        matrix, times = matrix[known], times[known]
        keys = np.floor(times / self.spec.window_ms).astype(np.int64)
        for key in np.unique(keys).tolist():
            if self._key is None:
                self._key = key
            elif key > self._key:
                self._close_timed()
                self._key = key
            self._rows.append(matrix[keys == key])
            self._count += int((keys == key).sum())

    def _close_timed(self) -> None:
        assert self._key is not None and self.spec.window_ms is not None
        rows, _ = self._take()
        start_ms = self._key * self.spec.window_ms
        self._emit(rows, _moment(start_ms), _moment(start_ms + self.spec.window_ms))

    def _take(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        rows = np.concatenate(self._rows) if self._rows else np.empty((0, len(FEATURES)))
        times = np.concatenate(self._times) if self._times else np.empty(0)
        self._rows, self._times, self._count = [], [], 0
        return rows, times

    def finish(self) -> None:
        if self._count:
            if self.spec.rows is not None:
                self._close_rows()
            else:
                self._close_timed()

    def _emit(self, rows: npt.NDArray[np.float64], start: datetime, end: datetime) -> None:
        from ml.drift import evaluate_drift
        from ml.drift_reports import save_report

        index = self.closed
        self.closed += 1
        if index < self.already_saved:  # written before a resume
            return
        if len(rows) < self.min_rows:
            log_event(logger, "backfill drift window skipped", rows=len(rows), min_rows=self.min_rows)
            return
        result = evaluate_drift(
            self.reference,
            pd.DataFrame(rows, columns=list(FEATURES)),
            self.params,
            reference_name="the model's reference data",
            current_name=f"backfill window {index}",
        )
        html, _ = save_report(
            result,
            self.directory,
            window_start=start,
            window_end=end,
            keep=self.keep,
            index=index,
            model_version=self.model_version,
        )
        self.reports.append(str(html))
        log_event(
            logger,
            "backfill drift window",
            index=index,
            rows=len(rows),
            dataset_drift=result.dataset_drift,
            drifted_share=round(result.drifted_share, 3),
            report=str(html),
        )
