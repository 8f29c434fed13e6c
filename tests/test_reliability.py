"""Faults, in real processes where it matters: host restarts, frozen workers, slow subscribers.

The host runs as ``tests/procs/host.py`` (or in-process where the test needs its
internals) and the workers are real runtimes over real WebSockets. Nothing sleeps to
synchronise: every wait is for an event, a line from a child, or a call's answer, and
every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from typing import Any

import httpx
import pytest
from autogen_core import AgentId, MessageContext, TopicId, TypeSubscription
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from autogen_http_runtime import (
    AgentTypeConflictError,
    HostConnectionError,
    HttpAgentServer,
    HttpAgentService,
    HttpWorkerAgentRuntime,
    ReconnectPolicy,
    TooManyCallsError,
    WorkerDisconnectedError,
)
from autogen_http_runtime._constants import PROTOCOL_VERSION, WORKER_WS_PATH
from autogen_http_runtime._http import server as _server

from .conftest import WorkerFactory
from .test_processes import spawn
from .test_rpc import Slow
from .test_server import until
from .utils import SERIALIZERS, Recorder, Text, Upper, bounded, connected_workers, owners

#: Each test that uses ``server`` runs on both WebSocket paths (conftest.py).
BOTH_PATHS = True

#: Bound for a worker to find a restarted host again: backoff tops out at 2 s.
RECONNECTED = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def worker(url: str, **kwargs: Any) -> HttpWorkerAgentRuntime:
    runtime = HttpWorkerAgentRuntime(url, **kwargs)
    runtime.add_message_serializer(SERIALIZERS)
    return runtime


async def test_workers_reconnect_and_serve_after_the_host_restarts() -> None:
    port = free_port()
    inbox: asyncio.Queue[tuple[AgentId, Any, MessageContext]] = asyncio.Queue()
    serving, calling = worker(f"127.0.0.1:{port}"), worker(f"127.0.0.1:{port}")
    try:
        async with spawn("host", "--port", str(port)) as host:
            await host.expect("READY ")
            for runtime in (serving, calling):
                await bounded(runtime.start())
            await Upper.register(serving, "upper", Upper)
            await serving.register_factory("recorder", lambda: Recorder(inbox))
            await serving.add_subscription(TypeSubscription("news", "recorder"))
            assert await bounded(calling.send_message(Text("before"), AgentId("upper", "k"))) == Text(
                "BEFORE"
            )
            host.proc.kill()
            await bounded(host.proc.wait())

        async with spawn("host", "--port", str(port)) as host:
            await host.expect("READY ")
            # A worker's own call waits for its own reconnection, which re-registers its
            # agent types and subscriptions before any call goes out.
            assert await bounded(serving.send_message(Text("a"), AgentId("upper", "k")), RECONNECTED) == Text(
                "A"
            )
            assert await bounded(calling.send_message(Text("b"), AgentId("upper", "k")), RECONNECTED) == Text(
                "B"
            )
            await bounded(calling.publish_message(Text("news"), TopicId("news", "s")))
            recipient, message, _ = await bounded(inbox.get())
            assert (recipient, message) == (AgentId("recorder", "s"), Text("news"))
    finally:
        await bounded(serving.stop())
        await bounded(calling.stop())


async def test_a_type_taken_while_reconnecting_is_a_clear_error_not_a_loop(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    core = server.service.core
    # The first attempt comes a full second after the loss: ample time for the taker.
    patient = await make_worker(reconnect=ReconnectPolicy(initial_delay=1.0, jitter=0.0))
    await patient.register_factory("contested", Upper)
    taker = await make_worker()
    # The host drops the patient worker's connection (as after a network fault)...
    owners(core)["contested"].close(1011, "simulated fault")
    await until(lambda: "contested" not in owners(core))
    # ...another worker takes the type before the patient one is back...
    await bounded(taker.register_factory("contested", Upper))
    # ...so its reconnection is refused once, and it gives up with the reason.
    with pytest.raises(HostConnectionError, match="already registered"):
        await bounded(patient.send_message(Text("x"), AgentId("contested", "k")))
    assert owners(core)["contested"].worker_id != ""
    assert isinstance(AgentTypeConflictError("x"), ValueError)


async def test_a_frozen_worker_is_noticed_by_keepalive() -> None:
    async with HttpAgentServer(port=0, ping_interval=0.3, ping_timeout=0.5) as server:
        caller = worker(server.url)
        await bounded(caller.start())
        try:
            async with spawn("worker", server.url, "frozen") as child:
                await child.expect("READY")
                call = asyncio.ensure_future(caller.send_message(Text("m"), AgentId("frozen", "k")))
                await child.expect("started m")
                os.kill(child.proc.pid, signal.SIGSTOP)
                try:
                    # The worker's socket stays open: only the missing pongs give it away.
                    with pytest.raises(WorkerDisconnectedError):
                        await bounded(call, 10.0)
                    assert "frozen" not in owners(server.service.core)
                finally:
                    os.kill(child.proc.pid, signal.SIGCONT)
        finally:
            await bounded(caller.stop())


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


async def slow_subscriber(url: str, **kwargs: Any) -> Any:
    """A raw worker WebSocket subscribed to topic type 'flood' that reads only when told to."""
    slow = await connect(url.replace("http", "ws", 1) + WORKER_WS_PATH, max_queue=1, **kwargs)
    subscription = {"id": "s", "kind": "type", "agent_type": "slow", "topic": "flood"}
    setup = [
        ("hello", {"protocol": PROTOCOL_VERSION}),
        ("register_agent_type", {"type": "slow"}),
        ("add_subscription", {"subscription": subscription}),
    ]
    for n, (method, params) in enumerate(setup):
        await slow.send(json.dumps({"jsonrpc": "2.0", "id": n, "method": method, "params": params}))
        assert '"result"' in str(await bounded(slow.recv()))
    return slow


@pytest.mark.parametrize("path", ["direct", "asgi"])
async def test_a_publisher_waits_for_a_subscriber_behind_and_nothing_is_lost(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back-pressure that ends well: a subscriber that reads slower than a publisher publishes
    holds the publisher back (the host stops reading it) instead of being dropped, and gets
    every event, in order, once it reads."""
    if path == "asgi":
        monkeypatch.setattr(_server, "direct_protocol", lambda: None)
    limit = 256 * 1024
    # 1 MiB may be queued for a worker; past 512 KiB the host holds its senders back.
    service = HttpAgentService(max_message_size=limit, max_queued_bytes=4 * limit)
    events, chunk = 400, "x" * 64 * 1024  # 25 MiB: more than the sockets' buffers take
    async with HttpAgentServer("127.0.0.1", port=0, service=service, max_message_size=limit) as server:
        publisher = worker(server.url)
        try:
            await bounded(publisher.start())
            async with await slow_subscriber(server.url) as slow:

                async def publish() -> None:
                    for i in range(events):
                        await publisher.publish_message(Text(f"{i}:{chunk}"), TopicId("flood", "s"))

                publishing = asyncio.create_task(publish())
                # Nothing is read until the host has held the publisher back at least once.
                await until(lambda: service.core.stats.senders_held > 0 or publishing.done())
                received = []
                for _ in range(events):
                    frame = json.loads(await bounded(slow.recv()))
                    received.append(int(frame["data"]["content"].split(":", 1)[0]))
                await bounded(publishing)
                assert received == list(range(events))
                assert service.core.stats.senders_held > 0
                assert len(connected_workers(service.core)) == 2  # the slow subscriber was not dropped
        finally:
            await bounded(publisher.stop())


