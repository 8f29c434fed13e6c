"""The processes a benchmark runs: a host, or a worker, on either runtime.

Usage::

    python benchmarks/_procs.py host RUNTIME PORT [--replicas] [--state-dir DIR] [--redis-url URL
        [--secret SECRET] [--lease S] [--delivery MODE] [--cluster-name NAME]]
    python benchmarks/_procs.py worker RUNTIME ADDRESS [--echo TYPE] [--sink TYPE --expect N] [--count K]
        [--counter TYPE [--durable]]

``RUNTIME`` is ``http`` (ours) or ``grpc`` (autogen-ext's); the environment variables in
``bench.RUNTIMES`` (``AUTOGEN_HTTP_JSON``, ``BENCH_LOOP``) pick the variant of ours. Each
prints ``READY`` when it serves, then runs until SIGTERM. A sink worker prints
``DONE <received> <duplicates>`` once it has received ``N`` events (it keeps counting
afterwards, and prints again when a new round of ``N`` arrives). ``--count K`` runs K worker
runtimes in this one process, serving the echo types ``TYPE-0`` ... ``TYPE-<K-1>`` (the
many-workers scenario). ``--counter TYPE`` serves a small stateful agent (it echoes and
counts); with ``--durable`` its worker persists agent state (``benchmarks/durable.py``).
``--redis-url`` makes the host (ours only) one host of a cluster on that Redis
(``benchmarks/cluster_bench.py``, ``benchmarks/durable.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from autogen_core import (
    AgentRuntime,
    BaseAgent,
    MessageContext,
    TypeSubscription,
    try_get_known_serializers_for_type,
)


@dataclass
class Blob:
    data: str


@dataclass
class Seq:
    n: int


SERIALIZERS = [*try_get_known_serializers_for_type(Blob), *try_get_known_serializers_for_type(Seq)]


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on the event loop ``BENCH_LOOP`` names: ``uvloop``, or by default the standard one."""
    from autogen_http_runtime._cli.main import _runner  # what `serve --loop` uses

    run = _runner("uvloop" if os.environ.get("BENCH_LOOP") == "uvloop" else "asyncio")
    if run is None:
        raise SystemExit("BENCH_LOOP=uvloop needs uvloop: pip install 'autogen-http-runtime[fast]'")
    run(main)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def make_worker(runtime: str, address: str, durable: bool = False) -> AgentRuntime:
    if runtime == "http":
        from autogen_http_runtime import HttpWorkerAgentRuntime

        worker: Any = HttpWorkerAgentRuntime(address, persist_agent_state=durable)
    else:
        from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime

        worker = GrpcWorkerAgentRuntime(host_address=address)
    worker.add_message_serializer(SERIALIZERS)
    return worker  # type: ignore[no-any-return]


class Echo(BaseAgent):
    def __init__(self) -> None:
        super().__init__("echo")

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        return message


class Counter(BaseAgent):
    """Echoes, and counts what it echoed: a small agent with a state."""

    def __init__(self) -> None:
        super().__init__("counter")
        self.count = 0

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        self.count += 1
        return message

    async def save_state(self) -> Mapping[str, Any]:
        return {"count": self.count}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.count = int(state["count"])


class Sink(BaseAgent):
    """Counts numbered events; reports once a round of ``expect`` distinct numbers is complete."""

    def __init__(self, expect: int) -> None:
        super().__init__("sink")
        self._expect = expect
        self._seen: set[int] = set()
        self._duplicates = 0

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        if isinstance(message, Seq):
            if message.n in self._seen:
                self._duplicates += 1
            self._seen.add(message.n)
            if len(self._seen) == self._expect:
                say(f"DONE {len(self._seen)} {self._duplicates}")
                self._seen.clear()
                self._duplicates = 0
        return None


async def wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()


