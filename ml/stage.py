"""Running a DVC stage's ``main()``: our errors become one sentence on stderr and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ml.errors import IrisError


def run_stage(main: Callable[[], None]) -> None:
    try:
        main()
    except IrisError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
