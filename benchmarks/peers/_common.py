"""Shared by every peer runner (stdlib only: it runs in each peer's own virtualenv).

A runner is ``python run_<system>.py WORKLOAD [options]``; it prints progress on stderr and one
JSON object on the last line of stdout: ``{"value": ..., "unit": ..., "detail": {...}}``.
W3's writer is the same script started again as ``python run_<system>.py writer ...`` in a
process of its own, so the writer never shares the consumer's event loop or GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

PAYLOAD_NOTE = "x" * 120  # the payload size of benchmarks/database_bus.py


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("workload", choices=["w1", "w2", "w3", "writer"])
    p.add_argument("--url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/h3")
    p.add_argument("--n", type=int, default=200, help="W1: commands of each kind")
    p.add_argument("--backlog", type=int, default=100_000, help="W2: events in the backlog")
    p.add_argument("--rate", type=int, default=200, help="W3: events/s committed")
    p.add_argument("--seconds", type=float, default=10.0, help="W3: how long the writer runs")
    p.add_argument("--mode", default="", help="a runner's variant (eventsourcing: tracking)")
    return p.parse_args()


def dsn(url: str) -> str:
    """``postgresql+asyncpg://...`` -> ``postgresql://...`` for drivers without SQLAlchemy."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


def emit(value: float, unit: str, **detail: Any) -> None:
    print(json.dumps({"value": value, "unit": unit, "detail": detail}), flush=True)


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def percentiles(latencies: list[float]) -> dict[str, float]:
    lat = sorted(latencies)
    return {
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[max(0, int(len(lat) * 0.99) - 1)] * 1000,
        "events": len(lat),
    }


def start_writer(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """This script again, as the W3 writer, in a process of its own."""
    cmd = [sys.executable, sys.argv[0], "writer", "--url", args.url, "--rate", str(args.rate)]
    cmd += ["--seconds", str(args.seconds), "--mode", args.mode]
    return subprocess.Popen(cmd, cwd=os.getcwd())


async def paced(rate: int, seconds: float, commit: Callable[[int], Awaitable[None]]) -> None:
    """Call ``commit(i)`` ``rate`` times a second for ``seconds`` (each call one commit)."""
    interval, n = 1.0 / rate, int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        await commit(i)
        delay = start + (i + 1) * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


def paced_sync(rate: int, seconds: float, commit: Callable[[int], None]) -> None:
    interval, n = 1.0 / rate, int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        commit(i)
        delay = start + (i + 1) * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


async def wait_for_count(seen: Callable[[], int], target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while seen() < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {seen()} of {target} delivered in {timeout:.0f}s")
        await asyncio.sleep(0.01)