async def watch_stalls(name: str, period: float = 0.1, report: float = 0.5) -> None:
    """Say on stderr when this process's event loop did not run for ``report`` seconds or more:
    a cluster host that stalls longer than its lease (3 s) is declared gone by the others."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(period)
        if (late := loop.time() - before - period) >= report:
            print(f"# {name}: event loop stalled {late:.2f} s", file=sys.stderr, flush=True)


async def run_host(
    runtime: str,
    port: int,
    replicas: bool = False,
    state_dir: str | None = None,
    redis_url: str | None = None,
    secret: str | None = None,
    lease: float = 3.0,
    delivery: str = "at-most-once",
    cluster_name: str = "default",
    link_url: str | None = None,
) -> None:
    if runtime == "http":
        from autogen_http_runtime import HttpAgentServer

        # With a Redis: a host of a cluster (cluster_bench.py; durable.py and at-least-once
        # against at-most-once in bench.py on a cluster of one).
        cluster: dict[str, Any] = (
            {}
            if redis_url is None
            else {
                "redis_url": redis_url,
                "cluster_secret": secret or "bench",
                "cluster_lease": lease,
                "cluster_name": cluster_name,
                "delivery": delivery,
                "cluster_link_url": link_url,
            }
        )
        server: Any = HttpAgentServer(
            "127.0.0.1", port=port, replicas=replicas, state_dir=state_dir, **cluster
        )
        await server.start()
        watch = asyncio.ensure_future(watch_stalls(f"host :{port}")) if redis_url else None
        say("READY")
        await wait_for_signal()
        if watch is not None:
            watch.cancel()
        await server.stop(grace=0)
    else:
        from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntimeHost

        host = GrpcWorkerAgentRuntimeHost(address=f"127.0.0.1:{port}")
        host.start()
        # gRPC's start() returns before the port is bound; wait until it accepts.
        for _ in range(500):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.01)
        say("READY")
        await wait_for_signal()
        await host.stop(grace=0)


async def run_workers(args: argparse.Namespace) -> None:
    workers = [make_worker(args.runtime, args.address, args.durable) for _ in range(args.count)]
    for index, worker in enumerate(workers):
        await worker.start()  # type: ignore[attr-defined]
        if args.echo:
            name = args.echo if args.count == 1 else f"{args.echo}-{index}"
            await worker.register_factory(name, Echo)
        if args.counter:
            await worker.register_factory(args.counter, Counter)
        if args.sink:
            await worker.register_factory(args.sink, lambda: Sink(args.expect))
            await worker.add_subscription(TypeSubscription(topic_type="bench", agent_type=args.sink))
    say("READY")
    await wait_for_signal()
    for worker in workers:
        await worker.stop()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    host = sub.add_parser("host")
    host.add_argument("runtime", choices=["http", "grpc"])
    host.add_argument("port", type=int)
    host.add_argument("--replicas", action="store_true")
    host.add_argument("--state-dir")
    host.add_argument("--redis-url", help="join the cluster on this Redis (ours only)")
    host.add_argument("--secret", help="the cluster's secret (with --redis-url)")
    host.add_argument("--lease", type=float, default=3.0, help="the cluster's lease (with --redis-url)")
    host.add_argument("--delivery", default="at-most-once")
    host.add_argument("--cluster-name", default="default")
    host.add_argument("--link-url", help="cluster_link_url: direct links between hosts ('auto')")
    worker = sub.add_parser("worker")
    worker.add_argument("runtime", choices=["http", "grpc"])
    worker.add_argument("address")
    worker.add_argument("--echo")
    worker.add_argument("--sink")
    worker.add_argument("--expect", type=int, default=0)
    worker.add_argument("--count", type=int, default=1)
    worker.add_argument("--counter")
    worker.add_argument("--durable", action="store_true")
    args = parser.parse_args()
    if args.role == "host":
        run_loop(
            run_host(
                args.runtime,
                args.port,
                args.replicas,
                args.state_dir,
                args.redis_url,
                args.secret,
                args.lease,
                args.delivery,
                args.cluster_name,
                args.link_url,
            )
        )
    else:
        run_loop(run_workers(args))


if __name__ == "__main__":
    main()