async def test_an_http_publish_held_back_counts_only_its_own_copies() -> None:
    """POST /v1/events reports the copies of its own events, though other publishers' events
    are routed while back-pressure holds it."""
    limit = 256 * 1024
    service = HttpAgentService(max_message_size=limit, max_queued_bytes=4 * limit, slow_consumer_timeout=300)
    chunk = "x" * 64 * 1024
    async with HttpAgentServer("127.0.0.1", port=0, service=service, max_message_size=limit) as server:
        publisher, bystander, listener = worker(server.url), worker(server.url), worker(server.url)
        inbox: asyncio.Queue[tuple[AgentId, Any, MessageContext]] = asyncio.Queue()
        try:
            for runtime in (publisher, bystander, listener):
                await bounded(runtime.start())
            await listener.register_factory("listener", lambda: Recorder(inbox))
            await listener.add_subscription(TypeSubscription("other", "listener"))
            async with (
                await slow_subscriber(server.url) as slow,
                httpx.AsyncClient(base_url=server.url) as http,
            ):

                async def flood() -> None:
                    for i in range(400):
                        await publisher.publish_message(Text(f"{i}:{chunk}"), TopicId("flood", "s"))

                flooding = asyncio.create_task(flood())
                await until(lambda: service.core.stats.senders_held > 0)  # the slow subscriber is behind
                event = {
                    "specversion": "1.0",
                    "id": "mine",
                    "source": "s",
                    "type": "flood",
                    "agmsgtype": "Text",
                    "data": {"content": "mine"},
                }
                posting = asyncio.create_task(
                    http.post(
                        "/v1/events", json=event, headers={"content-type": "application/cloudevents+json"}
                    )
                )
                await until(lambda: service.core.stats.senders_held > 1)  # the POST is held too
                for i in range(5):  # other copies, routed while the POST waits
                    await bystander.publish_message(Text(f"other {i}"), TopicId("other", "s"))
                for _ in range(5):
                    await bounded(inbox.get())
                while not posting.done():
                    await bounded(slow.recv())  # the slow subscriber catches up
                flooding.cancel()
                answer = await bounded(posting)
                assert answer.status_code == 202
                assert answer.json() == {"ids": ["mine"], "delivered": 1}
                slow.transport.abort()  # it has not read what is queued for it: no closing handshake
        finally:
            for runtime in (publisher, bystander, listener):
                await bounded(runtime.stop())


