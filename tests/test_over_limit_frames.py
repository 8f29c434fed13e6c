"""What really happens to a WebSocket frame over a size limit, by direction and by whose limit.

docs/protocol.md ("Size limit", "Close codes") and docs/security.md ("Limits") say what these
tests show:

- a frame that reaches the host over the host's ``max_message_size`` closes that connection
  with 1009, on both WebSocket paths; nothing answers the request it carried;
- the Python worker never sends one: past the effective limit (the smaller of its own and
  the host's) ``MessageTooLargeError`` (-32008) is raised where it sends, and the connection
  keeps serving;
- a frame that reaches the Python worker over its own limit (from a host that does not
  check, as ours does) closes the connection with 1009 too;
- a frame over the limit a client announced in ``hello``, but within the host's, is read as
  any other: each side's limit is on what it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from autogen_core import AgentId, TopicId
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime, MessageTooLargeError
from autogen_http_runtime._constants import PROTOCOL_VERSION, WORKER_WS_PATH
from autogen_http_runtime._http import server as _server

from .utils import SERIALIZERS, TIMEOUT, Text, Upper, bounded

LIMIT = 4096
#: A WebSocket close code: the message was too big for the receiver (RFC 6455).
MESSAGE_TOO_BIG = 1009


@pytest.fixture(params=["direct", "asgi"])
async def small_host(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[HttpAgentServer]:
    """A host whose limit is LIMIT bytes, on the direct WebSocket path or the ASGI one."""
    if request.param == "asgi":
        monkeypatch.setattr(_server, "direct_protocol", lambda: None)
    host = HttpAgentServer("127.0.0.1", port=0, max_message_size=LIMIT)
    await bounded(host.start())
    try:
        yield host
    finally:
        await bounded(host.stop(grace=1))


@contextlib.asynccontextmanager
async def worker(url: str, **options: Any) -> AsyncIterator[HttpWorkerAgentRuntime]:
    runtime = HttpWorkerAgentRuntime(url, **options)
    runtime.add_message_serializer(SERIALIZERS)
    await bounded(runtime.start())
    try:
        yield runtime
    finally:
        await bounded(runtime.stop())


@contextlib.asynccontextmanager
async def raw_client(host: HttpAgentServer) -> AsyncIterator[ClientConnection]:
    url = host.url.replace("http", "ws", 1) + WORKER_WS_PATH
    # max_size=None: this client reads whatever comes; only the host's limit is under test.
    async with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, max_size=None) as ws:
        yield ws


def request(request_id: int, method: str, params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


async def call(ws: ClientConnection, request_id: int, method: str, params: Any) -> dict[str, Any]:
    await bounded(ws.send(request(request_id, method, params)))
    reply: dict[str, Any] = json.loads(await bounded(ws.recv()))
    return reply


def send_params(content: str) -> dict[str, Any]:
    return {
        "recipient": {"type": "upper", "key": "k"},
        "payload": {"data_type": "Text", "data": {"content": content}},
    }


async def test_a_frame_over_the_hosts_limit_closes_the_connection_with_1009(
    small_host: HttpAgentServer,
) -> None:
    async with worker(small_host.url) as serving:
        await Upper.register(serving, "upper", Upper)
        async with raw_client(small_host) as ws:
            hello = await call(ws, 1, "hello", {"protocol": PROTOCOL_VERSION})
            assert hello["result"]["max_message_size"] == LIMIT
            assert len(small_host.service.core.sessions) == 2
            frame = request(2, "send", send_params("x" * LIMIT))
            assert len(frame) > LIMIT
            await bounded(ws.send(frame))
            # No -32008 answer: the next thing to arrive is the close.
            with pytest.raises(ConnectionClosed) as closed:
                await bounded(ws.recv())
            assert closed.value.rcvd is not None and closed.value.rcvd.code == MESSAGE_TOO_BIG
        # The host dropped that connection and still serves the others.
        async with worker(small_host.url) as caller:
            assert await bounded(caller.send_message(Text("ok"), AgentId("upper", "k"))) == Text("OK")


async def test_a_frame_within_the_hosts_limit_but_over_the_clients_own_is_read(
    small_host: HttpAgentServer,
) -> None:
    async with worker(small_host.url) as serving:
        await Upper.register(serving, "upper", Upper)
        async with raw_client(small_host) as ws:
            await call(ws, 1, "hello", {"protocol": PROTOCOL_VERSION, "max_message_size": 1024})
            content = "x" * 2000  # a request of about 2.1 KB: over 1024, within LIMIT
            reply = await call(ws, 2, "send", send_params(content))
            # The reply is as large: over the limit this client announced, so the host
            # answers -32008 in its place, on a connection that stays open.
            assert reply["id"] == 2 and reply["error"]["code"] == -32008, reply
            assert reply["error"]["message"].startswith("The reply is"), reply
            reply = await call(ws, 3, "send", send_params("small"))
            assert reply["result"]["payload"]["data"] == {"content": "SMALL"}


async def test_the_python_worker_never_sends_a_frame_over_the_limit(small_host: HttpAgentServer) -> None:
    async with worker(small_host.url) as serving, worker(small_host.url, max_message_size=1 << 20) as sender:
        await Upper.register(serving, "upper", Upper)
        # Its own limit is 1 MiB, the host's 4 KiB: the smaller one is the one it keeps to.
        with pytest.raises(MessageTooLargeError) as caught:
            await bounded(sender.send_message(Text("x" * LIMIT), AgentId("upper", "k")))
        assert caught.value.code == -32008 and str(LIMIT) in str(caught.value)
        with pytest.raises(MessageTooLargeError):
            await bounded(sender.publish_message(Text("x" * LIMIT), TopicId("news", "s")))
        # Nothing was sent, nothing was closed: the same connection serves the next call.
        assert await bounded(sender.send_message(Text("ok"), AgentId("upper", "k"))) == Text("OK")
        assert len(small_host.service.core.sessions) == 2


async def test_a_frame_over_the_python_workers_limit_closes_with_1009() -> None:
    """A host that does not check sizes (not ours) sends the worker a frame past its limit."""
    closes: asyncio.Queue[int | None] = asyncio.Queue()

    async def careless_host(ws: ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        result = {"protocol": PROTOCOL_VERSION, "worker_id": "w1", "max_message_size": LIMIT}
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": hello["id"], "result": result}))
        event = {
            "specversion": "1.0",
            "id": "e1",
            "source": "s",
            "type": "news",
            "agmsgtype": "Text",
            "datacontenttype": "application/json",
            "data": {"content": "x" * LIMIT},
            "agrecipient": "upper/s",
        }
        await ws.send(json.dumps(event))
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()
        received = ws.protocol.close_rcvd
        closes.put_nowait(None if received is None else received.code)

    async with serve(careless_host, "127.0.0.1", 0, max_size=None) as fake:
        port = fake.sockets[0].getsockname()[1]
        async with worker(f"127.0.0.1:{port}", max_message_size=LIMIT):
            assert await bounded(closes.get()) == MESSAGE_TOO_BIG
