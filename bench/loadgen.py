"""Closed-loop HTTP load generator (aiohttp), run as its own process; prints one JSON line.

``python -m bench.loadgen URL --concurrency N --duration S --body JSON``: N connections each send
POST requests back to back for S seconds (after a short warm-up). Reports req/s, p50/p99 latency
(ms), errors and the generator's own CPU use (a generator near 100% of one core is the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import aiohttp


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def run(
    url: str, concurrency: int, duration: float, warmup: float, body: bytes
) -> dict[str, float | None]:
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def one_connection() -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (TimeoutError, aiohttp.ClientError):
                    status = 0
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= stop_at:
                    if status == 200:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1
                        statuses[status] = statuses.get(status, 0) + 1

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    p50 = percentile(latencies, 0.50)
    p99 = percentile(latencies, 0.99)
    return {
        "rps": len(latencies) / duration,
        "p50_ms": p50 * 1000 if p50 is not None else None,
        "p99_ms": p99 * 1000 if p99 is not None else None,
        "errors": float(errors),
        "ok": float(len(latencies)),
        "loadgen_cpu_share": cpu / (duration + warmup),
        "statuses": statuses,  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--body", default="{}")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args.url, args.concurrency, args.duration, args.warmup, args.body.encode()))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
