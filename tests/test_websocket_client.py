"""The worker's own WebSocket client (``_transport/client.py``) against hosts that misbehave.

A real host never fragments its messages, sends binary frames, ignores pings, stalls the
handshake or stops reading; these fake hosts do, one thing each. They are websockets'
server where it can do the trick, and a bare socket where it cannot: the handshake by
hand, frames parsed with websockets' sans-I/O protocol, and nothing written but what the
test writes (so pings go unanswered). The workers are real runtimes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from autogen_core import AgentId, TopicId, TypeSubscription
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from autogen_http_runtime import (
    AuthenticationError,
    HostConnectionError,
    HttpAgentServer,
    HttpWorkerAgentRuntime,
)
from autogen_http_runtime._constants import WORKER_LOGGER
from autogen_http_runtime._protocol.batching import MAX_BATCH_BYTES

from .conftest import WorkerFactory
from .test_server import until
from .utils import SERIALIZERS, Recorder, Text, Upper, bounded

JsonObject = dict[str, Any]


def worker(port: int, **kwargs: Any) -> HttpWorkerAgentRuntime:
    runtime = HttpWorkerAgentRuntime(f"127.0.0.1:{port}", reconnect=None, **kwargs)
    runtime.add_message_serializer(SERIALIZERS)
    return runtime


def frames_of(message: str | bytes) -> list[JsonObject]:
    """The frames of one message from the worker: a frame, or a batch of them."""
    value = json.loads(message)
    return value if isinstance(value, list) else [value]


def answer(request: JsonObject, worker_id: str = "fake-worker") -> JsonObject:
    """What the fake hosts answer: hello with a worker id, send with the payload it got."""
    if request["method"] == "hello":
        result: JsonObject = {"worker_id": worker_id, "max_message_size": 1 << 20}
    elif request["method"] == "send":
        result = {"payload": request["params"]["payload"]}
    else:
        result = {}
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


def in_pieces(text: str, count: int) -> Iterator[str]:
    """``text`` in ``count`` pieces: websockets sends an iterable as a fragmented message."""
    step = -(-len(text) // count)
    return (text[i : i + step] for i in range(0, len(text), step))


# -- a host on websockets' server ------------------------------------------------------------


@asynccontextmanager
async def fake_host(
    handler: Callable[[ServerConnection], Awaitable[None]], *, compression: bool = False
) -> AsyncIterator[int]:
    async with serve(handler, "127.0.0.1", 0, compression="deflate" if compression else None) as server:
        yield next(iter(server.sockets)).getsockname()[1]


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
async def test_fragmented_messages_and_batches_from_the_host_are_read(compression: bool) -> None:
    async def host(ws: ServerConnection) -> None:
        hello = frames_of(await ws.recv())
        await ws.send(in_pieces(json.dumps(answer(hello[0])), 3))
        requests: list[JsonObject] = []
        while len(requests) < 3:
            requests += frames_of(await ws.recv())
        # All three answers in one batch, in another order, in seven fragments.
        await ws.send(in_pieces(json.dumps([answer(r) for r in reversed(requests)]), 7))
        async for message in ws:  # bye, then the close
            await ws.send(json.dumps([answer(r) for r in frames_of(message)]))

    async with fake_host(host, compression=compression) as port:
        runtime = worker(port, compression=compression)
        await bounded(runtime.start())
        try:
            connection = runtime._lifecycle.link.connection
            assert connection is not None and connection.worker_id == "fake-worker"
            assert connection._ws is not None
            assert connection._ws.extensions == (["permessage-deflate"] if compression else [])
            words = ["one", "two", "three ü" * 1000]
            replies = await bounded(
                asyncio.gather(*(runtime.send_message(Text(w), AgentId("echo", "k")) for w in words))
            )
            assert replies == [Text(w) for w in words]
        finally:
            await bounded(runtime.stop())


async def test_a_binary_frame_from_the_host_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, WORKER_LOGGER)

    async def host(ws: ServerConnection) -> None:
        async for message in ws:
            requests = frames_of(message)
            if any(r["method"] == "send" for r in requests):
                await ws.send(b"\x00\x01 not a frame")
            await ws.send(json.dumps([answer(r) for r in requests]))

    async with fake_host(host) as port:
        runtime = worker(port)
        await bounded(runtime.start())
        try:
            for word in ("first", "second"):  # the connection survives it, twice
                assert await bounded(runtime.send_message(Text(word), AgentId("echo", "k"))) == Text(word)
        finally:
            await bounded(runtime.stop())
    ignored = [r for r in caplog.records if "Ignored a binary frame" in r.getMessage()]
    assert len(ignored) == 2
    assert not [r for r in caplog.records if "Lost the connection" in r.getMessage()]


# -- a host on a bare socket -----------------------------------------------------------------

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawConnection:
    """One worker's socket on the raw host: the handshake by hand, frames read with a
    sans-I/O ``ServerProtocol`` whose own output (pongs, close answers) is thrown away."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = ServerProtocol(state=State.OPEN, max_size=None)
        self.received: list[Frame] = []
        self.eof = asyncio.Event()

    async def read_request(self) -> str:
        """Read the handshake request; return the Sec-WebSocket-Accept value it asks for."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.decode("latin-1").split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()

    async def accept(self, then: bytes = b"") -> None:
        """Read the handshake request and accept it; ``then`` goes out in the same write."""
        accept = await self.read_request()
        self.writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n" + then
        )

    def send(self, value: Any) -> None:
        self.writer.write(Frame(Opcode.TEXT, json.dumps(value).encode()).serialize(mask=False))

    async def next_frame(self) -> Frame | None:
        """The next frame from the worker (pings too); ``None`` at the end of the stream."""
        while True:
            for event in self.parser.events_received():
                assert isinstance(event, Frame)
                self.received.append(event)
                return event
            self.parser.data_to_send()  # no pongs, no close answers
            data = await self.reader.read(65536)
            if not data:
                self.eof.set()
                return None
            self.parser.receive_data(data)

    async def next_message(self) -> list[JsonObject]:
        while (frame := await self.next_frame()) is not None:
            if frame.opcode is Opcode.TEXT:
                return frames_of(frame.data)
        raise AssertionError("the worker closed the connection")

    async def say_hello(self) -> None:
        await self.accept()
        (hello,) = await self.next_message()
        self.send(answer(hello))

    async def read_to_the_end(self) -> None:
        while await self.next_frame() is not None:
            pass


@asynccontextmanager
async def raw_host(serve_one: Callable[[RawConnection], Awaitable[None]]) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 running ``serve_one`` for each connection; closes them all on exit."""
    connections: list[RawConnection] = []
    tasks: set[asyncio.Task[None]] = set()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = RawConnection(reader, writer)
        connections.append(connection)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        await serve_one(connection)

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await bounded(asyncio.gather(*tasks, return_exceptions=True))
        for connection in connections:
            connection.writer.close()
        await bounded(server.wait_closed())


