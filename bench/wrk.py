"""HTTP load with wrk (Debian's ``wrk``, a C load generator): one POST body, JSON stats back.

wrk is used instead of a Python generator because on 2 cores an aiohttp generator tops out near
12k req/s and under-reports any server above ~5k. Latency percentiles come from wrk's own
histogram (microseconds); non-2xx answers and socket errors are both counted as errors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import Skip

SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("WRK_BODY_FILE"), "rb"):read("*a")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %f, "status_errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def available() -> str | None:
    return None if shutil.which("wrk") else "wrk is not installed (Debian package wrk; `make system-deps`)"


def run(url: str, connections: int, duration: float, body: bytes, threads: int = 2) -> dict[str, Any]:
    """``wrk -t threads -c connections -d duration`` POSTing ``body``; req/s, p50/p90/p99 in ms."""
    reason = available()
    if reason:
        raise Skip(reason)
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="iris-wrk-") as tmp:
        script, payload = Path(tmp) / "post.lua", Path(tmp) / "body.json"
        script.write_text(SCRIPT)
        payload.write_bytes(body)
        cmd = [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(duration))}s",  # whole seconds: wrk reads "4.0s" as a bad argument
            "--latency",
            "-s",
            str(script),
        ]
        out = subprocess.run(
            [*cmd, url],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=False,
            env={"WRK_BODY_FILE": str(payload), "PATH": "/usr/bin:/bin"},
        )
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise Skip(f"wrk failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-300:]}")
    stats: dict[str, Any] = json.loads(line.removeprefix("WRKJSON "))
    seconds = stats["duration_us"] / 1e6
    errors = stats["status_errors"] + stats["socket_errors"]
    return {
        "rps": stats["requests"] / seconds if seconds else 0.0,
        "p50_ms": stats["p50_us"] / 1000,
        "p90_ms": stats["p90_us"] / 1000,
        "p99_ms": stats["p99_us"] / 1000,
        "errors": errors,
        "ok": stats["requests"] - errors,
        "requests": stats["requests"],
    }
