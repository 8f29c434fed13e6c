"""A smoke run of the benchmark harness: every runtime, one scenario, tiny counts.

It checks that the harness works (processes start, replies are verified, the table is
printed); the figures of a quick run mean nothing and are not looked at.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_harness_runs_on_every_runtime() -> None:
    # http-fast runs every process on uvloop with msgspec: the [fast] extra, end to end.
    runtimes = "grpc,http,http-fast"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--quick", "--only", "latency", "--runtimes", runtimes],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("RPC latency")]
    assert [row[3] for row in rows] == ["p50_ms", "p90_ms", "p99_ms"]
    assert all(float(row[-1]) > 0 and float(row[-2]) > 0 for row in rows)  # both ratios to grpc
