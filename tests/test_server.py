"""HttpAgentServer's lifecycle and the mountable HttpAgentService, over real sockets on loopback."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest
import uvicorn
from autogen_core import AgentId, MessageContext, RoutedAgent, message_handler
from fastapi import FastAPI, Request, Response

from autogen_http_runtime import (
    HostConnectionError,
    HostShuttingDownError,
    HttpAgentServer,
    HttpAgentService,
    HttpWorkerAgentRuntime,
)
from autogen_http_runtime._compat import FASTPATH
from autogen_http_runtime._transport.uvicorn_protocol import DirectWebSocketProtocol, direct_protocol

from .conftest import WorkerFactory
from .utils import SERIALIZERS, Text, Upper, bounded, owners

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def http_client() -> httpx.AsyncClient:
    # trust_env=False: a proxy configured in the environment must not intercept loopback calls.
    return httpx.AsyncClient(trust_env=False)


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop (no timed sleep) until ``condition`` holds; bounded.

    Only for state that offers no event to wait on (installed signal handlers, the
    host's draining flag); each step is one pass of the loop, not a delay.
    """

    async def spin() -> None:
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0)

    await bounded(spin())


@pytest.mark.parametrize(
    "make_server",
    [
        lambda: HttpAgentServer("127.0.0.1:0"),
        lambda: HttpAgentServer(address="127.0.0.1", port=0),
        lambda: HttpAgentServer(port=0),
    ],
    ids=["host:port", "address+port", "port-only"],
)
async def test_address_forms_bind_a_real_port(make_server: Callable[[], HttpAgentServer]) -> None:
    server = make_server()
    await bounded(server.start())
    try:
        host, _, port = server.address.rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0
        assert server.url == f"http://127.0.0.1:{port}"
        async with http_client() as http:
            response = await bounded(http.get(f"{server.url}/v1/agents"))
        assert response.status_code == 200
        assert response.json() | {"types": None} == {
            "agent_types": {},
            "workers": 0,
            "replicas": False,
            "types": None,
        }
    finally:
        await bounded(server.stop())


async def test_start_without_await_then_worker_connects_at_once() -> None:
    server = HttpAgentServer("127.0.0.1", port=0)
    server.start()  # not awaited: the port is bound when start() returns
    worker = HttpWorkerAgentRuntime(server.url)
    worker.add_message_serializer(SERIALIZERS)
    try:
        await bounded(worker.start())
        await Upper.register(worker, "upper", Upper)
        assert await bounded(worker.send_message(Text("up"), AgentId("upper", "default"))) == Text("UP")
    finally:
        await bounded(worker.stop())
        await bounded(server.stop())


async def test_taken_port_raises_oserror_not_system_exit() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpAgentServer("127.0.0.1", port=port)
        # pytest.raises(OSError) lets a SystemExit through, which would fail the test.
        with pytest.raises(OSError) as caught:
            server.start()
        assert caught.value.errno == errno.EADDRINUSE
        assert f"127.0.0.1:{port}" in str(caught.value)
        await bounded(server.stop())


async def test_start_twice_raises_runtime_error() -> None:
    server = HttpAgentServer(port=0)
    await bounded(server.start())
    try:
        with pytest.raises(RuntimeError, match="cannot start"):
            server.start()
    finally:
        await bounded(server.stop())
    with pytest.raises(RuntimeError, match="cannot start"):
        server.start()


async def test_stop_before_start_and_stop_twice_are_no_ops() -> None:
    server = HttpAgentServer(port=0)
    await bounded(server.stop())
    # Stopping a server that never started left it startable.
    await bounded(server.start())
    url = server.url
    await bounded(server.stop())
    await bounded(server.stop())
    async with http_client() as http:
        with pytest.raises(httpx.ConnectError):
            await bounded(http.get(f"{url}/v1/agents"))


async def test_embedded_server_leaves_signal_handlers_alone() -> None:
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    server = HttpAgentServer(port=0)
    handle = server.start()
    try:
        await bounded(handle)
        worker = HttpWorkerAgentRuntime(server.url)
        await bounded(worker.start())
        await bounded(worker.stop())
        assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before
    finally:
        await bounded(server.stop())
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
async def test_stop_when_signal_stops_and_restores_previous_handlers(sig: signal.Signals) -> None:
    original = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def previous_handler(signum: int, frame: object) -> None:
        raise AssertionError("the previous handler must not run while stop_when_signal waits")

    # A handler of the program's own, which stop_when_signal must give back (not merely reset).
    for s in STOP_SIGNALS:
        signal.signal(s, previous_handler)
    try:
        await _stop_on_signal(sig)
        assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == dict.fromkeys(STOP_SIGNALS, previous_handler)
    finally:
        for s, handler in original.items():
            signal.signal(s, handler)


async def _stop_on_signal(sig: signal.Signals) -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    server = HttpAgentServer(port=0)
    serving = asyncio.ensure_future(server.stop_when_signal(grace=0.5))
    try:
        # loop.add_signal_handler replaces the Python-level handler, so signal.getsignal
        # shows when stop_when_signal has installed its handlers. We spin the loop with
        # sleep(0) until then (bounded); a signal sent earlier would reach the previous handler.
        await until(lambda: all(signal.getsignal(s) != before[s] for s in STOP_SIGNALS) or serving.done())
        assert not serving.done()
        url = server.url
        async with http_client() as http:
            assert (await bounded(http.get(f"{url}/v1/agents"))).status_code == 200
            os.kill(os.getpid(), sig)
            await bounded(serving)
            with pytest.raises(httpx.ConnectError):
                await bounded(http.get(f"{url}/v1/agents"))
    finally:
        if not serving.done():
            serving.cancel()
        await bounded(server.stop())


