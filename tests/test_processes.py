"""Workers and hosts in real OS processes: killed, signalled and stopped while calls are in flight.

The children are ``tests/procs/host.py`` and ``tests/procs/worker.py``; they report
readiness and progress as lines on stdout, which the tests read with bounded waits.
Every child is killed (if still running) and reaped when its test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from autogen_core import AgentId, MessageContext, RoutedAgent, TopicId, message_handler

from autogen_http_runtime import (
    AgentNotFoundError,
    CallTimeoutError,
    HostConnectionError,
    HttpAgentServer,
    HttpWorkerAgentRuntime,
    WorkerDisconnectedError,
)

from .attack_support import poll
from .conftest import WorkerFactory
from .utils import SERIALIZERS, TIMEOUT, Text, Upper, bounded, owners, subscriptions

ROOT = Path(__file__).resolve().parent.parent

#: How soon a dead peer must be noticed: a few seconds, far below the 20 s keepalive
#: that would otherwise be the only way to notice it.
PROMPT = 5.0


class Child:
    """A child process whose stdout carries one progress line per event."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def expect(self, prefix: str) -> str:
        """Read the next line of stdout; it must start with ``prefix``."""
        assert self.proc.stdout is not None
        raw = await bounded(self.proc.stdout.readline())
        line = raw.decode().rstrip("\n")
        assert line.startswith(prefix), f"expected {prefix!r} from the child, got {line!r}"
        return line


