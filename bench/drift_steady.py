"""Drift's steady-state CPU per message: the worker warmed, then ``n`` requests scored.

The drain of :func:`bench.scenarios.drain_once` starts the worker on a preloaded topic, so its
window also holds the drift child's start-up: spawning it and importing Evidently there, seconds of
CPU once per process (logged by the worker as ``drift_process_ready``). Measured that way, on a
drain of 1-2 s, the ratio drift on / off says how long Evidently takes to import, not what drift
costs per message. Here the worker starts on an empty topic; a first burst is scored and the
process tree (worker and child) is let go idle, so the import and the burst's windows are over;
then ``n`` requests are produced while the worker runs, and the CPU of the worker and its child is
taken over exactly those ``n`` outputs. Drift on and off are measured the same way.
"""

from __future__ import annotations

import time

from bench.harness import Proc, Skip, start, stop
from bench.registry import BenchRegistry
from bench.scenarios import Mode, OutputCounter, _stream_commands, embedded_broker, preload

WARM_MESSAGES = 5_000
IDLE_CPU_S = 0.03  # the tree is idle when it used less than this over IDLE_WINDOW_S
IDLE_WINDOW_S = 1.0
TIMEOUT_S = 120.0


def _wait(what: str, condition: object, proc: Proc) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():  # type: ignore[operator]
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
            done, cpu0 = counter.count(), proc.cpu_seconds()
            preload(bootstrap, "iris.requests", n, seed=2, first_id=WARM_MESSAGES)
            _wait("the measured outputs", lambda: counter.count() >= done + n, proc)
            cpu1 = proc.cpu_seconds()
            scored = counter.count() - done
        finally:
            stop(proc)
            counter.close()
    if cpu0 is None or cpu1 is None or scored <= 0:
        raise Skip(f"{name}: no CPU reading")
    return {"cpu_s_per_100k_steady": (cpu1 - cpu0) / scored * 100_000, "warm_up_cpu_s": cpu0}
