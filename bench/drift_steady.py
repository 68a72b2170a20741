"""Drift's steady-state CPU per message: the worker warmed, then ``n`` requests scored.

The drain of :func:`bench.scenarios.drain_once` starts the worker on a preloaded topic, so its
window also holds the drift child's start-up: spawning it and importing Evidently there, seconds of
CPU once per process (logged by the worker as ``drift_process_ready``). Measured that way, on a
drain of 1-2 s, the ratio drift on / off says how long Evidently takes to import, not what drift
costs per message. Here the worker starts on an empty topic; a first burst is scored and the
process tree (worker and child) is let go idle, so the import and the burst's windows are over;
then rounds of ``n`` requests are produced while the worker runs (each once the last is scored,
for :data:`STEADY_SECONDS`), and the CPU of the worker and its child is taken over exactly those
outputs. Drift on and off are measured the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.harness import Proc, Skip, start, stop
from bench.registry import BenchRegistry
from bench.scenarios import Mode, OutputCounter, _stream_commands, embedded_broker, preload

WARM_MESSAGES = 5_000
IDLE_CPU_S = 0.03  # the tree is idle when it used less than this over IDLE_WINDOW_S
IDLE_WINDOW_S = 1.0
TIMEOUT_S = 120.0
#: how long the measured phase lasts at least (rounds of ``n`` requests, each produced once the
#: last is scored): drift evaluations are lumps of CPU that the budget (IRIS_DRIFT_CPU_SHARE)
#: spreads over seconds, so a phase of one short burst would measure one lump, not the rate
STEADY_SECONDS = {"quick": 10.0, "full": 30.0}


def _wait(what: str, condition: Callable[[], bool], proc: Proc) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if not proc.alive():
            raise Skip(f"{proc.name} exited while waiting for {what}: {proc.tail(5)}")
        if time.monotonic() > deadline:
            raise Skip(f"{proc.name}: no {what} in {TIMEOUT_S:.0f} s: {proc.tail(5)}")
        time.sleep(0.05)


def _wait_idle(proc: Proc) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    before = proc.cpu_seconds() or 0.0
    while True:
        time.sleep(IDLE_WINDOW_S)
        now = proc.cpu_seconds() or 0.0
        if now - before < IDLE_CPU_S:
            return
        if time.monotonic() > deadline:
            raise Skip(f"{proc.name} never went idle after its warm-up burst")
        before = now


def steady_once(name: str, mode: Mode, registry: BenchRegistry) -> dict[str, float]:
    """CPU seconds per 100k requests of ``name`` (a worker command of the stream scenario) once
    warm, with the CPU its warm-up took (process start to idle) beside it."""
    n = mode.stream_messages
    with embedded_broker() as bootstrap:
        cmd, env = _stream_commands(registry, bootstrap)[name]
        counter = OutputCounter(bootstrap, "iris.predictions")
        proc = start(f"{name}-steady", cmd, env)
        try:
            preload(bootstrap, "iris.requests", WARM_MESSAGES, seed=1)
            _wait("warm-up outputs", lambda: counter.count() >= WARM_MESSAGES, proc)
            _wait_idle(proc)
            done, cpu0, child0 = (
                counter.count(),
                proc.cpu_seconds(),
                (proc.cpu_seconds(children_only=True) or 0.0),
            )
            started, rounds = time.monotonic(), 0
            seconds = STEADY_SECONDS.get(mode.name, STEADY_SECONDS["quick"])
            while rounds == 0 or time.monotonic() - started < seconds:
                preload(bootstrap, "iris.requests", n, seed=2 + rounds, first_id=WARM_MESSAGES + rounds * n)
                rounds += 1
                target = done + rounds * n
                _wait("the measured outputs", lambda target=target: counter.count() >= target, proc)
            cpu1, child1, elapsed = (
                proc.cpu_seconds(),
                (proc.cpu_seconds(children_only=True) or 0.0),
                time.monotonic() - started,
            )
            scored = counter.count() - done
        finally:
            stop(proc)
            counter.close()
    if cpu0 is None or cpu1 is None or scored <= 0:
        raise Skip(f"{name}: no CPU reading")
    return {
        "cpu_s_per_100k_steady": (cpu1 - cpu0) / scored * 100_000,
        "warm_up_cpu_s": cpu0,
        "steady_messages": float(scored),
        "steady_msgs_per_s": scored / elapsed,
        "child_cpu_s_per_100k_steady": (child1 - child0) / scored * 100_000,
        "child_cpu_share_steady": (child1 - child0) / elapsed,
    }