class Gate(RoutedAgent):
    """Signals when a call starts, then answers once ``release`` is set."""

    def __init__(self, started: asyncio.Event, release: asyncio.Event) -> None:
        super().__init__("answers when released")
        self._started = started
        self._release = release

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self._started.set()
        await self._release.wait()
        return Text("done " + message.content)


async def test_graceful_stop_lets_calls_finish_within_grace(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    # reconnect=None: once the host is gone for good, new calls fail at once.
    serving = await make_worker(reconnect=None)
    calling = await make_worker(reconnect=None)
    finishing_started, release = asyncio.Event(), asyncio.Event()
    stuck_started, never = asyncio.Event(), asyncio.Event()
    await serving.register_factory("finishing", lambda: Gate(finishing_started, release))
    await serving.register_factory("stuck", lambda: Gate(stuck_started, never))
    finishing = asyncio.ensure_future(calling.send_message(Text("a"), AgentId("finishing", "default")))
    stuck = asyncio.ensure_future(calling.send_message(Text("b"), AgentId("stuck", "default")))
    await bounded(finishing_started.wait())
    await bounded(stuck_started.wait())

    stopping = asyncio.ensure_future(server.stop(grace=1.0))
    await until(lambda: not server.service.core.accepting)
    # While draining, the host takes no new calls...
    with pytest.raises(HostShuttingDownError):
        await bounded(calling.send_message(Text("late"), AgentId("finishing", "other")))
    # ...nor new workers: they are told why (close code 1013, try again later).
    with pytest.raises(HostConnectionError, match="1013"):
        await bounded(HttpWorkerAgentRuntime(server.url).start())
    # ...but a call in flight that finishes within the grace period gets its answer,
    release.set()
    assert await bounded(finishing) == Text("done a")
    # and one still running when the grace period ends fails with a precise error.
    with pytest.raises(HostShuttingDownError):
        await bounded(stuck)
    await bounded(stopping)

    # The workers' connections are closed: new calls fail instead of waiting.
    for worker in (calling, serving):
        with pytest.raises(HostConnectionError):
            await bounded(worker.send_message(Text("c"), AgentId("finishing", "default")))


async def test_the_host_routes_worker_frames_on_the_direct_path(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    # If a uvicorn release changes what uvicorn_protocol.py builds on, this fails rather than
    # every host silently falling back to the (slower) ASGI path; AUTOGEN_HTTP_FASTPATH=0 turns it off.
    assert direct_protocol() is (DirectWebSocketProtocol if FASTPATH else None)
    serving, calling = await make_worker(), await make_worker()
    await serving.register_factory("upper", Upper)
    assert await bounded(calling.send_message(Text("hi"), AgentId("upper", "k"))) == Text("HI")
    assert server._uvicorn is not None
    attached = [
        connection
        for connection in server._uvicorn.server_state.connections
        if isinstance(connection, DirectWebSocketProtocol) and connection._peer is not None
    ]
    assert len(attached) == (2 if FASTPATH else 0)


async def test_service_mounted_in_users_fastapi_app() -> None:
    app = FastAPI()
    service = HttpAgentService()
    app.include_router(service.router, prefix="/agents")

    @app.middleware("http")
    async def tag(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["x-served-by"] = "user-app"
        return response

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        ws="websockets-sansio",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    config.load()
    user_server = uvicorn.Server(config)
    user_server.lifespan = config.lifespan_class(config)
    base = f"http://127.0.0.1:{port}/agents"
    workers = [HttpWorkerAgentRuntime(base), HttpWorkerAgentRuntime(base)]
    try:
        await bounded(user_server.startup(sockets=[sock]))
        for worker in workers:
            worker.add_message_serializer(SERIALIZERS)
            await bounded(worker.start())
        first, second = workers
        await Upper.register(first, "upper-a", Upper)
        await Upper.register(second, "upper-b", Upper)
        assert await bounded(first.send_message(Text("x"), AgentId("upper-b", "k"))) == Text("X")
        assert await bounded(second.send_message(Text("y"), AgentId("upper-a", "k"))) == Text("Y")

        async with http_client() as http:
            response = await bounded(http.get(f"{base}/v1/agents"))
            unprefixed = await bounded(http.get(f"http://127.0.0.1:{port}/v1/agents"))
        assert response.status_code == 200
        assert response.headers["x-served-by"] == "user-app"
        core = service.core
        listing = response.json()
        assert (listing["agent_types"], listing["workers"]) == (
            {"upper-a": owners(core)["upper-a"].worker_id, "upper-b": owners(core)["upper-b"].worker_id},
            2,
        )
        assert owners(core)["upper-a"] is not owners(core)["upper-b"]
        assert unprefixed.status_code == 404
    finally:
        for worker in workers:
            await bounded(worker.stop())
        await bounded(service.close(grace=1.0))
        await bounded(user_server.shutdown(sockets=[sock]))


async def test_host_lists_agent_types(server: HttpAgentServer, make_worker: WorkerFactory) -> None:
    first = await make_worker()
    second = await make_worker()
    await Upper.register(first, "upper", Upper)
    await second.register_factory("other", Upper)
    core = server.service.core
    async with http_client() as http:
        response = await bounded(http.get(f"{server.url}/v1/agents"))
    assert response.status_code == 200
    listing = response.json()
    assert (listing["agent_types"], listing["workers"]) == (
        {"other": owners(core)["other"].worker_id, "upper": owners(core)["upper"].worker_id},
        2,
    )
    assert owners(core)["other"].worker_id != owners(core)["upper"].worker_id
