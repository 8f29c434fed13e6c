"""Soak for at-least-once events: subscribers and hosts killed in turn under a publish load.

Not part of ``make test``. Run it with::

    .venv/bin/python benchmarks/delivery_soak.py --delivery at-least-once --duration 60
    .venv/bin/python benchmarks/delivery_soak.py --delivery at-most-once --duration 60

A throwaway redis-server, three hosts of one cluster (``tests/procs/cluster_host.py``, each
on a fixed loopback port so that a restarted host is found again by its workers), and three
subscriber workers (processes of this file, ``--subscriber``), one per host, serving one
agent type as replicas, subscribed to topic ``soak``. A publisher in this process,
connected to the first host (never killed), publishes numbered events over 20 topic
sources (so 20 agent ids) at ``--rate`` a second. Every ``--kill-every`` seconds one
process is SIGKILLed and started again, in turn: a subscriber, then the second host, the
next subscriber, the third host, and so on.

Every subscriber prints the number of each event it handled; this process counts them. An
event is *lost* if no subscriber ever handled it, a *duplicate* each time one was handled
again. After the load, the soak waits (up to ``--settle`` seconds) for every event to be
handled, then reports, with the dead letters (which are not lost: they are listed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from autogen_core import BaseAgent, MessageContext, TopicId, TypeSubscription

from autogen_http_runtime import HttpWorkerAgentRuntime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.utils, tests.redis_server, tests.procs

from tests.redis_server import RedisServer  # noqa: E402
from tests.utils import SERIALIZERS, Ping  # noqa: E402

SECRET = "soak-secret"
SOURCES = 20


class Printer(BaseAgent):
    """The subscriber's agent: takes a few milliseconds, then prints the event's number."""

    def __init__(self) -> None:
        super().__init__("prints what it handled")

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        assert isinstance(message, Ping)
        await asyncio.sleep(random.uniform(0, 0.02))  # handlers in flight when a kill falls
        sys.stdout.write(f"h {message.n}\n")
        sys.stdout.flush()
        return None


async def subscriber(url: str) -> None:
    runtime = HttpWorkerAgentRuntime(url, name="soak-subscriber")
    runtime.add_message_serializer(SERIALIZERS)
    await runtime.start()
    await runtime.register_factory("sink", Printer)
    await runtime.add_subscription(TypeSubscription("soak", "sink"))
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


@dataclass
class Tally:
    published: int = 0
    handled: Counter[int] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Child:
    """A host or subscriber process; a subscriber's lines are counted as they come."""

    def __init__(self, args: list[str], tally: Tally) -> None:
        self.args = args
        self.tally = tally
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *self.args, cwd=ROOT, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        while not (line := await asyncio.wait_for(self.proc.stdout.readline(), 60)).startswith(b"READY"):
            # A replica may handle events before it says READY: the subscription is shared.
            if not line.startswith(b"h "):
                raise RuntimeError(f"{self.args}: expected READY, got {line!r}")
            self.tally.handled[int(line[2:])] += 1
        self._reader = asyncio.ensure_future(self._read(self.proc.stdout))

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            if line.startswith(b"h "):
                self.tally.handled[int(line[2:])] += 1

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 10)  # what it printed before dying counts


def host_args(redis_url: str, port: int, args: argparse.Namespace) -> list[str]:
    return [
        "-m", "tests.procs.cluster_host", redis_url, SECRET, "--replicas", "--lease", "1.5",
        "--port", str(port), "--delivery", args.delivery,
        "--visibility-timeout", str(args.visibility_timeout), "--max-deliveries", "10",
    ]  # fmt: skip


async def publish(publisher: HttpWorkerAgentRuntime, tally: Tally, rate: float, stop: asyncio.Event) -> None:
    period, next_at = 1 / rate, time.monotonic()
    while not stop.is_set():
        tally.published += 1
        n = tally.published
        await publisher.publish_message(Ping(n), TopicId("soak", f"s{n % SOURCES}"))
        next_at += period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    ports = [free_port() for _ in range(3)]
    with RedisServer() as redis:
        hosts = [Child(host_args(redis.url, port, args), tally) for port in ports]
        for host in hosts:
            await host.start()
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        subscribers = [Child([__file__, "--subscriber", url], tally) for url in urls]
        for sub in subscribers:
            await sub.start()
        publisher = HttpWorkerAgentRuntime(urls[0], name="publisher")
        publisher.add_message_serializer(SERIALIZERS)
        await publisher.start()
        stop = asyncio.Event()
        load = asyncio.ensure_future(publish(publisher, tally, args.rate, stop))
        # In turn: subscriber 0, host 1, subscriber 1, host 2, subscriber 2, host 1, ...
        victims: list[tuple[str, Child]] = []
        for i in range(3):
            victims.append((f"subscriber {i}", subscribers[i]))
            victims.append((f"host {1 + i % 2}", hosts[1 + i % 2]))
        started, turn = time.monotonic(), 0
        try:
            while time.monotonic() - started < args.duration:
                await asyncio.sleep(args.kill_every)
                name, victim = victims[turn % len(victims)]
                turn += 1
                await victim.kill()
                tally.kills[name.split()[0]] += 1
                await victim.start()
            stop.set()
            await asyncio.wait_for(load, 30)
            settle_until = time.monotonic() + args.settle
            while time.monotonic() < settle_until and len(tally.handled) < tally.published:  # noqa: ASYNC110 (a bound, not a signal)
                await asyncio.sleep(0.5)
            await asyncio.sleep(args.visibility_timeout)  # late duplicates, if any
            async with httpx.AsyncClient(base_url=urls[0], timeout=10) as http:
                answer = await http.get("/v1/dead-letters", params={"limit": 1000})
            dead = answer.json().get("dead_letters", []) if answer.status_code == 200 else []
        finally:
            await publisher.stop()
            for child in [*subscribers, *hosts]:
                await child.kill()
    handled = set(tally.handled)
    lost = [n for n in range(1, tally.published + 1) if n not in handled]
    return {
        "delivery": args.delivery,
        "duration_s": args.duration,
        "rate_per_s": args.rate,
        "kills": dict(tally.kills),
        "events_published": tally.published,
        "events_handled": len(handled),
        "events_lost": len(lost),
        "lost_sample": lost[:10],
        "duplicates": sum(count - 1 for count in tally.handled.values()),
        "dead_letters": len(dead),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delivery", choices=["at-least-once", "at-most-once"], default="at-least-once")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=200.0, help="events published a second")
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--visibility-timeout", type=float, default=2.0)
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to wait for the last events")
    parser.add_argument("--subscriber", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(subscriber(args.subscriber))
        return
    print(json.dumps(asyncio.run(soak(args)), indent=2))


if __name__ == "__main__":
    main()