@pytest.mark.parametrize("path", ["direct", "asgi"])
async def test_a_publisher_held_for_a_subscriber_that_vanishes_goes_on_at_once(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "asgi":
        monkeypatch.setattr(_server, "direct_protocol", lambda: None)
    limit = 256 * 1024
    # A slow consumer would hold the publisher for five minutes: far past bounded()'s limit.
    service = HttpAgentService(max_message_size=limit, max_queued_bytes=4 * limit, slow_consumer_timeout=300)
    chunk = "x" * 64 * 1024
    async with HttpAgentServer("127.0.0.1", port=0, service=service, max_message_size=limit) as server:
        publisher = worker(server.url)
        try:
            await bounded(publisher.start())
            slow = await slow_subscriber(server.url)

            async def publish() -> None:
                for i in range(400):
                    await publisher.publish_message(Text(f"{i}:{chunk}"), TopicId("flood", "s"))

            publishing = asyncio.create_task(publish())
            await until(lambda: service.core.stats.senders_held > 0 or publishing.done())
            assert not publishing.done()
            assert slow.transport is not None
            slow.transport.abort()  # the subscriber vanishes with the publisher held for it
            await bounded(publishing)  # released when its session closes, not after 300 s
            assert len(connected_workers(service.core)) == 1
        finally:
            await bounded(publisher.stop())


@pytest.mark.parametrize("path", ["direct", "asgi"])
async def test_a_worker_that_closes_with_data_unread_is_forgotten_at_once(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its close frame ends its session though the host still holds data for it (which it
    will never read): the socket lingers, the agent types it served do not."""
    if path == "asgi":
        monkeypatch.setattr(_server, "direct_protocol", lambda: None)
    service = HttpAgentService()
    chunk = "x" * 60_000
    async with HttpAgentServer("127.0.0.1", port=0, service=service) as server:
        publisher = worker(server.url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server._port))
        slow = None
        try:
            await bounded(publisher.start())
            slow = await slow_subscriber(server.url, sock=sock)
            for i in range(120):  # 7.2 MB: more than the sockets take, less than high water (8 MiB)
                await bounded(publisher.publish_message(Text(f"{i}:{chunk}"), TopicId("flood", "s")))
            assert server._uvicorn is not None
            connections = server._uvicorn.server_state.connections
            # The host holds data for it that the kernel did not take.
            await until(lambda: any(c.transport.get_write_buffer_size() > 0 for c in connections))
            slow.protocol.send_close(1000, "done")
            slow.send_data()  # the close frame goes out; nothing more is read
            await until(lambda: "slow" not in owners(service.core))
            assert len(connected_workers(service.core)) == 1
        finally:
            await bounded(publisher.stop())
            if slow is not None:
                slow.transport.abort()
            sock.close()


async def test_a_worker_dropped_as_too_slow_is_disconnected_though_it_reads_nothing() -> None:
    limit = 256 * 1024
    service = HttpAgentService(max_message_size=limit, max_queued_bytes=4 * limit, slow_consumer_timeout=0.5)
    chunk = "x" * 64 * 1024
    async with HttpAgentServer("127.0.0.1", port=0, service=service, max_message_size=limit) as server:
        publisher = worker(server.url)
        try:
            await bounded(publisher.start())
            slow = await slow_subscriber(server.url)
            assert server._uvicorn is not None
            connections = server._uvicorn.server_state.connections
            assert len(connections) == 2
            for i in range(400):
                await bounded(publisher.publish_message(Text(f"{i}:{chunk}"), TopicId("flood", "s")))
            await until(lambda: len(connected_workers(service.core)) == 1)  # dropped as too slow
            # ... and its socket closed, though it never reads the close frame.
            await until(lambda: len(connections) == 1)
            with pytest.raises(ConnectionClosed):
                while True:
                    await bounded(slow.recv())
        finally:
            await bounded(publisher.stop())


async def test_a_slow_subscriber_under_a_publish_flood_keeps_the_host_bounded() -> None:
    queue_limit = 4 * 1024 * 1024
    args = ("--max-message-size", str(1024 * 1024), "--max-queued-bytes", str(queue_limit))
    async with spawn("host", *args, "--slow-consumer-timeout", "2") as host:
        url = (await host.expect("READY ")).split()[1]
        publisher, subscriber = worker(url), worker(url)
        received = 0
        all_received = asyncio.Event()
        events, chunk = 600, "x" * 64 * 1024  # about 38 MiB in all

        class Counter(Recorder):
            async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
                nonlocal received
                received += 1
                if received == events:
                    all_received.set()

        try:
            for runtime in (publisher, subscriber):
                await bounded(runtime.start())
            await subscriber.register_factory("counter", lambda: Counter(asyncio.Queue()))
            await subscriber.add_subscription(TypeSubscription("flood", "counter"))
            async with connect(url.replace("http", "ws", 1) + WORKER_WS_PATH, max_queue=1) as slow:
                hello = {"protocol": PROTOCOL_VERSION}
                for n, (method, params) in enumerate(
                    [
                        ("hello", hello),
                        ("register_agent_type", {"type": "slow"}),
                        (
                            "add_subscription",
                            {
                                "subscription": {
                                    "id": "s",
                                    "kind": "type",
                                    "agent_type": "slow",
                                    "topic": "flood",
                                }
                            },
                        ),
                    ]
                ):
                    await slow.send(
                        json.dumps({"jsonrpc": "2.0", "id": n, "method": method, "params": params})
                    )
                    assert '"result"' in str(await bounded(slow.recv()))
                # From here on the slow subscriber reads nothing.
                before = rss_bytes(host.proc.pid)
                for i in range(events):
                    await bounded(publisher.publish_message(Text(f"{i}:{chunk}"), TopicId("flood", "s")))
                await bounded(all_received.wait(), 60.0)
                grown = rss_bytes(host.proc.pid) - before
                # The slow subscriber was dropped rather than buffered: the host grew by far
                # less than what was published to it.
                assert grown < 40 * 1024 * 1024, f"the host grew by {grown} bytes"
                with pytest.raises(ConnectionClosed):
                    while True:
                        await bounded(slow.recv())
            async with httpx.AsyncClient(trust_env=False) as http:
                listing = (await bounded(http.get(f"{url}/v1/agents"))).json()
            assert set(listing["agent_types"]) == {"counter"}
            # The publisher and the fast subscriber were never disturbed.
            assert await bounded(subscriber.agent_metadata(AgentId("counter", "s"))) is not None
        finally:
            await bounded(publisher.stop())
            await bounded(subscriber.stop())


async def test_calls_in_flight_per_worker_are_limited() -> None:
    async with HttpAgentServer(port=0, service=HttpAgentService(max_calls_in_flight=3)) as server:
        serving, calling = worker(server.url), worker(server.url)
        started, cancelled = asyncio.Event(), asyncio.Event()
        try:
            for runtime in (serving, calling):
                await bounded(runtime.start())
            await serving.register_factory("slow", lambda: Slow(started, cancelled))
            held = [
                asyncio.ensure_future(calling.send_message(Text(str(i)), AgentId("slow", str(i))))
                for i in range(3)
            ]
            await bounded(started.wait())
            await until(lambda: server.service.core.pending_calls == 3)
            with pytest.raises(TooManyCallsError):
                await bounded(calling.send_message(Text("one too many"), AgentId("slow", "x")))
            for call in held:
                call.cancel()
            await bounded(asyncio.gather(*held, return_exceptions=True))
            await until(lambda: server.service.core.pending_calls == 0)
            assert await bounded(serving.agent_metadata(AgentId("slow", "y"))) is not None
        finally:
            await bounded(serving.stop())
            await bounded(calling.stop())
