"""``python -m bench --quick|--full [--only rest,stream,backfill,startup]`` — see bench/harness.py."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import Any

from bench import harness, rest, scenarios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="3 repeats, small sizes (default)")
    size.add_argument("--full", action="store_true", help="5 repeats, large sizes")
    parser.add_argument(
        "--only",
        default="rest,stream,shadow,stream_real,backfill,spark,startup",
        help="comma-separated: rest,stream,drift,shadow,stream_real,backfill,spark,startup (stream_real: on a local Apache Kafka)",
    )
    args = parser.parse_args(argv)
    mode = scenarios.FULL if args.full else scenarios.QUICK
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if "stream" in only:
        only.add("drift")  # the drift comparison reuses the stream runs of our worker
    command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    started_at = harness.utc_stamp()
    t_start = time.perf_counter()
    print(f"bench {mode.name}: training the champion into a temporary registry", flush=True)
    registry = scenarios_registry()
    report: dict[str, Any] = {
        "started_at": started_at,
        "command": command.strip(),
        "mode": mode.name,
        "machine": harness.machine_info(),
        "model": {"uri": registry.version_uri, "classifier": "logistic_regression"},
        "scenarios": [],
    }
    try:
        if "rest" in only:
            print("scenario rest", flush=True)
            report["scenarios"].append(rest.rest(mode, registry).to_json())
        if "stream" in only or "drift" in only:
            print("scenario stream (+ drift overhead)", flush=True)
            stream_result, drift_result = scenarios.stream(
                mode, registry, include_drift="drift" in only, include_baselines="stream" in only
            )
            if "stream" in only:
                report["scenarios"].append(stream_result.to_json())
            if "drift" in only:
                report["scenarios"].append(drift_result.to_json())
        if "shadow" in only:
            print("scenario shadow (champion and challenger on every batch)", flush=True)
            from bench.shadow import shadow

            report["scenarios"].append(shadow(mode, registry).to_json())
        if "stream_real" in only:
            print("scenario stream on real Kafka (+ exactly-once)", flush=True)
            from bench.stream_real import stream_real_kafka

            report["scenarios"].append(stream_real_kafka(mode, registry).to_json())
        if "backfill" in only:
            print("scenario backfill", flush=True)
            report["scenarios"].append(scenarios.backfill(mode, registry).to_json())
        if "spark" in only:
            print("scenario spark (backfill --engine spark, local[2])", flush=True)
            from bench.spark import spark_scenario

            report["scenarios"].append(spark_scenario(mode, registry).to_json())
        if "startup" in only:
            print("scenario startup (hyperfine)", flush=True)
            from bench.startup import startup

            report["scenarios"].append(startup(mode, registry).to_json())
    finally:
        report["wall_seconds"] = time.perf_counter() - t_start
        json_path, md_path = harness.write_report(report)
        shutil.rmtree(registry.root, ignore_errors=True)
        harness.remove_logs()
    print(harness.markdown(report))
    print(f"results: {json_path} and {md_path}")
    return 0


def scenarios_registry() -> Any:
    from bench.registry import create_registry

    return create_registry()


if __name__ == "__main__":
    sys.exit(main())
