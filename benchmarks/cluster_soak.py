"""Cluster soak (issue 18): calls and events across three hosts while hosts and Redis are killed.

Not part of ``make test``. Run it with ``make soak-cluster``, or::

    .venv/bin/python benchmarks/cluster_soak.py --cycles 3 --settle 20

Processes: a throwaway redis-server (``tests/redis_server.py``, never the machine's on 6379),
three hosts of one cluster (``tests/procs/cluster_host.py``, each on a fixed loopback port
so that it can be restarted on it), and this process, which runs nine worker runtimes: on
each host ``i`` an echo worker (type ``echo<i>``), a sink (type ``sink<i>``, subscribed to
the topic ``soak``) and a driver. Every worker knows all three hosts, its own first: when
its host is lost it reconnects to the next (``ReconnectPolicy``'s defaults).

Load: each driver keeps ``--concurrency`` calls in flight, each to ``echo<n % 3>`` (so two
calls in three cross hosts), with a deadline of ``--call-timeout`` seconds, and publishes
about ``--rate`` numbered events a second. Every call ends in one of: the right reply, a
wrong reply, a typed error (counted by class), or a hang (no outcome within the deadline
plus 10 s: the soak's own guard). Every event must reach all three sinks once: a copy that
never arrives is lost, one that arrives twice is duplicated.

Faults, one after another, each followed by ``--settle`` seconds of plain load, after a
first steady phase; ``--cycles`` repeats the three:

- **host SIGKILL**: host ``k`` (in turn) is SIGKILLed, and started again on its port
  ``--down`` seconds later;
- (not a fault) the killed host's three workers, which moved to another host, are stopped
  and started again on it, so that the next faults find the load spread again (workers do
  not move back by themselves);
- **Redis SIGKILL**: redis-server is SIGKILLed, and started again EMPTY on its port
  ``--down`` seconds later;
- **Redis SIGSTOP**: redis-server is frozen for ``--freeze`` seconds, then SIGCONT.

Each outcome is counted in the phase (``steady``, or a fault) in which it happened: a call by
the time it ended, an event by the time it was published (one published less than a second
before a fault counts in the fault's phase: its copies may have been on their way). A lane
whose call failed waits ``--retry-pause`` before its next one, as a client would; so the
failed calls of a phase are about its lanes times how long it failed, over that pause. For
each phase the report gives the calls failed by error, the event copies lost and duplicated,
and, in seconds after the fault, its first and last failure and when the fault was repaired
(the host or Redis back): after the last failure, everything was served again. JSON on
stdout; the hosts' logs (and Redis's directory) go to ``--logs``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from autogen_core import AgentId, BaseAgent, MessageContext, TopicId, TypeSubscription

from autogen_http_runtime import HttpRuntimeError, HttpWorkerAgentRuntime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.utils (message types), tests.redis_server, tests.procs

from tests.redis_server import RedisServer, free_port  # noqa: E402
from tests.utils import SERIALIZERS, Ping, Text  # noqa: E402

SECRET = "a-secret-for-the-cluster-soak"
HOSTS = 3
#: Event numbers: driver i publishes i * STRIDE + 1, + 2, ...
STRIDE = 1_000_000_000
#: How much longer than its own deadline a call may take before the soak calls it a hang.
HANG_MARGIN = 10.0


#: An event published this little before a fault is counted in the fault's phase: its copies
#: may still have been on their way when the fault struck (a copy takes milliseconds).
IN_FLIGHT = 1.0


@dataclass
class Phase:
    name: str
    started: float
    #: When the fault was repaired (the host or Redis back), if it was one.
    repaired: float | None = None


@dataclass
class Soak:
    """Every call's outcome, every event published, and every copy's arrivals at each sink."""

    phases: list[Phase] = field(default_factory=lambda: [Phase("steady", time.monotonic())])
    #: (outcome, when the call ended)
    calls: list[tuple[str, float]] = field(default_factory=list)
    #: (event number, when it was published); refused publishes: (error, when)
    published: list[tuple[int, float]] = field(default_factory=list)
    refused: list[tuple[str, float]] = field(default_factory=list)
    arrivals: list[Counter[int]] = field(default_factory=lambda: [Counter() for _ in range(HOSTS)])
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: The echo worker, the sink and the driver placed on each host.
    workers: list[tuple[HttpWorkerAgentRuntime, ...]] = field(default_factory=list)

    def begin(self, name: str) -> None:
        self.phases.append(Phase(name, time.monotonic()))

    def repaired(self) -> None:
        self.phases[-1].repaired = time.monotonic()

    def phase_of(self, when: float) -> int:
        return max(i for i, phase in enumerate(self.phases) if phase.started <= when or i == 0)


class Echo(BaseAgent):
    def __init__(self) -> None:
        super().__init__("echoes")

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        return message


class Sink(BaseAgent):
    def __init__(self, arrivals: Counter[int]) -> None:
        super().__init__("counts events")
        self._arrivals = arrivals

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        assert isinstance(message, Ping)
        self._arrivals[message.n] += 1
        return None


def sink_factory(arrivals: Counter[int]) -> Any:
    return lambda: Sink(arrivals)


class Host:
    """One host process of the cluster, on a fixed port; ``kill()`` and ``start()`` again."""

    def __init__(self, index: int, redis_url: str, lease: float, logs: Path, links: bool = False) -> None:
        self.index, self.redis_url, self.lease, self.links = index, redis_url, lease, links
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = logs / f"host{index}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self) -> None:
        self._log = self.log_path.open("ab")
        command = [sys.executable, "-m", "tests.procs.cluster_host", self.redis_url, SECRET]
        command += ["--lease", str(self.lease), "--port", str(self.port)]
        if self.links:
            command += ["--link-url", "auto"]
        self.proc = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=self._log
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line.startswith(b"READY"):
            raise RuntimeError(f"host {self.index} did not start: {line!r} (see {self.log_path})")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(self.proc.wait(), 10)
        if self._log is not None:
            self._log.close()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                pass
        await self.kill()


async def call_lane(index: int, lane: int, soak: Soak, args: argparse.Namespace) -> None:
    n = lane
    while not soak.stopping.is_set():
        n += args.concurrency
        driver = soak.workers[index][2]
        target = AgentId(f"echo{n % HOSTS}", str(n % 8))
        try:
            reply = await asyncio.wait_for(
                driver.send_message(Text(str(n)), target, timeout=args.call_timeout),
                args.call_timeout + HANG_MARGIN,
            )
            outcome = "ok" if reply == Text(str(n)) else "wrong reply"
        except HttpRuntimeError as exc:  # first: CallTimeoutError is a TimeoutError, and typed
            outcome = type(exc).__name__
        except asyncio.TimeoutError:  # the soak's own guard: no outcome at all
            outcome = "HANG"
        except Exception as exc:  # an untyped error is a finding in itself
            outcome = f"untyped {type(exc).__name__}"
        soak.calls.append((outcome, time.monotonic()))
        if outcome != "ok":
            await asyncio.sleep(args.retry_pause)  # as a client would before trying again


async def publisher(index: int, soak: Soak, rate: float) -> None:
    n = index * STRIDE
    while not soak.stopping.is_set():
        n += 1
        driver = soak.workers[index][2]
        try:
            await driver.publish_message(Ping(n), TopicId("soak", "s"))
        except HttpRuntimeError as exc:
            soak.refused.append((type(exc).__name__, time.monotonic()))
        else:
            soak.published.append((n, time.monotonic()))
        await asyncio.sleep(1 / rate)


async def settle_arrivals(soak: Soak, quiet: float = 2.0, bound: float = 30.0) -> None:
    """Wait until no sink has received anything for ``quiet`` seconds (at most ``bound``)."""
    started = last_change = time.monotonic()
    last = -1
    while time.monotonic() - last_change < quiet and time.monotonic() - started < bound:
        total = sum(sum(a.values()) for a in soak.arrivals)
        if total != last:
            last, last_change = total, time.monotonic()
        await asyncio.sleep(0.1)


def report(soak: Soak) -> list[dict[str, Any]]:
    """One entry per phase: what it cost in calls and event copies, and for how long."""
    calls: list[Counter[str]] = [Counter() for _ in soak.phases]
    refused: list[Counter[str]] = [Counter() for _ in soak.phases]
    published, lost, duplicated = [0] * len(soak.phases), [0] * len(soak.phases), [0] * len(soak.phases)
    failures: list[list[float]] = [[] for _ in soak.phases]
    for outcome, ended in soak.calls:
        index = soak.phase_of(ended)
        calls[index][outcome] += 1
        if outcome != "ok":
            failures[index].append(ended)
    for error, when in soak.refused:
        index = soak.phase_of(when + IN_FLIGHT)
        refused[index][error] += 1
        failures[index].append(when)
    for n, when in soak.published:
        index = soak.phase_of(when + IN_FLIGHT)
        published[index] += 1
        counts = [arrivals.get(n, 0) for arrivals in soak.arrivals]
        lost[index] += counts.count(0)
        duplicated[index] += sum(max(0, count - 1) for count in counts)
        if 0 in counts:
            failures[index].append(when)
    phases = []
    for index, phase in enumerate(soak.phases):
        outcomes = dict(calls[index])
        ok = outcomes.pop("ok", 0)
        last = max(failures[index], default=None)
        phases.append(
            {
                "phase": phase.name,
                "calls_ok": ok,
                "calls_failed": sum(outcomes.values()),
                "failures_by_type": outcomes,
                "events_published": published[index],
                "publish_refused": dict(refused[index]),
                "event_copies_lost": lost[index],
                "event_copies_duplicated": duplicated[index],
                # Seconds from the fault to its first and last failure (a call that failed, or
                # an event published with a copy lost); after the last, all was served again.
                "first_failure_s": None
                if last is None
                else round(min(failures[index]) - phase.started, 2) + 0.0,
                "last_failure_s": None if last is None else round(last - phase.started, 2) + 0.0,
                "repaired_s": None if phase.repaired is None else round(phase.repaired - phase.started, 2),
            }
        )
    return phases


async def place(i: int, hosts: list[Host], soak: Soak) -> tuple[HttpWorkerAgentRuntime, ...]:
    """Start host ``i``'s echo worker, sink and driver, with every host's address, its own first."""
    addresses = ",".join(hosts[(i + k) % HOSTS].url for k in range(HOSTS))
    placed = []
    for role in ("echo", "sink", "driver"):
        worker = HttpWorkerAgentRuntime(addresses, name=f"{role}{i}")
        worker.add_message_serializer(SERIALIZERS)
        await asyncio.wait_for(worker.start(), 30)
        placed.append(worker)
        if role == "echo":
            await worker.register_factory(f"echo{i}", Echo)
        elif role == "sink":
            await worker.register_factory(f"sink{i}", sink_factory(soak.arrivals[i]))
            await worker.add_subscription(TypeSubscription("soak", f"sink{i}"))
    return tuple(placed)


async def stop_all(workers: tuple[HttpWorkerAgentRuntime, ...]) -> None:
    for worker in workers:
        try:
            await asyncio.wait_for(worker.stop(), 15)
        except Exception as exc:
            print(f"# stopping {worker}: {type(exc).__name__}: {exc}", file=sys.stderr)


async def run(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    soak = Soak()
    redis = RedisServer(logs / "redis").start()  # from the main thread: it dies with this process
    hosts = [Host(i, redis.url, args.lease, logs, args.links) for i in range(HOSTS)]
    load: list[asyncio.Future[None]] = []
    try:
        for host in hosts:
            await host.start()
        for i in range(HOSTS):
            soak.workers.append(await place(i, hosts, soak))
        # The first calls prove every host routes to every other before the clock starts.
        for _, _, driver in soak.workers:
            for j in range(HOSTS):
                await asyncio.wait_for(driver.send_message(Text("hi"), AgentId(f"echo{j}", "0")), 30)
        soak.phases = [Phase("steady", time.monotonic())]  # the clock starts now
        for i in range(HOSTS):
            load += [
                asyncio.ensure_future(call_lane(i, lane, soak, args)) for lane in range(args.concurrency)
            ]
            load.append(asyncio.ensure_future(publisher(i, soak, args.rate)))
        await asyncio.sleep(args.settle)
        for cycle in range(args.cycles):
            victim = hosts[cycle % HOSTS]
            soak.begin(f"host SIGKILL (host {victim.index}), restarted after {args.down:g} s")
            await victim.kill()
            await asyncio.sleep(args.down)
            await victim.start()
            soak.repaired()
            await asyncio.sleep(args.settle)

            # Its workers moved to another host and stay there: put them back, so that the
            # next faults find the load spread over the three hosts again.
            soak.begin(f"host {victim.index}'s workers stopped and started again on it (no fault)")
            moved = soak.workers[victim.index]
            await stop_all(moved)
            soak.workers[victim.index] = await place(victim.index, hosts, soak)
            soak.repaired()
            await asyncio.sleep(args.settle / 2)

            soak.begin(f"Redis SIGKILL, restarted empty after {args.down:g} s")
            redis.kill()
            await asyncio.sleep(args.down)
            redis.restart()
            soak.repaired()
            await asyncio.sleep(args.settle)

            soak.begin(f"Redis SIGSTOP for {args.freeze:g} s")
            redis.pause()
            await asyncio.sleep(args.freeze)
            redis.resume()
            soak.repaired()
            await asyncio.sleep(args.settle)
        soak.stopping.set()
        await asyncio.wait_for(asyncio.gather(*load), args.call_timeout + HANG_MARGIN + 5)
        await settle_arrivals(soak)
    finally:
        for future in load:
            future.cancel()
        for placed in soak.workers:
            await stop_all(placed)
        for host in hosts:
            await host.stop()
        redis.stop()
    phases = report(soak)
    return {
        "settings": {
            k: getattr(args, k)
            for k in ("cycles", "settle", "down", "freeze", "lease", "concurrency", "rate", "retry_pause")
        },
        "logs": str(logs),
        "phases": phases,
        "totals": {
            key: sum(p[key] for p in phases)
            for key in (
                "calls_ok",
                "calls_failed",
                "events_published",
                "event_copies_lost",
                "event_copies_duplicated",
            )
        }
        | {"calls_hung": sum(p["failures_by_type"].get("HANG", 0) for p in phases)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1, help="rounds of the three faults")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of plain load after each fault")
    parser.add_argument("--down", type=float, default=3.0, help="seconds a killed host or Redis stays down")
    parser.add_argument("--freeze", type=float, default=5.0, help="seconds Redis stays frozen")
    parser.add_argument("--lease", type=float, default=3.0, help="the hosts' cluster_lease")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight per driver")
    parser.add_argument("--rate", type=float, default=200.0, help="events a second per driver (at most)")
    parser.add_argument("--call-timeout", type=float, default=10.0, help="each call's deadline, in seconds")
    parser.add_argument(
        "--retry-pause", type=float, default=0.02, help="seconds a lane waits after a failed call"
    )
    parser.add_argument("--logs", help="directory for the hosts' logs (a new temporary one by default)")
    parser.add_argument(
        "--links", action="store_true", help="direct links between the hosts (cluster_link_url)"
    )
    args = parser.parse_args()
    logs = Path(args.logs or tempfile.mkdtemp(prefix="cluster-soak-"))
    (logs / "redis").mkdir(parents=True, exist_ok=True)
    print(json.dumps(asyncio.run(run(args, logs)), indent=2))


if __name__ == "__main__":
    main()
