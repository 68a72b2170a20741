"""Backfill on Spark against the local engine (issue 19): rows per second on one file, and Spark's
fixed start-up cost apart from its per-row cost, with the projection for a cluster.

Systems, interleaved: ``local`` = ``iris-scorer backfill`` (this process); ``spark`` =
``iris-scorer backfill --engine spark --master local[2]`` on the same CSV (Parquet out, as the
Spark engine writes); ``spark_tiny`` = the Spark engine on 1,000 rows: its wall time is the fixed
cost (JVM, session, model broadcast, the two writes' job overhead). Spark's per-row cost is
(wall(N) - wall(tiny)) / N on 2 cores; K executors of 2 cores each would take about
start-up + N x per_row / K, which the notes print for a few K and N. No goal: Spark is expected to
be slower on 2 cores; the point is that it scales out.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

from bench.harness import ScenarioResult, Skip, interleave, median
from bench.registry import BenchRegistry
from bench.scenarios import Mode, iris_scorer, timed, write_inputs

TINY = 1000


def spark_scenario(mode: Mode, registry: BenchRegistry) -> ScenarioResult:
    rows = max(mode.backfill_rows)
    result = ScenarioResult(
        "spark",
        f"One {rows:,}-row CSV rescored end to end (process start to exit) by the local engine and by "
        "--engine spark --master local[2]; spark_tiny: the Spark engine on 1,000 rows (its fixed cost).",
        params={"rows": rows, "repeats": mode.repeats},
    )
    result.columns = ["wall_s", "rows_per_s", "cpu_s", "peak_rss_mb"]
    result.notes.append(
        "cpu_s and peak_rss_mb of the Spark runs are the Python driver's only: the JVM that "
        "spark-submit starts, and the Python workers it starts, are not children GNU time waits for."
    )
    if importlib.util.find_spec("pyspark") is None:
        for name in ("local", "spark", "spark_tiny"):
            result.skip(name, "PySpark is not installed (pip install 'iris-scorer[spark]')")
        return result
    env = registry.env()
    with tempfile.TemporaryDirectory(prefix="iris-bench-spark-") as tmp:
        work = Path(tmp)
        big, tiny = write_inputs(work, rows)["csv"], write_inputs(work, TINY)["csv"]
        commands = {
            "local": [
                iris_scorer(),
                "backfill",
                "--no-progress",
                "--input",
                str(big),
                "--output",
                str(work / "l.parquet"),
            ],
            "spark": [
                *(iris_scorer(), "backfill", "--no-progress", "--engine", "spark", "--master", "local[2]"),
                *("--input", str(big), "--output", str(work / "s.parquet")),
            ],
            "spark_tiny": [
                *(iris_scorer(), "backfill", "--no-progress", "--engine", "spark", "--master", "local[2]"),
                *("--input", str(tiny), "--output", str(work / "t.parquet")),
            ],
        }
        for _round, name in interleave(list(commands), mode.repeats):
            try:
                sample = timed(name, commands[name], env)
            except Skip as exc:
                result.skip(name, str(exc))
                continue
            n = TINY if name == "spark_tiny" else rows
            sample["rows_per_s"] = n / sample["wall_s"]
            print(f"  spark {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in sample.items()), flush=True)
            result.add(name, sample)
    walls = {name: median([s["wall_s"] for s in result.runs.get(name, [])]) for name in commands}
    if all(walls.values()):
        start, per_row = walls["spark_tiny"], (walls["spark"] - walls["spark_tiny"]) / (rows - TINY)
        result.notes.append(
            f"Spark local[2]: fixed cost {start:.1f} s, then {per_row * 1e6:.2f} µs per row on 2 cores "
            f"(local engine: {walls['local'] / rows * 1e6:.2f} µs per row including its start-up)."
        )
        for k, n in ((4, 100_000_000), (16, 100_000_000), (16, 1_000_000_000)):
            result.notes.append(
                f"projection: {k} executors x 2 cores, {n:,} rows: about {start + n * per_row / k:,.0f} s "
                f"(local engine, one process: about {walls['local'] / rows * n:,.0f} s)"
            )
    return result
