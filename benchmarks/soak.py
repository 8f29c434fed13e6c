"""Soak: a long mixed load with host restarts; reports lost and duplicated messages and memory.

Not part of ``make test``. Run it with::

    .venv/bin/python benchmarks/soak.py --duration 120 --restart-every 20

The host runs in a child process (``tests/procs/host.py``) on a fixed loopback port and is
killed with SIGKILL and started again every ``--restart-every`` seconds. Three workers run
in this process: ``echo`` answers calls, ``sink`` counts published events, and a driver
keeps ``--concurrency`` calls in flight and publishes numbered events. Every call's reply
is checked against its request; every event number is counted on arrival, so an event
that arrives twice is a duplicate and one that never arrives is lost. Memory (RSS) of the
host and of this process is sampled once a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autogen_core import AgentId, BaseAgent, MessageContext, TopicId, TypeSubscription

from autogen_http_runtime import HttpRuntimeError, HttpWorkerAgentRuntime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.utils (message types) and tests.procs.host

from tests.utils import SERIALIZERS, Ping, Text  # noqa: E402


@dataclass
class Tally:
    calls_ok: int = 0
    calls_failed: int = 0
    calls_wrong: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    published: int = 0
    publish_failed: int = 0
    arrivals: Counter[int] = field(default_factory=Counter)
    restarts: int = 0
    #: RSS samples of each host process, one list per restart.
    host_rss: list[list[int]] = field(default_factory=lambda: [[]])
    driver_rss: list[int] = field(default_factory=list)


class Echo(BaseAgent):
    def __init__(self) -> None:
        super().__init__("echoes")

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        return message


class Sink(BaseAgent):
    def __init__(self, tally: Tally) -> None:
        super().__init__("counts events")
        self._tally = tally

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        assert isinstance(message, Ping)
        self._tally.arrivals[message.n] += 1
        return None


def rss(pid: int | str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.asynccontextmanager
async def host_process(port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.procs.host",
        "--port",
        str(port),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line.startswith(b"READY"):
        raise RuntimeError(f"the host did not start: {line!r}")
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def drive_calls(driver: HttpWorkerAgentRuntime, tally: Tally, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        try:
            reply = await driver.send_message(Text(str(n)), AgentId("echo", str(n % 8)), timeout=10)
        except HttpRuntimeError as exc:
            tally.calls_failed += 1
            tally.failures[type(exc).__name__] += 1
            continue
        if reply == Text(str(n)):
            tally.calls_ok += 1
        else:
            tally.calls_wrong += 1


async def drive_events(driver: HttpWorkerAgentRuntime, tally: Tally, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        try:
            await driver.publish_message(Ping(n), TopicId("soak", "s"))
            tally.published += 1
        except HttpRuntimeError as exc:
            tally.publish_failed += 1
            tally.failures[f"publish {type(exc).__name__}"] += 1
        await asyncio.sleep(0.001)  # pacing: about a thousand events a second at most


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--restart-every", type=float, default=15.0, help="seconds between host restarts")
    parser.add_argument("--concurrency", type=int, default=16, help="calls kept in flight")
    args = parser.parse_args()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    tally = Tally()
    stop = asyncio.Event()
    runtimes = [HttpWorkerAgentRuntime(address, name=name) for name in ("echo", "sink", "driver")]
    for runtime in runtimes:
        runtime.add_message_serializer(SERIALIZERS)
    echo, sink, driver = runtimes

    host_ctx = host_process(port)
    host = await host_ctx.__aenter__()
    for runtime in runtimes:
        await runtime.start()
    await echo.register_factory("echo", Echo)
    await sink.register_factory("sink", lambda: Sink(tally))
    await sink.add_subscription(TypeSubscription("soak", "sink"))

    started = time.monotonic()
    load = [asyncio.ensure_future(drive_calls(driver, tally, stop)) for _ in range(args.concurrency)]
    load.append(asyncio.ensure_future(drive_events(driver, tally, stop)))
    next_restart = started + args.restart_every
    try:
        while (now := time.monotonic()) - started < args.duration:
            await asyncio.sleep(1.0)  # the sampling period
            tally.host_rss[-1].append(rss(host.pid))
            tally.driver_rss.append(rss("self"))
            if now >= next_restart:
                await host_ctx.__aexit__(None, None, None)
                host_ctx = host_process(port)
                host = await host_ctx.__aenter__()
                tally.restarts += 1
                tally.host_rss.append([])
                next_restart = now + args.restart_every
        stop.set()
        await asyncio.wait_for(asyncio.gather(*load), 30)
        # Let the last events land: a final call round-trips behind them on the same links.
        await driver.send_message(Text("flush"), AgentId("echo", "0"), timeout=30)
        await sink.send_message(Text("flush"), AgentId("echo", "0"), timeout=30)
    finally:
        for runtime in runtimes:
            await runtime.stop()
        await host_ctx.__aexit__(None, None, None)

    duplicated = sum(count - 1 for count in tally.arrivals.values() if count > 1)
    arrived = len(tally.arrivals)
    report = {
        "duration_s": args.duration,
        "host_restarts": tally.restarts,
        "calls_ok": tally.calls_ok,
        "calls_failed": tally.calls_failed,
        "calls_with_wrong_reply": tally.calls_wrong,
        "failures_by_type": dict(tally.failures),
        "events_published": tally.published,
        "events_arrived": arrived,
        "events_lost": tally.published - arrived,
        "events_duplicated": duplicated,
        "host_rss_mib_first_last_per_host_process": [
            [round(samples[0] / 2**20, 1), round(samples[-1] / 2**20, 1)]
            for samples in tally.host_rss
            if samples
        ],
        "driver_rss_mib_first_last_max": [
            round(x / 2**20, 1)
            for x in (tally.driver_rss[0], tally.driver_rss[-1], max(tally.driver_rss))
            if tally.driver_rss
        ],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
