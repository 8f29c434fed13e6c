"""Benchmarks: the same scenarios on autogen-ext's gRPC runtime and on ours, in one run.

Run ``make bench`` (or ``.venv/bin/python benchmarks/bench.py``). The host, every worker
and this driver are separate OS processes (``benchmarks/_procs.py``); the driver is itself
a worker runtime of the runtime under test. Each scenario checks its results (every reply
equals its request; every event arrives once) and fails loudly otherwise. The table gives
each figure for both runtimes and the ratio ours / gRPC. ``--quick`` runs tiny counts, as
a smoke test; the figures are then meaningless.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.redis_server

from autogen_core import AgentId, TopicId

from _procs import Blob, Seq, make_worker, run_loop

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A scenario produced a wrong result or did not finish."""


@dataclass
class Proc:
    process: asyncio.subprocess.Process

    async def line(self, timeout: float = 60.0) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            raise BenchError(f"process {self.process.pid} exited (code {self.process.returncode})")
        return raw.decode().strip()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)


def cpu_seconds(pid: int | str) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def spawn(*args: str) -> AsyncIterator[Proc]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "_procs.py"), *args, stdout=asyncio.subprocess.PIPE
    )
    proc = Proc(process)
    try:
        ready = await proc.line()
        if ready != "READY":
            raise BenchError(f"{args}: expected READY, got {ready!r}")
        yield proc
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def cluster(
    runtime: str, *workers: tuple[str, ...], host_args: tuple[str, ...] = ()
) -> AsyncIterator[tuple[str, Proc, list[Proc]]]:
    """A host and worker processes; yields the address, the host and the workers."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    async with spawn("host", runtime, str(port), *host_args) as host, contextlib.AsyncExitStack() as stack:
        procs = [await stack.enter_async_context(spawn("worker", runtime, address, *w)) for w in workers]
        yield address, host, procs


@contextlib.asynccontextmanager
async def driver(runtime: str, address: str) -> AsyncIterator[Any]:
    worker: Any = make_worker(runtime, address)
    await worker.start()
    try:
        yield worker
    finally:
        try:
            await worker.stop()
        except Exception as exc:  # gRPC's stop() re-raises a stream error seen earlier (e.g. 16 MiB)
            print(f"# {runtime} driver stop: {type(exc).__name__}", file=sys.stderr)


async def checked_call(worker: Any, n: int, recipient: AgentId, size: int = 16) -> None:
    # Awaited bare, as an application would: each scenario as a whole is bounded (see
    # measure()). A wait_for() per call would time the harness too: on Python 3.11 it runs
    # each call in a task of its own, about 50 us a call on our runtime (docs/performance.md).
    body = f"{n}:".ljust(size, "x")
    reply = await worker.send_message(Blob(body), recipient)
    if reply != Blob(body):
        raise BenchError(f"wrong reply to call {n}: {str(reply)[:80]}")


async def rpc_latency(runtime: str, calls: int) -> dict[str, float]:
    async with cluster(runtime, ("--echo", "echo")) as (address, _, _), driver(runtime, address) as drv:
        target = AgentId("echo", "k")
        for n in range(calls // 10):  # warm-up
            await checked_call(drv, n, target)
        times = []
        for n in range(calls):
            start = time.perf_counter()
            await checked_call(drv, n, target)
            times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=100)
    return {"p50_ms": q[49] * 1e3, "p90_ms": q[89] * 1e3, "p99_ms": q[98] * 1e3}


async def rpc_throughput(
    runtime: str, calls: int, in_flight: int, replicas: int = 0, keys: int = 8
) -> dict[str, float]:
    """Calls to ``echo`` from ``in_flight`` lanes; with ``replicas``, the host has replicas on
    and that many echo workers serve the type (the echo CPU figure is their sum)."""
    echoes = [("--echo", "echo")] * max(1, replicas)
    host_args = ("--replicas",) if replicas else ()
    async with (
        cluster(runtime, *echoes, host_args=host_args) as (address, host, workers),
        driver(runtime, address) as drv,
    ):
        targets = [AgentId("echo", str(k)) for k in range(keys)]
        for n in range(50):
            await checked_call(drv, n, targets[n % keys])
        counter = iter(range(calls))

        async def lane() -> None:
            for n in counter:
                await checked_call(drv, n, targets[n % keys])

        def cpu_now() -> tuple[float, float, float]:
            return (host.cpu_seconds(), sum(w.cpu_seconds() for w in workers), cpu_seconds("self"))

        procs_before = cpu_now()
        start = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(in_flight)))
        elapsed = time.perf_counter() - start
        procs_after = cpu_now()
    cpu = [(after - before) / calls * 1e3 for before, after in zip(procs_before, procs_after, strict=True)]
    return {
        "rpc_per_s": calls / elapsed,
        "cpu_ms_per_rpc": sum(cpu),
        "host_cpu_ms": cpu[0],
        "echo_cpu_ms": cpu[1],
        "driver_cpu_ms": cpu[2],
    }


async def replicated(runtime: str, calls: int) -> dict[str, float | str]:
    """128 calls in flight over 64 agent ids of one type: served by one worker (replicas off,
    then on) and by two (replicas on, separate processes). The host's CPU per call is what
    placement adds; gRPC refuses a second worker for a type."""
    if runtime == "grpc":
        return dict.fromkeys(REPLICA_FIGURES, "one worker per type")
    exclusive = await rpc_throughput(runtime, calls, 128, keys=64)
    one = await rpc_throughput(runtime, calls, 128, replicas=1, keys=64)
    two = await rpc_throughput(runtime, calls, 128, replicas=2, keys=64)
    return {
        "exclusive_rpc_per_s": exclusive["rpc_per_s"],
        "one_replica_rpc_per_s": one["rpc_per_s"],
        "two_replicas_rpc_per_s": two["rpc_per_s"],
        "exclusive_host_cpu_ms": exclusive["host_cpu_ms"],
        "one_replica_host_cpu_ms": one["host_cpu_ms"],
        "two_replicas_host_cpu_ms": two["host_cpu_ms"],
    }


REPLICA_FIGURES = (
    "exclusive_rpc_per_s",
    "one_replica_rpc_per_s",
    "two_replicas_rpc_per_s",
    "exclusive_host_cpu_ms",
    "one_replica_host_cpu_ms",
    "two_replicas_host_cpu_ms",
)


async def in_process_throughput(calls: int, in_flight: int) -> dict[str, float]:
    """The same calls on autogen-core's SingleThreadedAgentRuntime, in this one process: the
    reference the issue sets (a distributed runtime should beat it under concurrency)."""
    from autogen_core import SingleThreadedAgentRuntime

    from _procs import SERIALIZERS, Echo

    runtime = SingleThreadedAgentRuntime()
    runtime.add_message_serializer(SERIALIZERS)
    await runtime.register_factory("echo", Echo)
    runtime.start()
    targets = [AgentId("echo", str(k)) for k in range(8)]
    counter = iter(range(calls))

    async def lane() -> None:
        for n in counter:
            await checked_call(runtime, n, targets[n % 8])

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    elapsed = time.perf_counter() - start
    await runtime.stop()
    return {"rpc_per_s": calls / elapsed}


async def fan_out(runtime: str, events: int, subscribers: int) -> dict[str, float]:
    sinks = [("--sink", f"sink{i}", "--expect", str(events)) for i in range(subscribers)]
    async with cluster(runtime, *sinks) as (address, _, workers), driver(runtime, address) as drv:
        # Warm-up round, also checking the subscriptions are in place.
        for n in range(events):
            await drv.publish_message(Seq(n), TopicId("bench", "s"))
        for worker in workers:
            await expect_done(worker, events)
        start = time.perf_counter()
        for n in range(events):
            await drv.publish_message(Seq(n), TopicId("bench", "s"))
        for worker in workers:
            await expect_done(worker, events)
        elapsed = time.perf_counter() - start
    return {"events_per_s": events / elapsed, "deliveries_per_s": events * subscribers / elapsed}


async def fan_out_delivery(runtime: str, events: int, subscribers: int) -> dict[str, float | str]:
    """Fan-out on two clusters of one host each (on one redis-server), at-most-once and
    at-least-once, up side by side, their rounds alternating: the machine's slow spells hit
    both alike. Each figure is the median of three rounds."""
    if runtime == "grpc":
        return {}  # no cluster, no at-least-once: nothing to compare
    from tests.redis_server import RedisServer

    modes = ("at-most-once", "at-least-once")
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    with RedisServer() as redis:
        async with contextlib.AsyncExitStack() as stack:
            setups = []
            for mode in modes:
                host_args = ("--redis-url", redis.url, "--delivery", mode, "--cluster-name", mode)
                sinks = [("--sink", f"sink{i}", "--expect", str(events)) for i in range(subscribers)]
                address, _, workers = await stack.enter_async_context(
                    cluster(runtime, *sinks, host_args=host_args)
                )
                setups.append((mode, await stack.enter_async_context(driver(runtime, address)), workers))
            for round_ in range(4):  # the first round of each warms up
                for mode, drv, workers in setups:
                    start = time.perf_counter()
                    for n in range(events):
                        await drv.publish_message(Seq(n), TopicId("bench", "s"))
                    for worker in workers:
                        await expect_done(worker, events)
                    if round_:
                        rates[mode].append(events / (time.perf_counter() - start))
    found: dict[str, float | str] = {f"{mode}_events_per_s": statistics.median(rates[mode]) for mode in modes}
    found["at_least_once_ratio"] = statistics.median(
        [alo / amo for amo, alo in zip(rates["at-most-once"], rates["at-least-once"], strict=True)]
    )
    return found


async def expect_done(worker: Proc, events: int) -> None:
    line = await worker.line(timeout=120)
    if line != f"DONE {events} 0":
        raise BenchError(f"a subscriber reported {line!r}, expected 'DONE {events} 0'")


async def big_payloads(runtime: str, calls: int) -> dict[str, float | str]:
    mib = 1024 * 1024
    async with cluster(runtime, ("--echo", "echo")) as (address, _, _), driver(runtime, address) as drv:
        target = AgentId("echo", "k")
        await checked_call(drv, -1, target, mib)
        start = time.perf_counter()
        for n in range(calls):
            await checked_call(drv, n, target, mib)
        rate = calls * 2 / (time.perf_counter() - start)  # MiB moved per second, both ways
        try:
            await asyncio.wait_for(checked_call(drv, -2, target, 16 * mib), 30)
            big: str = "ok"
        except (asyncio.TimeoutError, Exception) as exc:  # gRPC hangs or fails past 4 MiB
            big = f"fails ({type(exc).__name__})"
    return {"mib_per_s": rate, "16_mib_rpc": big}


async def many_workers(runtime: str, count: int) -> dict[str, float]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    per_process = 250
    async with spawn("host", runtime, str(port)) as host:
        rss_before = rss_bytes(host.process.pid)
        start = time.perf_counter()
        async with contextlib.AsyncExitStack() as stack:
            groups = [(i, min(per_process, count - i)) for i in range(0, count, per_process)]
            for first, size in groups:
                await stack.enter_async_context(
                    spawn("worker", runtime, address, "--echo", f"w{first}", "--count", str(size))
                )
            connect_s = time.perf_counter() - start
            per_worker = (rss_bytes(host.process.pid) - rss_before) / count
            async with driver(runtime, address) as drv:
                calls = [
                    checked_call(drv, first + i, AgentId(f"w{first}-{i}" if size > 1 else f"w{first}", "k"))
                    for first, size in groups
                    for i in range(size)
                ]
                start = time.perf_counter()
                await gather_limited(calls, 64)
                one_each_s = time.perf_counter() - start
    return {
        "connect_register_s": connect_s,
        "host_kib_per_worker": per_worker / 1024,
        "rpc_to_each_s": one_each_s,
    }


async def gather_limited(calls: list[Awaitable[None]], limit: int) -> None:
    slots = asyncio.Semaphore(limit)

    async def one(call: Awaitable[None]) -> None:
        async with slots:
            await call

    await asyncio.gather(*(one(call) for call in calls))


async def start_up(runtime: str) -> dict[str, float]:
    start = time.perf_counter()
    async with cluster(runtime, ("--echo", "echo")) as (address, _, _), driver(runtime, address) as drv:
        await checked_call(drv, 0, AgentId("echo", "k"))
        elapsed = time.perf_counter() - start
    return {"launch_to_first_rpc_s": elapsed}


Scenario = Callable[[str], Awaitable[dict[str, Any]]]


def scenarios(quick: bool) -> list[tuple[str, Scenario]]:
    scale = 0.02 if quick else 1.0

    def n(value: int) -> int:
        return max(4, int(value * scale))

    return [
        ("RPC latency, sequential", lambda rt: rpc_latency(rt, n(3000))),
        ("RPC throughput, 1 in flight", lambda rt: rpc_throughput(rt, n(3000), 1)),
        ("RPC throughput, 16 in flight", lambda rt: rpc_throughput(rt, n(10000), 16)),
        ("RPC throughput, 128 in flight", lambda rt: rpc_throughput(rt, n(20000), 128)),
        ("Fan-out to 1 subscriber", lambda rt: fan_out(rt, n(10000), 1)),
        ("Fan-out to 4 subscribers", lambda rt: fan_out(rt, n(10000), 4)),
        ("Fan-out to 4, at-least-once (Redis)", lambda rt: fan_out_delivery(rt, n(10000), 4)),
        ("1 MiB RPCs (and one of 16 MiB)", lambda rt: big_payloads(rt, n(100))),
        ("Many workers", lambda rt: many_workers(rt, 20 if quick else 1000)),
        ("Replicas, 128 in flight", lambda rt: replicated(rt, n(20000))),
        ("Start-up", start_up),
    ]


#: The runtimes a run compares: how each is set up, given to every process of it.
RUNTIMES: dict[str, dict[str, str]] = {
    # autogen-ext's runtime, on the standard event loop, as its users run it.
    "grpc": {},
    # Ours, pure Python: the standard library's json and event loop.
    "http": {"AUTOGEN_HTTP_JSON": "stdlib"},
    # Ours with the [fast] extra: msgspec for the frames, uvloop for every process's loop.
    "http-fast": {"BENCH_LOOP": "uvloop"},
}


#: Seconds any one scenario may take before the run fails (``--deadline``): what bounds
#: every call in it.
SCENARIO_DEADLINE = 600.0


def transport(runtime: str) -> str:
    return "grpc" if runtime == "grpc" else "http"


async def measure(
    runtime: str, quick: bool, only: str | None, deadline: float = SCENARIO_DEADLINE
) -> dict[str, dict[str, Any]]:
    """Every scenario (whose name contains ``only``) on one runtime, in this process."""
    results: dict[str, dict[str, Any]] = {}
    for name, scenario in scenarios(quick):
        if only and only.lower() not in name.lower():
            continue
        results[name] = await asyncio.wait_for(scenario(transport(runtime)), deadline)
        print(f"# {name} [{runtime}]: {json.dumps(results[name])}", file=sys.stderr)
    if runtime != "grpc" and (not only or "128" in only or "in-process" in only.lower()):
        name = "In-process runtime, 128 in flight"
        results[name] = await asyncio.wait_for(in_process_throughput(200 if quick else 20000, 128), deadline)
        print(f"# {name} [{runtime}]: {json.dumps(results[name])}", file=sys.stderr)
    return results


def measure_in_child(runtime: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Run :func:`measure` in a fresh process set up as ``runtime`` (each has its own codec and loop)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", runtime]
    if args.quick:
        command.append("--quick")
    if args.only:
        command += ["--only", args.only]
    command += ["--deadline", str(args.deadline)]
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOGEN_HTTP_JSON", "BENCH_LOOP")}
    env.update(RUNTIMES[runtime])
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"the {runtime} run failed (exit code {done.returncode})")
    results: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return results


def median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, (int, float))]
    if len(numbers) == len(values):
        return statistics.median(numbers)
    return values[0] if len(set(map(str, values))) == 1 else " / ".join(map(str, values))


def ratio(ours: Any, theirs: Any) -> str:
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and theirs:
        return f"{ours / theirs:.2f}"
    return "-"


def show(value: Any) -> str:
    return f"{value:,.3f}" if isinstance(value, float) else str(value)


def table(results: dict[str, dict[str, dict[str, Any]]], runtimes: list[str]) -> list[str]:
    """Scenario, figure, one column per runtime, then each of ours over gRPC."""
    ours = [r for r in runtimes if r != "grpc"]
    ratios = [f"{r}/grpc" for r in ours] if "grpc" in runtimes else []
    width = max([20, *(len(f) for by_runtime in results.values() for fs in by_runtime.values() for f in fs)])
    lines = [f"{'scenario':34} {'figure':{width}} " + " ".join(f"{c:>12}" for c in [*runtimes, *ratios])]
    for name, by_runtime in results.items():
        # Every runtime's figures, in order of first appearance (one may lack some: "-").
        figures = dict.fromkeys(f for fs in by_runtime.values() for f in fs)
        for figure in figures:
            cells = [show(by_runtime.get(r, {}).get(figure, "-")) for r in runtimes]
            if ratios:
                theirs = by_runtime.get("grpc", {}).get(figure)
                cells += [ratio(by_runtime.get(r, {}).get(figure), theirs) for r in ours]
            lines.append(f"{name[:34]:34} {figure:{width}} " + " ".join(f"{c:>12}" for c in cells))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test, not a measurement")
    parser.add_argument("--only", help="run the scenarios whose name contains this text")
    parser.add_argument(
        "--runtimes", default=",".join(RUNTIMES), help=f"comma-separated, of: {', '.join(RUNTIMES)}"
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat everything; the table shows medians")
    parser.add_argument("--json", type=Path, help="also write every run's results here")
    parser.add_argument(
        "--deadline",
        type=float,
        default=SCENARIO_DEADLINE,
        help="seconds one scenario may take (default: 600)",
    )
    parser.add_argument("--child", choices=list(RUNTIMES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one runtime's measurements, as JSON on stdout
        found: dict[str, Any] = {}

        async def child() -> None:
            found.update(await measure(args.child, args.quick, args.only, args.deadline))

        run_loop(child())
        print(json.dumps(found))
        return
    runtimes = args.runtimes.split(",")
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown:
        parser.error(f"unknown runtimes: {', '.join(sorted(unknown))}")
    runs: list[dict[str, dict[str, Any]]] = []  # one per run and runtime, tagged below
    collected: dict[str, dict[str, dict[str, list[Any]]]] = {}
    for run in range(args.runs):
        for runtime in runtimes:  # interleaved, so a slow spell of the machine hits all alike
            results = measure_in_child(runtime, args)
            runs.append({"run": {"index": run, "runtime": runtime}, **results})
            for name, figures in results.items():
                by_runtime = collected.setdefault(name, {}).setdefault(runtime, {})
                for figure, value in figures.items():
                    by_runtime.setdefault(figure, []).append(value)
    medians = {
        name: {rt: {f: median(v) for f, v in figures.items()} for rt, figures in by_runtime.items()}
        for name, by_runtime in collected.items()
    }
    print(f"# medians of {args.runs} run(s); ours over gRPC as ratios", file=sys.stderr)
    for line in table(medians, runtimes):
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
