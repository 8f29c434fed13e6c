"""HttpAgentServer's guard on every connection (``_http/connections.py``), over real sockets:
a complete request within ``hello_timeout``, no idle or stalled socket kept, a request that
runs long left alone, and a descriptor budget that displaces idle sockets first."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from autogen_core import MessageContext, RoutedAgent, TopicId, message_handler

from autogen_http_runtime import HttpAgentServer, HttpAgentService
from autogen_http_runtime._http import server as _server

from .attack_support import (
    MiB,
    RawPeer,
    host_process,
    open_fds,
    poll,
    raw_peers,
    rss,
    settled_rss,
    workers,
)
from .utils import TIMEOUT, Text, bounded

HELLO_TIMEOUT = 0.5


@asynccontextmanager
async def guarded_host(
    hello_timeout: float = HELLO_TIMEOUT, **service: Any
) -> AsyncIterator[HttpAgentServer]:
    server = HttpAgentServer(
        "127.0.0.1", port=0, service=HttpAgentService(hello_timeout=hello_timeout, **service)
    )
    await bounded(server.start())
    try:
        yield server
    finally:
        await bounded(server.stop(grace=1))


@asynccontextmanager
async def raw_socket(server: HttpAgentServer) -> AsyncIterator[socket.socket]:
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await bounded(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server._port)))
        yield sock
    finally:
        sock.close()


async def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the host sends until it closes (or cuts) the connection."""
    loop = asyncio.get_running_loop()
    received = b""
    while True:
        try:
            data = await loop.sock_recv(sock, 65536)
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


async def closed_after(sock: socket.socket) -> float:
    """Seconds until the host closes the connection."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bounded(read_until_closed(sock))
    return loop.time() - started


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /readyz HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing", "half a request"],
)
async def test_a_connection_without_a_complete_request_is_cut(sent: bytes) -> None:
    async with guarded_host() as server, raw_socket(server) as sock:
        await asyncio.get_running_loop().sock_sendall(sock, sent)
        waited = await closed_after(sock)
        assert HELLO_TIMEOUT - 0.1 < waited < HELLO_TIMEOUT + 1.0


async def test_the_next_request_on_a_kept_alive_connection_is_timed_too() -> None:
    loop = asyncio.get_running_loop()
    async with guarded_host() as server, raw_socket(server) as sock:
        await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await bounded(loop.sock_recv(sock, 65536))
        assert answer.startswith(b"HTTP/1.1 200")
        await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\n")  # and never the rest
        waited = await closed_after(sock)
        assert waited < HELLO_TIMEOUT + 1.0


async def test_a_request_body_that_stalls_is_cut() -> None:
    loop = asyncio.get_running_loop()
    async with guarded_host() as server, raw_socket(server) as sock:
        head = (
            b"POST /v1/rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        await loop.sock_sendall(sock, head + b'{"jsonrpc":')  # 11 of 100 bytes
        waited = await closed_after(sock)
        assert waited < HELLO_TIMEOUT + 1.0
        # The host serves on.
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as client:
            assert (await client.get("/readyz")).status_code == 200


class Sleepy(RoutedAgent):
    """Answers after ``seconds``: a call that runs longer than ``hello_timeout``."""

    def __init__(self, seconds: float) -> None:
        super().__init__("answers late")
        self.seconds = seconds

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        await asyncio.sleep(self.seconds)  # the work itself takes this long; nothing waits on it
        return Text(message.content.upper())


async def test_a_request_that_runs_long_and_an_idle_worker_are_not_cut() -> None:
    async with guarded_host() as server, workers() as make:
        serving = await make(server.url)
        await serving.register_factory("sleepy", lambda: Sleepy(4 * HELLO_TIMEOUT))
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "send",
            "params": {
                "recipient": {"type": "sleepy", "key": "k"},
                "payload": {"data_type": "Text", "data": {"content": "late"}},
            },
        }
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as client:
            answer = await client.post("/v1/rpc", json=call)
        assert answer.status_code == 200
        assert answer.json()["result"]["payload"]["data"] == {"content": "LATE"}
        # The serving worker's connection sat idle for the whole call: still connected.
        assert len(list(server.service.core.directory.workers())) == 1


async def test_past_the_descriptor_budget_new_connections_displace_idle_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    budget = 4
    monkeypatch.setattr(_server, "descriptor_budget", lambda: budget)
    loop = asyncio.get_running_loop()
    async with guarded_host(hello_timeout=60) as server:
        idle = []
        try:
            for _ in range(budget):
                sock = socket.socket()
                sock.setblocking(False)
                idle.append(sock)
                await bounded(loop.sock_connect(sock, ("127.0.0.1", server._port)))
            # Each new connection displaces the oldest that has sent no request.
            async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as client:
                assert (await client.get("/readyz")).status_code == 200  # kept alive: holds one
                worker = await RawPeer.connect(server.url)
                try:
                    assert "result" in await bounded(worker.hello())
                finally:
                    worker.close()
            cut = [await bounded(read_until_closed(sock)) for sock in idle[:2]]
            assert cut == [b"", b""]
        finally:
            for sock in idle:
                sock.close()


async def test_on_uvloop_idle_sockets_and_a_peer_that_never_reads_are_cut(tmp_path: Path) -> None:
    """The guard works through asyncio's public transport API, so uvloop's transports (which
    ``serve`` uses when installed) get the same bounds: a host in its own process on uvloop."""
    ping, event_size = 0.5, 4 * MiB
    args = [
        "--loop",
        "uvloop",
        "--hello-timeout",
        "0.5",
        "--ping-interval",
        str(ping),
        "--ping-timeout",
        str(ping),
    ]
    loop = asyncio.get_running_loop()
    async with host_process(tmp_path, *args) as process, workers() as make, raw_peers() as peers:
        publisher = await make(process.url, name="publisher")
        await bounded(publisher.publish_message(Text("x" * event_size), TopicId("flood", "s")))
        baseline, descriptors = await settled_rss(process.pid), open_fds(process.pid)
        idle = socket.socket()
        idle.setblocking(False)
        try:
            await bounded(loop.sock_connect(idle, ("127.0.0.1", process.port)))
            sink = await RawPeer.connect(process.url)
            peers.append(sink)
            await bounded(sink.hello())
            spec = {"id": "sink", "kind": "type", "agent_type": "sink", "topic": "flood"}
            await bounded(sink.call("register_agent_type", {"type": "sink"}))
            await bounded(sink.call("add_subscription", {"subscription": spec}))
            for n in range(2):  # and the sink reads nothing more, pongs included
                await bounded(publisher.publish_message(Text(f"{n}" * event_size), TopicId("flood", "s")))
            assert await bounded(read_until_closed(idle)) == b""

            def let_go() -> bool:
                return open_fds(process.pid) <= descriptors and rss(process.pid) - baseline < 6 * MiB

            assert await poll(let_go, within=2 * ping + 1.0 + 2.0)
        finally:
            idle.close()