@contextlib.asynccontextmanager
async def spawn(program: str, *args: str) -> AsyncIterator[Child]:
    """Run ``python -m tests.procs.<program> *args``; kill and reap it on the way out."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"tests.procs.{program}",
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield Child(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        # Reads stdout to EOF and reaps the child, so no pipe or zombie is left behind.
        await bounded(proc.communicate())


async def test_killed_worker_fails_inflight_calls_promptly(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    core = server.service.core
    caller = await make_worker()
    survivor = await make_worker()
    await Upper.register(survivor, "upper", Upper)
    calls_in_flight = 100
    async with spawn("worker", server.url, "blocker") as child:
        await child.expect("READY")
        doomed = owners(core)["blocker"]
        assert len(doomed.subscription_ids) == 1
        assert doomed.subscription_ids == {s.id for s in subscriptions(core) if s.agent_type == "blocker"}
        survivor_subscriptions = {s.id for s in subscriptions(core) if s.agent_type == "upper"}

        calls = [
            asyncio.ensure_future(caller.send_message(Text(f"m{i}"), AgentId("blocker", str(i % 5))))
            for i in range(calls_in_flight)
        ]
        started = {(await child.expect("started ")).split()[1] for _ in range(calls_in_flight)}
        assert started == {f"m{i}" for i in range(calls_in_flight)}
        assert core.pending_calls == calls_in_flight

        child.proc.kill()
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        results = await bounded(asyncio.gather(*calls, return_exceptions=True), PROMPT)
        assert loop.time() - killed_at < PROMPT
        assert await bounded(child.proc.wait()) == -signal.SIGKILL

    for result in results:
        assert isinstance(result, WorkerDisconnectedError), repr(result)
        assert "disconnected" in str(result)
    # The host forgot the dead worker: its session, agent type, subscription and calls.
    assert doomed.worker_id not in core.sessions
    assert "blocker" not in owners(core)
    assert {s.id for s in subscriptions(core)} == survivor_subscriptions
    assert core.pending_calls == 0
    with pytest.raises(AgentNotFoundError):
        await bounded(caller.send_message(Text("again"), AgentId("blocker", "0")))
    # Everyone else keeps working.
    assert await bounded(caller.send_message(Text("still"), AgentId("upper", "default"))) == Text("STILL")


class Hanging(RoutedAgent):
    """Signals when its handler starts, then waits until cancelled."""

    def __init__(self, started: asyncio.Event, cancelled: asyncio.Event) -> None:
        super().__init__("hangs")
        self._started = started
        self._cancelled = cancelled

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self._started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self._cancelled.set()
            raise
        raise AssertionError("unreachable")


async def test_host_killed_fails_pending_and_new_calls() -> None:
    async with spawn("host") as host:
        url = (await host.expect("READY ")).split()[1]
        # The workers try to reconnect; calls made meanwhile wait reconnect_timeout, then fail.
        worker = HttpWorkerAgentRuntime(url, reconnect_timeout=0.3)
        other = HttpWorkerAgentRuntime(url, reconnect_timeout=0.3)
        try:
            local_started, local_cancelled = asyncio.Event(), asyncio.Event()
            remote_started, remote_cancelled = asyncio.Event(), asyncio.Event()
            for runtime in (worker, other):
                runtime.add_message_serializer(SERIALIZERS)
                await bounded(runtime.start())
            await worker.register_factory("local", lambda: Hanging(local_started, local_cancelled))
            await other.register_factory("remote", lambda: Hanging(remote_started, remote_cancelled))
            # One call served by the calling worker itself (through the host), one by another worker.
            pending = [
                asyncio.ensure_future(worker.send_message(Text("a"), AgentId("local", "default"))),
                asyncio.ensure_future(worker.send_message(Text("b"), AgentId("remote", "default"))),
            ]
            await bounded(local_started.wait())
            await bounded(remote_started.wait())

            host.proc.kill()
            results = await bounded(asyncio.gather(*pending, return_exceptions=True), PROMPT)
            for result in results:
                assert isinstance(result, HostConnectionError), repr(result)

            # New calls and publishes fail after reconnect_timeout rather than wait for a host
            # that is gone.
            with pytest.raises(HostConnectionError, match="reconnecting"):
                await bounded(worker.send_message(Text("c"), AgentId("remote", "default")), 2.0)
            with pytest.raises(HostConnectionError, match="reconnecting"):
                await bounded(worker.publish_message(Text("d"), TopicId("t", "s")), 2.0)

            await bounded(worker.stop())
            await bounded(other.stop())
            # stop() cancelled the handlers that were still running.
            assert local_cancelled.is_set() and remote_cancelled.is_set()
        finally:
            await bounded(worker.stop())
            await bounded(other.stop())


async def test_a_deadline_bounds_the_wait_for_a_reconnect() -> None:
    # A call's deadline covers the whole call: while the worker reconnects to a host that is
    # gone, a call with a 0.3 s deadline fails with CallTimeoutError then, not after the
    # (here far longer) reconnect_timeout.
    async with spawn("host") as host:
        url = (await host.expect("READY ")).split()[1]
        worker = HttpWorkerAgentRuntime(url, reconnect_timeout=60.0, call_timeout=0.3)
        worker.add_message_serializer(SERIALIZERS)
        try:
            await bounded(worker.start())
            host.proc.kill()
            assert await poll(lambda: worker._lifecycle.link.reconnecting, PROMPT, step=0.01)
            with pytest.raises(CallTimeoutError, match="still reconnecting"):
                await bounded(
                    worker.send_message(Text("a"), AgentId("remote", "default"), timeout=0.3), PROMPT
                )
            # The runtime's call_timeout, for calls that take no deadline of their own.
            with pytest.raises(CallTimeoutError, match="still reconnecting"):
                await bounded(worker.agent_metadata(AgentId("remote", "default")), PROMPT)
            assert worker._lifecycle.link.reconnecting  # still trying: the calls gave up, not the worker
        finally:
            await bounded(worker.stop())


@pytest.mark.parametrize(
    ("worker_signal", "host_signal"),
    [(signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)],
    ids=["worker-SIGINT-host-SIGTERM", "worker-SIGTERM-host-SIGINT"],
)
async def test_stop_when_signal_in_host_and_worker_processes(
    worker_signal: signal.Signals, host_signal: signal.Signals
) -> None:
    async with spawn("host") as host, httpx.AsyncClient(trust_env=False) as http:
        url = (await host.expect("READY ")).split()[1]
        async with spawn("worker", url, "signalled") as worker:
            await worker.expect("READY")
            listing = (await bounded(http.get(f"{url}/v1/agents"))).json()
            assert set(listing["agent_types"]) == {"signalled"}

            worker.proc.send_signal(worker_signal)
            await worker.expect("STOPPED")
            assert await bounded(worker.proc.wait(), PROMPT) == 0

        # The worker closed its WebSocket before exiting, so the host has freed its type.
        listing = (await bounded(http.get(f"{url}/v1/agents"))).json()
        assert (listing["agent_types"], listing["workers"], listing["types"]) == ({}, 0, [])

        host.proc.send_signal(host_signal)
        await host.expect("STOPPED")
        assert await bounded(host.proc.wait(), PROMPT) == 0


async def test_worker_stop_closes_its_connection_tidily(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    core = server.service.core
    caller = await make_worker()
    async with spawn("worker", server.url, "stopper", "--until", "stdin", "--stop-grace", "0") as child:
        await child.expect("READY")
        session = owners(core)["stopper"]
        call = asyncio.ensure_future(caller.send_message(Text("x"), AgentId("stopper", "default")))
        await child.expect("started x")

        assert child.proc.stdin is not None
        child.proc.stdin.write(b"stop\n")
        await bounded(child.proc.stdin.drain())
        await child.expect("STOPPED")
        assert await bounded(child.proc.wait(), TIMEOUT) == 0

        # The call it was serving fails at its caller, and the reason shows the worker stopped
        # its handler and answered for it rather than dropping the connection (which reads
        # "closed with code 1005/1006").
        with pytest.raises(WorkerDisconnectedError) as caught:
            await bounded(call, PROMPT)
        assert "stopped before the handler finished" in str(caught.value)
        assert "code 100" not in str(caught.value)

    assert session.worker_id not in core.sessions
    assert "stopper" not in owners(core)
    assert len(subscriptions(core)) == 0
    assert core.pending_calls == 0
