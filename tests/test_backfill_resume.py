"""A backfill killed with SIGKILL part way and started again ends with the uninterrupted result.

The first run is ``tests/slow_backfill.py`` (the backfill with a pause after each chunk, handed in
through its ``after_chunk`` parameter) so the kill lands between parts; the resumed and the clean
runs are the real ``iris-scorer backfill`` command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import Registry
from test_backfill_files import make_frame, write_input

CLI = Path(sys.executable).parent / "iris-scorer"
N_ROWS = 3000
CHUNK = 200


def command(src: Path, out: Path) -> list[str]:
    return [
        str(CLI),
        "backfill",
        "--input",
        str(src),
        "--output",
        str(out),
        "--chunk-size",
        str(CHUNK),
        "--no-progress",
    ]


def slow_command(src: Path, out: Path, delay_s: float) -> list[str]:
    helper = Path(__file__).with_name("slow_backfill.py")
    return [sys.executable, str(helper), str(delay_s), str(src), str(out), str(CHUNK)]


def env(registry: Registry) -> dict[str, str]:
    values = dict(os.environ)
    values.update(MLFLOW_TRACKING_URI=registry.tracking_uri, IRIS_REPORTS_DIR=str(registry.root / "reports"))
    return values


def completed_parts(manifest: Path) -> int:
    try:
        return len(orjson.loads(manifest.read_bytes())["parts"])
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_kill_and_resume_equals_a_clean_run(registry: Registry, tmp_path: Path, kind: str) -> None:
    src = write_input(make_frame(N_ROWS), tmp_path / "in.parquet")
    out = tmp_path / f"resumed.{kind}"
    manifest = tmp_path / f"resumed.{kind}.parts" / "manifest.json"
    proc = subprocess.Popen(
        slow_command(src, out, 0.4), env=env(registry), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while completed_parts(manifest) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    done_before = completed_parts(manifest)
    assert 2 <= done_before < N_ROWS // CHUNK
    assert not out.exists()
    scored_at = orjson.loads(manifest.read_bytes())["scored_at"]

    resumed = subprocess.run(
        command(src, out), env=env(registry), capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed_parts={done_before}" in resumed.stdout
    assert not manifest.parent.exists()

    clean_out = tmp_path / f"clean.{kind}"
    clean = subprocess.run(
        command(src, clean_out), env=env(registry), capture_output=True, text=True, timeout=120
    )
    assert clean.returncode == 0, clean.stderr

    if kind == "parquet":
        # the clean run streams its Parquet file as it goes, the resumed one merges its parts
        a, b = pq.read_table(out), pq.read_table(clean_out)
        assert pq.read_schema(out).equals(pq.read_schema(clean_out), check_metadata=True)
    else:
        a, b = (pa_csv(out), pa_csv(clean_out))
    assert a.num_rows == N_ROWS - 3
    assert set(a["scored_at"].to_pylist()) == {scored_at}  # taken once, by the first attempt
    assert a.drop(["scored_at"]).equals(b.drop(["scored_at"]))  # same rows, same order
    assert (tmp_path / "resumed.rejects.jsonl").read_bytes() == (
        tmp_path / "clean.rejects.jsonl"
    ).read_bytes()


def pa_csv(path: Path) -> object:
    import pyarrow as pa

    return pa.Table.from_pandas(
        pd.read_csv(path, dtype={"id": str, "model_version": str}), preserve_index=False
    )
