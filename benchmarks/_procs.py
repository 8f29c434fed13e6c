"""The processes a benchmark runs: a host, or a worker, on either runtime.

Usage::

    python benchmarks/_procs.py host RUNTIME PORT [--replicas] [--redis-url URL --delivery MODE
        --cluster-name NAME]
    python benchmarks/_procs.py worker RUNTIME ADDRESS [--echo TYPE] [--sink TYPE --expect N] [--count K]

``RUNTIME`` is ``http`` (ours) or ``grpc`` (autogen-ext's); the environment variables in
``bench.RUNTIMES`` (``AUTOGEN_HTTP_JSON``, ``BENCH_LOOP``) pick the variant of ours. Each
prints ``READY`` when it serves, then runs until SIGTERM. A sink worker prints
``DONE <received> <duplicates>`` once it has received ``N`` events (it keeps counting
afterwards, and prints again when a new round of ``N`` arrives). ``--count K`` runs K worker
runtimes in this one process, serving the echo types ``TYPE-0`` ... ``TYPE-<K-1>`` (the
many-workers scenario).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
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


def make_worker(runtime: str, address: str) -> AgentRuntime:
    if runtime == "http":
        from autogen_http_runtime import HttpWorkerAgentRuntime

        worker: Any = HttpWorkerAgentRuntime(address)
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


async def run_host(
    runtime: str,
    port: int,
    replicas: bool = False,
    redis_url: str | None = None,
    delivery: str = "at-most-once",
    cluster_name: str = "default",
) -> None:
    if runtime == "http":
        from autogen_http_runtime import HttpAgentServer

        # With a Redis: a host of a cluster (of one), for at-least-once against at-most-once.
        cluster: dict[str, Any] = (
            {}
            if redis_url is None
            else {
                "redis_url": redis_url,
                "cluster_secret": "bench",
                "cluster_name": cluster_name,
                "delivery": delivery,
            }
        )
        server: Any = HttpAgentServer("127.0.0.1", port=port, replicas=replicas, **cluster)
        await server.start()
        say("READY")
        await wait_for_signal()
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
    workers = [make_worker(args.runtime, args.address) for _ in range(args.count)]
    for index, worker in enumerate(workers):
        await worker.start()  # type: ignore[attr-defined]
        if args.echo:
            name = args.echo if args.count == 1 else f"{args.echo}-{index}"
            await worker.register_factory(name, Echo)
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
    host.add_argument("--redis-url")
    host.add_argument("--delivery", default="at-most-once")
    host.add_argument("--cluster-name", default="default")
    worker = sub.add_parser("worker")
    worker.add_argument("runtime", choices=["http", "grpc"])
    worker.add_argument("address")
    worker.add_argument("--echo")
    worker.add_argument("--sink")
    worker.add_argument("--expect", type=int, default=0)
    worker.add_argument("--count", type=int, default=1)
    args = parser.parse_args()
    if args.role == "host":
        run_loop(
            run_host(args.runtime, args.port, args.replicas, args.redis_url, args.delivery, args.cluster_name)
        )
    else:
        run_loop(run_workers(args))


if __name__ == "__main__":
    main()
