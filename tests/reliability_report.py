"""Regenerate docs/reliability-figures.json by running the reliability suite (issue 9).

    .venv/bin/python tests/reliability_report.py [extra pytest args]

Runs ``tests/test_reliability_*.py`` with ``IRIS_RELIABILITY_FIGURES`` pointing at a fresh file,
then moves it to ``docs/reliability-figures.json`` (only when every test passed) and prints it.
Set ``IRIS_SCHEMATHESIS`` to a schemathesis binary to include the fuzzing figures when it is not
in ``.venv-tools``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET = REPO_ROOT / "docs" / "reliability-figures.json"


def main(argv: list[str]) -> int:
    scratch = TARGET.with_suffix(".json.partial")
    scratch.unlink(missing_ok=True)
    tests = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "tests").glob("test_reliability_*.py"))
    env = {**os.environ, "IRIS_RELIABILITY_FIGURES": str(scratch)}
    started = time.monotonic()
    code = subprocess.call(
        [sys.executable, "-m", "pytest", *tests, "-q", "-s", *argv], cwd=REPO_ROOT, env=env
    )
    if code != 0 or not scratch.exists():
        print(f"reliability suite failed (exit {code}); {TARGET.name} left unchanged", file=sys.stderr)
        return code or 1
    figures = json.loads(scratch.read_text(encoding="utf-8"))
    figures["_suite"] = {
        "runtime_s": round(time.monotonic() - started, 1),
        "generated_by": "tests/reliability_report.py",
    }
    TARGET.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    scratch.unlink()
    print(json.dumps(figures, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
