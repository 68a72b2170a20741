"""Shadow scoring's cost on the stream: the same preloaded drain with ``IRIS_SHADOW=true`` (both
``@champion`` and ``@challenger``, two logistic regressions, score every batch; one ``iris.shadow``
record per request besides its prediction) against ``IRIS_SHADOW=false``. Drift is off in both, so
the ratio is shadow's alone. Goal (issue 18): shadow on / off >= 0.7."""

from __future__ import annotations

from bench.harness import Goal, ScenarioResult, Skip, free_port, interleave
from bench.registry import BenchRegistry
from bench.scenarios import (
    Mode,
    OutputCounter,
    drift_off_env,
    embedded_broker,
    iris_scorer,
    preload,
    timed_drain,
)

#: at least this many messages per drain: 20,000 drain in 0.2 s, too short to tell 0.7 from 0.65
MIN_MESSAGES = 100_000


def _drain(name: str, mode: Mode, registry: BenchRegistry) -> dict[str, float]:
    n = max(mode.stream_messages, MIN_MESSAGES)
    with embedded_broker() as bootstrap:
        produce_s = preload(bootstrap, "iris.requests", n)
        env = (
            registry.env()
            | drift_off_env()
            | {
                "IRIS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "IRIS_KAFKA_SESSION_TIMEOUT_MS": "6000",
                "IRIS_SHADOW": "true" if name == "ours_shadow_on" else "false",
            }
        )
        cmd = [iris_scorer(), "worker", "--http-port", str(free_port())]
        counter = OutputCounter(bootstrap, "iris.predictions")
        try:
            return timed_drain(name, cmd, env, counter, n, mode.stream_cap_s, produce_s)
        finally:
            counter.close()


def shadow(mode: Mode, registry: BenchRegistry) -> ScenarioResult:
    result = ScenarioResult(
        "shadow",
        f"{max(mode.stream_messages, MIN_MESSAGES):,} requests preloaded into a fresh embedded broker per run; our worker "
        "with IRIS_SHADOW=true (champion and challenger score every batch, one iris.shadow record per "
        "request) against IRIS_SHADOW=false; drift off in both. Throughput = predictions / time from "
        "the first to the last.",
        params={"messages": max(mode.stream_messages, MIN_MESSAGES), "repeats": mode.repeats},
    )
    result.columns = ["msgs_per_s", "cpu_s_per_100k", "peak_rss_mb", "first_output_s"]
    result.goals = [
        Goal(
            "throughput: shadow on / off >= 0.7", "msgs_per_s", ">=", 0.7, "ours_shadow_on", "ours_shadow_off"
        )
    ]
    for _round, name in interleave(["ours_shadow_on", "ours_shadow_off"], mode.repeats):
        try:
            sample = _drain(name, mode, registry)
        except Skip as exc:
            result.skip(name, str(exc))
            continue
        print(f"  shadow {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in sample.items()), flush=True)
        result.add(name, sample)
    return result
