"""Test helper process: ``iris-scorer worker --http-port PORT`` with a pause after every batch, so a
test can kill the worker mid-stream. The pause reaches the worker through its ``after_batch``
parameter (after a batch's outputs are acknowledged, before its offsets are committed: a kill
there costs the most duplicates); production code reads no test-only setting.

Usage: ``python tests/stream_worker.py DELAY_S PORT [FAIL_FIRST]``: with ``FAIL_FIRST`` = N, the
first N ``after_batch`` calls raise once the pause is over (the batch's outputs are acknowledged,
its offsets not committed): the subscriber's ack policy must then rewind the batch.
"""

from __future__ import annotations

import asyncio
import sys

from consumers.worker import run_worker
from iris_scorer import process
from ml.logs import configure_logging
from ml.settings import load_settings


def main(argv: list[str]) -> int:
    delay_s, port = float(argv[0]), int(argv[1])
    failures = [int(argv[2]) if len(argv) > 2 else 0]
    settings = load_settings()
    configure_logging(settings.log_level)

    async def pause() -> None:
        await asyncio.sleep(delay_s)
        if failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError("after_batch: failing this batch on purpose (tests/stream_worker.py)")

    return run_worker(
        settings, http_host="127.0.0.1", http_port=port, settle_heap=process.settle_heap, after_batch=pause
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
