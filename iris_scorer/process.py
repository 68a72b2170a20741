"""What an entry point does to its own process, and nothing below it may: garbage-collector
tuning, MLflow's HTTP retry defaults and no MLflow progress bars in service logs.

**Start-up without the cyclic garbage collector.** Importing MLflow, SQLAlchemy, scikit-learn,
SciPy and pandas creates about a million objects, and the collector, triggered every few hundred
allocations, walks the growing heap again and again: measured on this project, 0.6 s of a 2.8 s
``iris-scorer backfill`` start-up (bench/RESULTS.md). The console script pauses the collector for
its long-start commands (:data:`iris_scorer.cli.FAST_START_COMMANDS`) and hands :func:`resume_gc`
to the command as its ``on_ready`` hook; the adapter calls it once its imports and set-up are done
and before its steady state: everything alive then is moved to the permanent generation
(:func:`gc.freeze`) and never scanned again.

**A settled heap.** A serving process holds a few hundred thousand long-lived objects and
allocates short-lived ones per request or message; :func:`settle_heap` (handed to the worker and
the REST service as their ``settle_heap`` hook, called after start-up and after each model swap)
keeps the long-lived ones out of every later collection: about 40% less CPU per message on the
stream worker's hot path. It holds the GIL for ~0.15 s on a worker-sized heap.

**Freed memory kept for reuse** (:func:`keep_freed_memory`, services only). glibc returns the
top of its heap to the kernel whenever more than 128 KiB is free there (``M_TRIM_THRESHOLD``), so
a worker that frees a batch's few hundred encoded messages and then allocates the next batch's
pays a page fault for every page again: measured here, ``orjson.dumps`` of a prediction-sized
dict cost 1.8 µs in a batch of 500 against 0.09 µs with the threshold raised. The long-running
services raise it to 64 MiB (and fix the mmap threshold at 32 MiB, which setting the first would
otherwise freeze at 128 KiB); memory freed after a peak stays in the process, up to that much.

Code that did not pause the collector (tests calling the functions directly) is unaffected:
:func:`resume_gc` does nothing unless :func:`pause_gc` paused it, and adapters default both hooks
to doing nothing.
"""

from __future__ import annotations

import gc
import os

#: A registry that does not answer should fail in seconds, not after MLflow's minutes of retries
#: (the reload loop retries with its own backoff). MLflow reads these from the environment only.
MLFLOW_FAST_FAIL_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # a model load draws a "Downloading artifacts" progress bar per file into service logs
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


class GcPause:
    """The collector paused for start-up, resumed (and the heap frozen) once."""

    def __init__(self) -> None:
        self.paused = False

    def pause(self) -> None:
        if gc.isenabled():
            gc.disable()
            self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            gc.freeze()
            gc.enable()


_START_UP = GcPause()


def pause_gc() -> None:
    _START_UP.pause()


def resume_gc() -> None:
    _START_UP.resume()


#: mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 64 << 20
MMAP_THRESHOLD_BYTES = 32 << 20


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds (see above); False where there is no glibc ``mallopt``
    (musl, macOS) or the environment already sets ``MALLOC_TRIM_THRESHOLD_``."""
    if os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
    )


def settle_heap() -> None:
    """Collect, then move every live object to the collector's permanent generation (unfreezing
    first, so a swapped-out model's reference cycles are still collected)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def fail_fast_on_registry_outage() -> None:
    """MLflow's HTTP retry defaults, and no artifact progress bars, for this process (an
    operator's own settings win)."""
    for key, value in MLFLOW_FAST_FAIL_ENV.items():
        os.environ.setdefault(key, value)
