"""Backfill files: which inputs there are, of which kind, and which shard owns which."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.errors import BadInputError

INPUT_KINDS: dict[str, str] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
OUTPUT_KINDS: dict[str, str] = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl"}
OPTIONAL_COLUMNS = ("id", "sent_at")


@dataclass(frozen=True)
class InputFile:
    path: Path
    kind: str
    size: int
    mtime_ns: int

    def fingerprint(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, "mtime_ns": self.mtime_ns}


def input_kind(path: Path) -> str:
    kind = INPUT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise BadInputError(
            f"input {path} has an unsupported extension '{path.suffix or '(none)'}': "
            "use .csv, .parquet or .jsonl."
        )
    return kind


def output_kind(path: Path) -> str:
    kind = OUTPUT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise BadInputError(
            f"output {path} has an unsupported extension '{path.suffix or '(none)'}': "
            "use .parquet, .csv or .jsonl."
        )
    return kind


def discover_inputs(spec: str) -> list[InputFile]:
    """A file, a folder (its CSV/Parquet/JSONL files, recursively) or a glob; sorted by path."""
    path = Path(spec)
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_KINDS)
        if not paths:
            raise BadInputError(f"input folder {spec} has no .csv, .parquet or .jsonl files.")
    elif path.is_file():
        paths = [path]
    elif glob.has_magic(spec):
        paths = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not paths:
            raise BadInputError(f"input pattern {spec} matches no files.")
    else:
        raise BadInputError(f"input {spec} does not exist.")
    files = []
    for p in paths:
        stat = p.stat()
        files.append(InputFile(p, input_kind(p), stat.st_size, stat.st_mtime_ns))
    return files


def shard_files(files: Sequence[InputFile], index: int, count: int) -> list[bool]:
    """Which of the (sorted) files belong to shard ``index`` of ``count``: stable, by position."""
    return [position % count == index for position in range(len(files))]
