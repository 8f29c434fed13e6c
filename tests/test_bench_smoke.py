"""A smoke run of the benchmark harnesses: every runtime, one scenario, tiny counts; the
cluster's benchmark likewise, and one short cycle of the cluster soak's faults.

It checks that the harness works (processes start, replies are verified, the table is
printed); the figures of a quick run mean nothing and are not looked at.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_cluster_benchmark_harness_runs() -> None:
    # Two hosts of one cluster on a throwaway redis-server, against gRPC's one host.
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/cluster_bench.py",
            "--quick",
            "--only",
            "latency",
            "--runtimes",
            "grpc,http",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {
        line.split()[3]: line.split()[4:] for line in done.stdout.splitlines() if line.startswith("Cluster")
    }
    paths = ("plain", "same_host", "cross_host", "same_host_redis", "cross_host_redis")  # links, then Redis
    assert set(rows) == {f"{path}_{q}_ms" for path in paths for q in ("p50", "p99")}
    assert float(rows["plain_p50_ms"][0]) > 0 and float(rows["plain_p50_ms"][-1]) > 0  # gRPC's, and the ratio
    for path in ("cross_host", "cross_host_redis"):
        assert rows[f"{path}_p50_ms"][0] == "-" and float(rows[f"{path}_p50_ms"][1]) > 0
    assert any(
        line.startswith("http ") and "cross_host_p50_ms / same_host_p50_ms" in line
        for line in done.stdout.splitlines()
    )


@pytest.mark.timeout(180)
def test_cluster_soak_runs_one_short_cycle_of_faults() -> None:
    # Three hosts, a host SIGKILLed, Redis SIGKILLed and frozen, each for a moment: the soak's
    # bookkeeping works end to end, and no call hangs and no event arrives twice (at most once).
    command = [sys.executable, "benchmarks/cluster_soak.py", "--cycles", "1", "--settle", "2"]
    command += ["--down", "0.5", "--freeze", "1", "--concurrency", "2", "--rate", "20", "--call-timeout", "5"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [phase["phase"].split(" (")[0].split(",")[0] for phase in report["phases"]] == [
        "steady",
        "host SIGKILL",
        "host 0's workers stopped and started again on it",
        "Redis SIGKILL",
        "Redis SIGSTOP for 1 s",
    ]
    assert report["totals"]["calls_ok"] > 0 and report["totals"]["events_published"] > 0
    assert report["totals"]["calls_hung"] == 0
    assert report["totals"]["event_copies_duplicated"] == 0
    failures = {error for phase in report["phases"] for error in phase["failures_by_type"]}
    assert not {error for error in failures if error.startswith("untyped") or error == "wrong reply"}