async def test_a_host_that_stops_answering_pings_is_dropped_by_keepalive() -> None:
    served: asyncio.Future[RawConnection] = asyncio.get_running_loop().create_future()

    async def host(connection: RawConnection) -> None:
        served.set_result(connection)
        await connection.say_hello()
        await connection.read_to_the_end()

    async with raw_host(host) as port:
        runtime = worker(port, ping_interval=0.2, ping_timeout=0.2)
        began = time.monotonic()
        await bounded(runtime.start())
        try:
            connection = await bounded(served)
            await bounded(connection.eof.wait())  # the worker gave up on the socket
            elapsed = time.monotonic() - began
            assert elapsed >= 0.35  # not before a ping went unanswered for ping_timeout
            opcodes = [frame.opcode for frame in connection.received]
            assert Opcode.PING in opcodes
            # It said why before dropping the socket.
            assert opcodes[-1] is Opcode.CLOSE
            close = Close.parse(connection.received[-1].data)
            assert (close.code, close.reason) == (1011, "keepalive ping timeout")
            with pytest.raises(HostConnectionError, match="keepalive ping timeout"):
                await bounded(runtime.send_message(Text("x"), AgentId("echo", "k")))
        finally:
            await bounded(runtime.stop())


async def test_a_host_that_answers_pings_keeps_the_worker(make_worker: WorkerFactory) -> None:
    runtime = await make_worker(ping_interval=0.05, ping_timeout=2.0)
    connection = runtime._lifecycle.link.connection
    assert connection is not None and connection._ws is not None
    client = connection._ws
    answered: list[bytes] = []
    handle_frame = client._handle_frame

    def watch(frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            answered.append(bytes(frame.data))
        handle_frame(frame)

    client._handle_frame = watch  # type: ignore[method-assign]
    await until(lambda: len(answered) >= 5)  # five rounds of pings, and five pongs
    assert runtime._lifecycle.link.connected and not connection.closed


async def test_a_host_that_never_answers_the_handshake_fails_start_within_connect_timeout() -> None:
    served: asyncio.Future[RawConnection] = asyncio.get_running_loop().create_future()

    async def host(connection: RawConnection) -> None:
        served.set_result(connection)
        await connection.read_request()
        await connection.read_to_the_end()  # and never answer

    async with raw_host(host) as port:
        runtime = worker(port, connect_timeout=0.3)
        began = time.monotonic()
        with pytest.raises(HostConnectionError, match="127.0.0.1") as info:
            await bounded(runtime.start())
        assert time.monotonic() - began >= 0.25
        assert not isinstance(info.value, AuthenticationError)
        connection = await bounded(served)
        await bounded(connection.eof.wait())  # the worker closed its socket: nothing left open


@pytest.mark.parametrize("framing", ["content-length", "until-close"])
async def test_a_handshake_refused_with_503_says_so_with_the_hosts_detail(framing: str) -> None:
    body = json.dumps(
        {"type": "about:blank", "title": "Unavailable", "detail": "the host is draining"}
    ).encode()

    async def host(connection: RawConnection) -> None:
        await connection.read_request()
        length = f"Content-Length: {len(body)}\r\n" if framing == "content-length" else ""
        head = f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n{length}\r\n"
        connection.writer.write(head.encode() + body)
        if framing == "until-close":
            connection.writer.close()  # the body ends with the connection
        await connection.read_to_the_end()

    async with raw_host(host) as port:
        runtime = worker(port)
        with pytest.raises(HostConnectionError, match=r"HTTP 503\): the host is draining") as info:
            await bounded(runtime.start())
        assert not isinstance(info.value, AuthenticationError)


async def test_a_host_that_accepts_and_closes_at_once_fails_start_with_its_reason() -> None:
    # As a host past max_connections does: 101, then a close frame, then the socket's end,
    # all at once. start() fails at once with the host's reason, not a hello timeout.
    async def host(connection: RawConnection) -> None:
        close = Frame(Opcode.CLOSE, Close(1013, "too many connections").serialize())
        await connection.accept(then=close.serialize(mask=False))
        connection.writer.close()

    async with raw_host(host) as port:
        runtime = worker(port, connect_timeout=5.0)
        began = time.monotonic()
        with pytest.raises(HostConnectionError, match=r"code 1013: too many connections"):
            await bounded(runtime.start())
        assert time.monotonic() - began < 2.5  # not connect_timeout


async def test_a_host_that_stops_reading_makes_senders_wait_and_stop_still_ends() -> None:
    limit = 64 * 1024
    served: asyncio.Future[RawConnection] = asyncio.get_running_loop().create_future()

    async def host(connection: RawConnection) -> None:
        await connection.say_hello()
        served.set_result(connection)
        await asyncio.Event().wait()  # and read nothing more, ever

    async with raw_host(host) as port:
        runtime = worker(port, write_buffer_limit=limit, ping_interval=None, control_timeout=0.5)
        await bounded(runtime.start())
        await bounded(served)
        connection = runtime._lifecycle.link.connection
        assert connection is not None and connection._ws is not None
        client = connection._ws
        published = 0
        message = Text("x" * 32 * 1024)

        async def flood() -> None:
            nonlocal published
            for _ in range(2000):  # 64 MiB, if nothing held it back
                await runtime.publish_message(message, TopicId("flood", "s"))
                published += 1

        flooding = asyncio.ensure_future(flood())
        try:
            await until(lambda: not client.writable.is_set() or flooding.done())
            assert not flooding.done(), "every publish went out with nobody reading"
            waiting_at = published
            for _ in range(200):  # many passes of the loop: the flood stays where it is
                await asyncio.sleep(0)
            assert published == waiting_at and not flooding.done()
            assert client._transport is not None
            # The socket's buffer holds about the limit, plus one batch written before the pause.
            assert client._transport.get_write_buffer_size() <= limit + MAX_BATCH_BYTES + 64 * 1024
            # Stopping neither hangs on the full socket nor leaves the sender waiting.
            await bounded(runtime.stop())
            with pytest.raises(HostConnectionError):
                await bounded(flooding)
        finally:
            flooding.cancel()
            await bounded(runtime.stop())


# -- a real host -----------------------------------------------------------------------------


async def test_events_sent_just_before_the_connection_closes_reach_the_host(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    subscriber = await make_worker()
    await subscriber.register_factory("rec", lambda: Recorder(inbox))
    await bounded(subscriber.add_subscription(TypeSubscription("news", "rec")))
    publisher = await make_worker()

    async def publish_and_close() -> None:
        for n in range(20):
            await publisher.publish_message(Text(f"news {n}"), TopicId("news", "s"))
        # In the same turn of the loop: the events still wait for the end of it to be written.
        await publisher._lifecycle.link.close()

    await bounded(publish_and_close())
    received = [(await bounded(inbox.get()))[1] for _ in range(20)]
    assert received == [Text(f"news {n}") for n in range(20)]


async def test_published_then_stopped_at_once_every_event_arrives(make_worker: WorkerFactory) -> None:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    subscriber = await make_worker()
    await subscriber.register_factory("rec", lambda: Recorder(inbox))
    await bounded(subscriber.add_subscription(TypeSubscription("news", "rec")))
    publisher = await make_worker()
    big = "y" * (MAX_BATCH_BYTES // 4)  # some batches are flushed on size, the rest at stop
    for n in range(10):
        await publisher.publish_message(Text(f"{n} {big}"), TopicId("news", "s"))
    await bounded(publisher.stop())
    received = [(await bounded(inbox.get()))[1] for _ in range(10)]
    assert received == [Text(f"{n} {big}") for n in range(10)]


# -- through an HTTP proxy -----------------------------------------------------------------


@asynccontextmanager
async def connect_proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP proxy that serves CONNECT: yields its URL and the targets it was asked for."""
    asked: list[str] = []
    tunnels: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def serve_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ")
        assert method == "CONNECT"
        asked.append(target)
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for task in (pipe(reader, upstream_writer), pipe(upstream_reader, writer)):
            tunnels.add(asyncio.ensure_future(task))

    proxy = await asyncio.start_server(serve_client, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}", asked
    finally:
        proxy.close()
        for task in tunnels:
            task.cancel()
        await bounded(asyncio.gather(*tunnels, return_exceptions=True))
        await bounded(proxy.wait_closed())


@pytest.mark.parametrize("bypassed", [False, True], ids=["through-proxy", "no-proxy-bypass"])
async def test_a_worker_reaches_the_host_through_the_http_proxy_the_environment_names(
    server: HttpAgentServer, make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch, bypassed: bool
) -> None:
    serving = await make_worker()
    await Upper.register(serving, "upper", Upper)
    host_port = server.url.rsplit(":", 1)[1]
    async with connect_proxy() as (proxy_url, asked):
        for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        if bypassed:
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        caller = await make_worker()
        reply = await bounded(caller.send_message(Text("proxied"), AgentId("upper", "k")))
        assert reply == Text("PROXIED")
        assert asked == ([] if bypassed else [f"127.0.0.1:{host_port}"])
        await bounded(caller.stop())


async def test_a_sender_that_never_waits_still_lets_the_loop_run(make_worker: WorkerFactory) -> None:
    # Publishing in a loop never waits while the socket takes the data; the loop must still
    # get a turn now and then, for replies, pings and other tasks.
    publisher = await make_worker()
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counting = asyncio.ensure_future(count_turns())
    try:
        await asyncio.sleep(0)
        message = Text("x" * 100)
        before = turns

        async def flood() -> None:  # one task, awaiting nothing but the publishes
            for _ in range(5000):
                await publisher.publish_message(message, TopicId("nobody", "s"))

        await bounded(flood())
        assert turns - before >= 10
    finally:
        counting.cancel()


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, MAX_BATCH_BYTES + 1])
def test_text_frames_written_directly_are_what_websockets_reads(length: int) -> None:
    from autogen_http_runtime._transport.frames import masked_frame

    server = ServerProtocol(state=State.OPEN)
    data = bytes(range(256)) * (length // 256) + b"x" * (length % 256)
    header, masked = masked_frame(data, b"\x01\x02\x03\x04")
    assert len(masked) == length and (length < 4 or masked != data)  # masked
    server.receive_data(header + masked)
    [frame] = server.events_received()
    assert isinstance(frame, Frame) and frame.opcode is Opcode.TEXT and frame.fin
    assert frame.data == data
    assert server.state is State.OPEN and server.parser_exc is None
