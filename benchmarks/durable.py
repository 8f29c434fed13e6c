"""What durable agents cost: CPU per call with ``persist_agent_state`` off and on.

Run ``.venv/bin/python benchmarks/durable.py`` (``make bench`` runs it after ``bench.py``).
A host, a worker serving a small stateful agent (it echoes and counts; its state is
``{"count": n}``) and this driver are separate processes. Each configuration runs the
same calls (16 in flight over 8 agent ids) and prints the CPU the three processes spent
per call, and its ratio to persistence off: the cost of a save per call (and a load per
agent id). The states go to the host's memory, to files (``--state-dir``), and to Redis
(a host of a one-host cluster on a throwaway ``redis-server``, ``tests/redis_server.py``;
"off" is measured on that cluster too, to compare like with like).
``--quick`` runs tiny counts, as a smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autogen_core import AgentId
from tests.redis_server import RedisServer

from bench import checked_call, cluster, cpu_seconds, driver

IN_FLIGHT = 16
KEYS = 8


async def one_run(calls: int, durable: bool, host_args: tuple[str, ...]) -> dict[str, float]:
    worker_args = ("--counter", "counter", *(("--durable",) if durable else ()))
    async with (
        cluster("http", worker_args, host_args=host_args) as (address, host, workers),
        driver("http", address) as drv,
    ):
        targets = [AgentId("counter", str(k)) for k in range(KEYS)]
        for n in range(100):  # warm-up; each agent id is activated (its state loaded) here
            await checked_call(drv, n, targets[n % KEYS])
        counter = iter(range(calls))

        async def lane() -> None:
            for n in counter:
                await checked_call(drv, n, targets[n % KEYS])

        def cpu_now() -> tuple[float, float, float]:
            return (host.cpu_seconds(), workers[0].cpu_seconds(), cpu_seconds("self"))

        before = cpu_now()
        start = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
        elapsed = time.perf_counter() - start
        after = cpu_now()
    cpu = [(b - a) / calls * 1e6 for a, b in zip(before, after, strict=True)]
    return {
        "rpc_per_s": calls / elapsed,
        "cpu_us_per_call": sum(cpu),
        "host_us": cpu[0],
        "worker_us": cpu[1],
        "driver_us": cpu[2],
    }


async def main(calls: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as states, RedisServer() as redis:
        on_redis = ("--redis-url", redis.url)
        configurations: list[tuple[str, bool, tuple[str, ...]]] = [
            ("off", False, ()),
            ("on, memory store", True, ()),
            ("on, file store", True, ("--state-dir", states)),
            ("off, cluster", False, on_redis),
            ("on, Redis store", True, on_redis),
        ]
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in configurations}
        for _ in range(runs):  # interleaved, so that a noisy moment does not hit one configuration
            for name, durable, host_args in configurations:
                results[name].append(await one_run(calls, durable, host_args))
    medians: dict[str, dict[str, Any]] = {
        name: {key: statistics.median(run[key] for run in runs_) for key in runs_[0]}
        for name, runs_ in results.items()
    }
    bases = {"off": medians["off"]["cpu_us_per_call"], "cluster": medians["off, cluster"]["cpu_us_per_call"]}
    # "x off": the CPU per call over the same host's without persistence (a host alone, or a cluster's).
    widths = {"calls/s": 9, "CPU us/call": 12, "host": 7, "worker": 7, "driver": 7, "x off": 6}
    print(f"{'persistence':<20} " + " ".join(f"{name:>{width}}" for name, width in widths.items()))
    for name, m in medians.items():
        base = bases["cluster" if "cluster" in name or "Redis" in name else "off"]
        print(
            f"{name:<20} {m['rpc_per_s']:>9.0f} {m['cpu_us_per_call']:>12.0f} {m['host_us']:>7.0f} "
            f"{m['worker_us']:>7.0f} {m['driver_us']:>7.0f} {m['cpu_us_per_call'] / base:>6.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3, help="the table shows medians")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test, not a measurement")
    args = parser.parse_args()
    asyncio.run(main(200 if args.quick else args.calls, 1 if args.quick else args.runs))
