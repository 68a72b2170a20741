"""Schemathesis against a live ``iris-scorer serve`` (issue 9).

Schemathesis is not in ``.venv`` (it pins its own hypothesis/pytest) but can live in the tools venv
(``.venv-tools``); ``IRIS_SCHEMATHESIS`` may name another binary. Skipped when none is found.

Asserted: no 5xx, and every response conforms to the OpenAPI document (status codes, content
types, bodies, headers). The "schema-valid request rejected / schema-violating request accepted"
checks (``positive_data_acceptance``, ``negative_data_rejection``) are run and reported, not
asserted: see docs/RELIABILITY.md for what they found.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from stream_helpers import record_figures
from test_reliability_rest import Serve, serves  # noqa: F401 - fixture

# ruff: noqa: F811


REPO_ROOT = Path(__file__).resolve().parents[1]
ASSERTED_CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)


def schemathesis_binary() -> str | None:
    candidates = [os.environ.get("IRIS_SCHEMATHESIS", "")]
    candidates += [str(REPO_ROOT / ".venv-tools" / "bin" / name) for name in ("schemathesis", "st")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        schemathesis_binary() is None,
        reason="schemathesis is not installed (.venv-tools/bin/schemathesis or IRIS_SCHEMATHESIS)",
    ),
]


def _run(binary: str, url: str, checks: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "run",
            f"{url}/openapi.json",
            "--checks",
            checks,
            "--max-examples",
            "50",
            "--generation-deterministic",
            "--report-dir",
            str(tmp_path / "schemathesis-report"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(
    registry: Any, tmp_path: Path, serves: list[Serve], embedded_broker: str
) -> None:
    binary = schemathesis_binary()
    assert binary is not None
    # a broker behind POST /feedback: the labels the fuzzer sends are published, not 503
    serve = Serve(
        registry.tracking_uri,
        tmp_path / "serve.log",
        IRIS_API_KEY="",
        IRIS_KAFKA_BOOTSTRAP_SERVERS=embedded_broker,
    )
    serves.append(serve)
    serve.wait_ready()
    strict = _run(binary, serve.url, ASSERTED_CHECKS, tmp_path)
    assert strict.returncode == 0, strict.stdout[-5000:] + strict.stderr[-2000:]
    everything = _run(binary, serve.url, "all", tmp_path)
    found = sorted(set(re.findall(r"❌ (ST\d{3} [^:\n]+)", everything.stdout)))
    generated = re.findall(r"(\d+) generated", strict.stdout)
    record_figures(
        "schemathesis",
        {
            "asserted_checks_pass": True,
            "cases_generated": int(generated[-1]) if generated else None,
            "all_checks_findings": found,
        },
    )
    assert "Server error" not in everything.stdout
