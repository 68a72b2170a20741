"""The backfill's work folder (``<output>.parts/`` and its manifest) and its progress display.

The manifest (``manifest.json``, rewritten atomically after every part) holds:

- ``fingerprint``: a hash of the arguments, the input files (path, size, mtime) and the model
  versions; a work folder with another fingerprint is discarded, never mixed in;
- ``scored_at``: taken once by the first attempt, so a resumed run writes the same value;
- ``parts``: completed parts, ``part-<file>-<chunk>`` → first row, rows, scored, rejects, labels
  (and the confusion counts with ``--compare-with``);
- ``units``: row counts of input files that are finished (or belong to other shards);
- ``drift_saved``: how many drift windows were written, so a resume does not write them again;
- ``topic_offsets`` (``--from-topic``): each partition's ``[start, end)`` offsets, fixed by the first
  attempt, so a resumed run reads the same records even if the topic grew or was trimmed since;
- ``bytes``: lengths of the append-only files (CSV/JSONL output, rejects) after the last
  completed part.

CSV and JSON Lines outputs (and the rejects) grow in one file each, written once; a resumed run
cuts them back to the lengths in the manifest. Parquet output is written as Arrow IPC part files
and, as they complete, streamed into the final Parquet file (a resumed run merges the parts
instead). Data is flushed (or a part renamed into place)
before the manifest names its part, so a kill at any moment leaves either a completed part or
one that is redone.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from consumers.backfill.writers import write_atomic_bytes
from ml.logs import log_event

logger = logging.getLogger("consumers.backfill.run")

MANIFEST_VERSION = 1
LOG_EVERY_S = 10.0


# ---------------------------------------------------------------- manifest


class Workspace:
    """``<output>.parts/``: part files and the manifest that says which are complete."""

    def __init__(self, output: Path, fingerprint: str) -> None:
        self.dir = output.with_name(output.name + ".parts")
        self.path = self.dir / "manifest.json"
        self.fingerprint = fingerprint
        self.manifest: dict[str, Any] = {}
        self.resumed = False
        # Parts are completed by the writer thread while the main thread asks what is done.
        self._lock = threading.Lock()

    def open(self, scored_at: str) -> None:
        if self.path.exists():
            try:
                manifest = orjson.loads(self.path.read_bytes())
            except orjson.JSONDecodeError:
                manifest = {}
            if (
                manifest.get("fingerprint") == self.fingerprint
                and manifest.get("version") == MANIFEST_VERSION
            ):
                self.manifest, self.resumed = manifest, True
                log_event(logger, "backfill resuming", parts=len(manifest["parts"]), folder=str(self.dir))
                return
            log_event(
                logger, "backfill work folder is from other arguments: starting afresh", folder=str(self.dir)
            )
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.manifest = {
            "version": MANIFEST_VERSION,
            "fingerprint": self.fingerprint,
            "scored_at": scored_at,
            "parts": {},
            "units": {},
            "drift_saved": 0,
        }
        self.save()

    @property
    def scored_at(self) -> str:
        return str(self.manifest["scored_at"])

    def save(self) -> None:
        with self._lock:
            data = orjson.dumps(self.manifest, option=orjson.OPT_INDENT_2)
            write_atomic_bytes(self.path, data)

    @property
    def topic_offsets(self) -> dict[int, tuple[int, int]] | None:
        with self._lock:
            pinned = self.manifest.get("topic_offsets")
        return None if pinned is None else {int(p): (int(a), int(b)) for p, (a, b) in pinned.items()}

    def pin_topic_offsets(self, offsets: dict[int, tuple[int, int]]) -> None:
        with self._lock:
            self.manifest["topic_offsets"] = {str(p): [a, b] for p, (a, b) in sorted(offsets.items())}
        self.save()

    @staticmethod
    def part_name(unit: int, index: int) -> str:
        return f"part-{unit:05d}-{index:07d}"

    def done(self, unit: int, index: int) -> bool:
        with self._lock:
            return self.part_name(unit, index) in self.manifest["parts"]

    def unit_rows(self, unit: int) -> int | None:
        with self._lock:
            rows = self.manifest["units"].get(str(unit))
        return None if rows is None else int(rows)

    def complete_part(
        self,
        unit: int,
        index: int,
        first_row: int,
        stats: dict[str, Any],
        *,
        drift_saved: int,
        sizes: dict[str, int],
    ) -> None:
        with self._lock:
            self.manifest["parts"][self.part_name(unit, index)] = {
                "unit": unit,
                "first_row": first_row,
                **stats,
            }
            self.manifest["drift_saved"] = drift_saved
            self.manifest["bytes"] = sizes
        self.save()

    def size(self, name: str) -> int:
        """Length of the append-only file ``name`` after the last completed part."""
        return int(self.manifest.get("bytes", {}).get(name, 0))

    def append_log(self, name: str) -> AppendLog:
        return AppendLog(self.dir / name, self.size(name))

    def complete_unit(self, unit: int, rows: int) -> None:
        with self._lock:
            self.manifest["units"][str(unit)] = rows
        self.save()

    def ordered_parts(self) -> list[str]:
        with self._lock:
            return sorted(self.manifest["parts"])


class AppendLog:
    """A file that grows by whole parts; opening it cuts it back to ``size`` (the last completed part)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.handle = path.open("r+b" if path.exists() else "w+b")
        self.handle.truncate(size)
        self.handle.seek(size)

    def size(self) -> int:
        self.handle.flush()
        return self.handle.tell()

    def close(self) -> None:
        self.handle.close()


def fingerprint(values: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()


# ---------------------------------------------------------------- progress


class Progress:
    """A tqdm bar (rows/s, ETA) on a TTY; a log line every few seconds otherwise."""

    def __init__(self, total: int | None, enabled: bool | None) -> None:
        self.bar: Any = None
        self.rows = 0
        self.started = self.logged = time.monotonic()
        use_bar = sys.stderr.isatty() if enabled is None else enabled
        if use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="rows", unit_scale=True, dynamic_ncols=True, file=sys.stderr)
        self.total = total

    def update(self, rows: int) -> None:
        self.rows += rows
        if self.bar is not None:
            self.bar.update(rows)
            return
        now = time.monotonic()
        if now - self.logged >= LOG_EVERY_S:
            self.logged = now
            rate = self.rows / max(now - self.started, 1e-9)
            log_event(
                logger, "backfill progress", rows=self.rows, total=self.total or "?", rows_per_s=round(rate)
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
