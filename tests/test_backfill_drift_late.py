"""Rows that event-time drift windows cannot take (too late, or without a time) are counted and
reported by the backfill, never put in the wrong window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from conftest import Registry

from consumers.backfill.options import BackfillOptions
from consumers.backfill.run import run_backfill
from ml.data import load_raw
from ml.schema import FEATURES

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_late_and_untimed_rows_are_counted_in_the_summary(registry: Registry, tmp_path: Path) -> None:
    iris = load_raw().sample(frac=1.0, random_state=0).reset_index(drop=True)
    # ten hourly windows of 12 rows, then two rows for the first hour: 10 h late
    hours = [h for h in range(10) for _ in range(12)] + [0, 0]
    rows = [
        {
            "id": f"r-{i}",
            **{name: float(iris.loc[i % len(iris), name]) for name in FEATURES},
            "sent_at": (T0 + timedelta(hours=h, minutes=i % 60)).isoformat(),
        }
        for i, h in enumerate(hours)
    ]
    rows.append({**rows[0], "id": "no-time", "sent_at": ""})
    src = tmp_path / "in.csv"
    pd.DataFrame(rows).to_csv(src, index=False)
    settings = registry.settings(reports_dir=tmp_path / "reports", drift_max_open_windows=8)
    summary = run_backfill(
        settings,
        BackfillOptions(
            input=str(src), output=tmp_path / "out.parquet", drift_window="1h", chunk_rows=12, progress=False
        ),
    )
    assert (summary.drift_late_rows, summary.drift_untimed_rows) == (2, 1)
    assert "late_rows=2 untimed_rows=1" in summary.describe()
    assert summary.scored == len(rows)  # scoring is not affected: only drift windows leave them out
