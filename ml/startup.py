"""Start-up without the cyclic garbage collector.

Importing MLflow, SQLAlchemy, scikit-learn, SciPy and pandas creates about a million objects, and
the collector, triggered every few hundred allocations, walks the growing heap again and again:
measured on this project, 0.6 s of a 2.8 s ``iris-scorer backfill`` start-up (bench/RESULTS.md).
The console script pauses the collector for its long-start commands (:data:`ml.cli.FAST_START_COMMANDS`);
each command resumes it at one fixed point, once its imports and set-up are done and before its
steady state (the backfill loop, the HTTP server, the worker's event loop): everything alive then
is moved to the permanent generation (:func:`gc.freeze`) and never scanned again.

Code that did not pause the collector (tests calling the functions directly) is unaffected:
:func:`resume_gc` does nothing unless :func:`pause_gc` paused it.
"""

from __future__ import annotations

import gc

_paused = False


def pause_gc() -> None:
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_gc() -> None:
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
