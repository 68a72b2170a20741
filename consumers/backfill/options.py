"""What a backfill run is asked to do (the command line's options) and what it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from consumers.backfill import files
from ml.errors import BadInputError

SOURCE = "backfill"
DEFAULT_CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class BackfillOptions:
    input: str | None = None
    output: Path | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    strict: bool = False
    model_uri: str | None = None
    compare_with: str | None = None
    #: compare with IRIS_CHALLENGER_URI (what --compare-with does, for the challenger alias)
    challenger: bool = False
    #: ground truth by id (else a ``label`` column of the input, when it has one)
    labels: Path | None = None
    shard: tuple[int, int] = (0, 1)
    from_topic: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    to_topic: str | None = None
    drift_window: str | None = None
    progress: bool | None = None  # None: a bar on a TTY, log lines otherwise
    #: leave the input's other columns out of the output (by default they pass through)
    drop_extra_columns: bool = False


@dataclass
class BackfillSummary:
    rows: int = 0
    scored: int = 0
    rejects: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    output: Path | None = None
    rejects_path: Path | None = None
    compare_path: Path | None = None
    compare: dict[str, Any] | None = None
    performance: dict[str, Any] | None = None
    performance_path: Path | None = None
    drift_reports: list[str] = field(default_factory=list)
    #: rows left out of drift windows: later than the open windows allow, or without a time
    drift_late_rows: int = 0
    drift_untimed_rows: int = 0
    resumed_parts: int = 0
    model: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        labels = " ".join(f"{k}={v}" for k, v in sorted(self.labels.items())) or "-"
        lines = [
            f"backfill done: rows={self.rows} scored={self.scored} rejects={self.rejects} model={self.model}",
            f"labels: {labels}",
            f"wall_time={self.seconds:.2f}s rows_per_s={self.rows_per_second:,.0f}"
            + (f" resumed_parts={self.resumed_parts}" if self.resumed_parts else ""),
            f"output: {self.output if self.output is not None else '-'}",
        ]
        if self.rejects_path is not None:
            lines.append(f"rejects: {self.rejects_path}")
        if self.compare is not None:
            lines.append(f"compare: {orjson.dumps(self.compare).decode()} ({self.compare_path or '-'})")
        if self.performance is not None:
            for m in self.performance["models"]:
                lines.append(
                    f"performance ({m['role']}): {m['model']} accuracy={m['accuracy']} f1_macro={m['f1_macro']} "
                    f"on {m['count']} labelled rows ({self.performance_path or '-'})"
                )
        if self.drift_reports:
            lines.append(f"drift reports: {len(self.drift_reports)} (last: {self.drift_reports[-1]})")
        if self.drift_late_rows or self.drift_untimed_rows:
            lines.append(
                f"drift windows left out: late_rows={self.drift_late_rows} "
                f"untimed_rows={self.drift_untimed_rows} (IRIS_DRIFT_MAX_OPEN_WINDOWS bounds lateness)"
            )
        return "\n".join(lines)


def sibling(output: Path, suffix: str) -> Path:
    """``out/preds.parquet`` → ``out/preds<suffix>`` (e.g. ``.rejects.jsonl``)."""
    return output.with_name(output.stem + suffix)


def parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise BadInputError(f"--shard {text!r} must be I/N with 0 <= I < N (e.g. 0/4).")
    return int(index), int(count)


def parse_time(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInputError(
            f"{option} {text!r} is not an ISO timestamp (e.g. 2026-11-26T10:00:00Z)."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------- the run


def check_options(options: BackfillOptions) -> None:
    if (options.input is None) == (options.from_topic is None):
        raise BadInputError("give exactly one of --input (files) or --from-topic (a topic range).")
    if options.output is None and options.to_topic is None:
        raise BadInputError("--output is required (or --to-topic to publish the predictions).")
    if options.output is not None and options.to_topic is None:
        files.output_kind(options.output)
    if options.challenger and options.compare_with is not None:
        raise BadInputError("give --compare-with URI or --challenger (IRIS_CHALLENGER_URI), not both.")
    if options.chunk_rows < 1:
        raise BadInputError("--chunk-size must be at least 1.")
    if options.from_topic is None and (options.start is not None or options.end is not None):
        raise BadInputError("--start and --end select a topic range: use them with --from-topic.")
    if options.start is not None and options.end is not None and options.start > options.end:
        raise BadInputError("--start is after --end.")
