"""Test helper process: ``iris-scorer backfill --input SRC --output OUT --chunk-size N`` with a pause
after every chunk, so a test can kill the run part way. The pause reaches the backfill through its
``after_chunk`` parameter; production code reads no test-only setting.

Usage: ``python tests/slow_backfill.py DELAY_S SRC OUT CHUNK_ROWS``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from consumers.backfill.options import BackfillOptions
from consumers.backfill.run import run_backfill
from ml.settings import load_settings


def main(argv: list[str]) -> int:
    delay_s, src, out, chunk_rows = float(argv[0]), argv[1], Path(argv[2]), int(argv[3])
    options = BackfillOptions(input=src, output=out, chunk_rows=chunk_rows, progress=False)
    run_backfill(load_settings(), options, after_chunk=lambda: time.sleep(delay_s))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
