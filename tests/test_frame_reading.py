"""Whole text frames read without websockets' parser (``_transport/frames.py``) give what it would give.

The unit tests hold ``read_frame``, ``parser_idle`` and ``FrameReader`` to
websockets' own framing. The stream tests send a mix of frames websockets must handle
(pings, fragments, frames split across reads; binary frames to the worker) over real
sockets, in random pieces, to the real worker client and to the real host, and check that
every message arrives whole, once, and in order.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
from autogen_core import AgentId
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from autogen_http_runtime import HttpAgentServer
from autogen_http_runtime._compat import FASTPATH
from autogen_http_runtime._constants import PROTOCOL_VERSION, WORKER_WS_PATH
from autogen_http_runtime._transport.client import LostHandler, MessageHandler, WebSocketClient, connect
from autogen_http_runtime._transport.frames import FrameReader, parser_idle, read_frame, size_limit

from .conftest import WorkerFactory
from .utils import Text, Upper, bounded

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def frame_bytes(opcode: Opcode, data: bytes, *, fin: bool = True, masked: bool) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=masked)


# -- read_frame ----------------------------------------------------------------------


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize("length", LENGTHS)
def test_reads_what_websockets_writes(length: int, masked: bool) -> None:
    data = random.Random(length).randbytes(length)
    raw = b"xy" + frame_bytes(Opcode.TEXT, data, masked=masked) + b"rest"
    assert read_frame(raw, 2, masked=masked, max_size=None) == (data, len(raw) - 4)


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize("length", [0, 5, 126, 65536])
def test_an_incomplete_frame_is_left_alone(length: int, masked: bool) -> None:
    raw = frame_bytes(Opcode.TEXT, b"a" * length, masked=masked)
    for cut in range(len(raw)) if length < 200 else [0, 1, 2, 3, 9, 13, len(raw) - 1]:
        assert read_frame(raw[:cut], 0, masked=masked, max_size=None) is None


OTHER_FRAMES = {
    "binary": frame_bytes(Opcode.BINARY, b"data", masked=True),
    "not final": frame_bytes(Opcode.TEXT, b"part", fin=False, masked=True),
    "continuation": frame_bytes(Opcode.CONT, b"part", masked=True),
    "ping": frame_bytes(Opcode.PING, b"p", masked=True),
    "pong": frame_bytes(Opcode.PONG, b"p", masked=True),
    "close": frame_bytes(Opcode.CLOSE, b"\x03\xe8", masked=True),
    "compressed": bytes([0xC1]) + frame_bytes(Opcode.TEXT, b"data", masked=True)[1:],  # RSV1 set
    "unmasked": frame_bytes(Opcode.TEXT, b"data", masked=False),
    "reserved opcode": bytes([0x8B, 0x80, 0, 0, 0, 0]),
}


@pytest.mark.parametrize("raw", OTHER_FRAMES.values(), ids=OTHER_FRAMES.keys())
def test_anything_else_is_for_websockets(raw: bytes) -> None:
    assert read_frame(raw, 0, masked=True, max_size=None) is None


def test_a_frame_over_the_limit_is_for_websockets() -> None:
    raw = frame_bytes(Opcode.TEXT, b"a" * 200, masked=False)
    assert read_frame(raw, 0, masked=False, max_size=199) is None
    assert read_frame(raw, 0, masked=False, max_size=200) == (b"a" * 200, len(raw))


# -- FrameReader ---------------------------------------------------------------------------


def read_all(reader: FrameReader, protocol: ServerProtocol, data: bytes) -> list[tuple[bytes, bool]]:
    """What a connection does with ``data``: the reader's messages, then websockets' for the rest."""
    messages, rest = reader.read(data)
    found = [(bytes(message), True) for message in messages]
    if rest:
        protocol.receive_data(rest)
        for event in protocol.events_received():
            assert isinstance(event, Frame)
            if event.opcode in (Opcode.TEXT, Opcode.BINARY):
                found.append((event.data, event.opcode is Opcode.TEXT))
    return found


def test_reader_takes_text_frames_up_to_the_first_other_frame() -> None:
    protocol = ServerProtocol(state=State.OPEN)
    reader = FrameReader(protocol, masked=True)
    first, second = (frame_bytes(Opcode.TEXT, data, masked=True) for data in (b"one", b"two"))
    ping, third = frame_bytes(Opcode.PING, b"", masked=True), frame_bytes(Opcode.TEXT, b"three", masked=True)
    messages, rest = reader.read(first + second + ping + third)
    assert messages == [b"one", b"two"] and rest == ping + third


def test_reader_holds_a_text_frame_cut_short() -> None:
    protocol = ServerProtocol(state=State.OPEN, max_size=None)
    reader = FrameReader(protocol, masked=True)
    big = frame_bytes(Opcode.TEXT, b"a" * 60000, masked=True)
    found = []
    cuts = [0, 1, 3, 9, 5000, len(big)]  # inside the header, the extended length, the data
    for start, end in itertools.pairwise(cuts):
        messages, rest = reader.read(big[start:end])
        assert rest == b"", "websockets is fed none of it"
        found += messages
    found += reader.read(frame_bytes(Opcode.TEXT, b"after", masked=True))[0]
    assert found == [b"a" * 60000, b"after"]


def test_reader_leaves_a_large_frame_cut_short_to_websockets() -> None:
    """Over 64 KiB websockets' own buffer does better; the reader takes frames again after it."""
    protocol = ServerProtocol(state=State.OPEN, max_size=None)
    reader = FrameReader(protocol, masked=True)
    large = frame_bytes(Opcode.TEXT, b"a" * 70000, masked=True)
    assert reader.read(large[:5]) == ([], b"")  # its length not known yet: held
    assert reader.read(large[5:5000]) == ([], large[:5000])  # too large to hold: all of it
    protocol.receive_data(large[:5000])
    found = read_all(reader, protocol, large[5000:])
    found += read_all(reader, protocol, frame_bytes(Opcode.TEXT, b"after", masked=True))
    assert found == [(b"a" * 70000, True), (b"after", True)]
    assert reader.read(frame_bytes(Opcode.TEXT, b"direct", masked=True)) == ([b"direct"], b"")


def test_reader_leaves_frames_to_websockets_once_this_side_closes() -> None:
    protocol = ClientProtocol(parse_uri("ws://h/"), state=State.OPEN)
    reader = FrameReader(protocol, masked=False)
    frame = frame_bytes(Opcode.TEXT, b"data", masked=False)
    assert reader.read(frame) == ([b"data"], b"")
    protocol.send_close(1000)
    assert reader.read(frame) == ([], frame)


def test_reader_leaves_a_frame_over_the_limit_to_websockets_from_its_header() -> None:
    """Not held until a gigabyte has come: websockets refuses it from the header (1009)."""
    protocol = ServerProtocol(state=State.OPEN, max_size=1000)
    reader = FrameReader(protocol, masked=True)
    header = bytes([0x81, 0x80 | 127]) + (1 << 30).to_bytes(8, "big") + bytes(4)
    assert reader.read(header[:5]) == ([], b"")  # its length not known yet: held
    messages, rest = reader.read(header[5:] + b"x" * 100)
    assert messages == [] and rest == header + b"x" * 100
    protocol.receive_data(rest)
    assert protocol.close_sent is not None and protocol.close_sent.code == 1009


def test_reader_hands_a_held_frame_to_websockets_once_it_failed() -> None:
    """After fail() websockets discards what comes; the held start of a frame goes to it too."""
    protocol = ClientProtocol(parse_uri("ws://h/"), state=State.OPEN)
    reader = FrameReader(protocol, masked=False)
    frame = frame_bytes(Opcode.TEXT, b"a" * 300, masked=False)
    assert reader.read(frame[:100]) == ([], b"")
    protocol.fail(1011, "keepalive ping timeout")
    assert reader.read(frame[100:] + frame) == ([], frame + frame)


async def test_real_workers_and_host_read_their_frames_directly(
    make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader is in use on both sides (a call between two workers is read by it), and in
    use nowhere with the fast path off (``AUTOGEN_HTTP_FASTPATH=0``)."""
    taken = {True: 0, False: 0}  # by masked (the host) and unmasked (workers) readers
    read = FrameReader.read

    def counting(self: FrameReader, data: bytes) -> tuple[list[bytes | bytearray], bytes | bytearray]:
        messages, rest = read(self, data)
        taken[self._masked] += len(messages)
        return messages, rest

    monkeypatch.setattr(FrameReader, "read", counting)
    serving, calling = await make_worker(), await make_worker()
    await Upper.register(serving, "upper", Upper)
    before = dict(taken)
    assert await bounded(calling.send_message(Text("direct"), AgentId("upper", "k"))) == Text("DIRECT")
    if FASTPATH:
        assert taken[True] - before[True] >= 2 and taken[False] - before[False] >= 2
    else:
        assert taken == {True: 0, False: 0}


def test_reader_leaves_a_frame_websockets_is_inside_of_to_it() -> None:
    """What follows the start of a frame websockets holds is its data, even when it looks
    like a text frame."""
    protocol = ServerProtocol(state=State.OPEN)
    reader = FrameReader(protocol, masked=True)
    lookalike = frame_bytes(Opcode.TEXT, b"not a frame", masked=True)
    # A binary frame whose data is the lookalike, masked with a key of zeros: unchanged.
    header = bytes([0x82, 0x80 | len(lookalike)]) + bytes(4)
    assert read_all(reader, protocol, header) == []  # websockets now waits for the data
    found = read_all(reader, protocol, lookalike + lookalike)
    assert found == [(lookalike, False), (b"not a frame", True)]


# -- parser_idle and size_limit --------------------------------------------------------------


def test_parser_idle_between_frames_only() -> None:
    client = ClientProtocol(parse_uri("ws://h/"), state=State.OPEN)
    assert parser_idle(client), "the installed websockets must let frames be read directly"
    raw = frame_bytes(Opcode.TEXT, b"hello", masked=False)
    client.receive_data(raw[:3])  # a frame split across reads
    assert not parser_idle(client)
    client.receive_data(raw[3:])
    assert parser_idle(client)
    client.receive_data(frame_bytes(Opcode.TEXT, b"he", fin=False, masked=False))
    assert not parser_idle(client), "a fragmented message is under way"
    client.receive_data(frame_bytes(Opcode.CONT, b"llo", masked=False))
    assert parser_idle(client)
    client.send_close(1000)
    assert not parser_idle(client), "closing"


def test_parser_not_idle_with_extensions_or_debug_logging() -> None:
    server = ServerProtocol(state=State.OPEN)
    assert parser_idle(server)
    server.debug = True
    assert not parser_idle(server)
    server.debug = False
    server.extensions = [object()]  # type: ignore[list-item]
    assert not parser_idle(server)


def test_size_limit() -> None:
    assert size_limit(ServerProtocol(max_size=1234)) == 1234
    assert size_limit(ServerProtocol(max_size=None)) is None


@pytest.mark.skipif(not hasattr(ServerProtocol(), "max_message_size"), reason="websockets < 15: one limit")
@pytest.mark.parametrize(
    ("limits", "expected"), [((1000, 100), 100), ((100, 1000), 100), ((None, 100), 100), ((1000, None), 1000)]
)
def test_size_limit_is_the_smaller_of_message_and_fragment(limits: Any, expected: int) -> None:
    assert size_limit(ServerProtocol(max_size=limits)) == expected


# -- streams over real sockets ------------------------------------------------------------------


def mixed_messages(rng: random.Random, count: int) -> list[tuple[Opcode, bytes, int]]:
    """(opcode, data, fragments) for ``count`` messages of every kind and size."""
    messages = []
    for n in range(count):
        pad = "x" * rng.choice([0, 3, 40, 125, 126, 3000, 65536, 200_000])
        data = json.dumps({"jsonrpc": "2.0", "id": n, "method": "no_such_method", "params": {"pad": pad}})
        opcode = Opcode.BINARY if rng.random() < 0.1 else Opcode.TEXT
        messages.append((opcode, data.encode(), 1 if rng.random() < 0.7 else rng.randint(2, 4)))
    return messages


def encode(
    messages: list[tuple[Opcode, bytes, int]], rng: random.Random, *, masked: bool
) -> tuple[list[bytes], int]:
    """Each message's frames, fragmented as asked, some after a ping; and how many pings."""
    encoded, pings = [], 0
    for opcode, data, fragments in messages:
        out = bytearray()
        if rng.random() < 0.2:
            out += frame_bytes(Opcode.PING, b"ping", masked=masked)
            pings += 1
        step = -(-len(data) // fragments)
        pieces = [data[i : i + step] for i in range(0, len(data), step)]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            out += frame_bytes(Opcode.CONT if i else opcode, piece, fin=last, masked=masked)
            if not last and rng.random() < 0.3:
                out += frame_bytes(Opcode.PING, b"mid", masked=masked)  # control frames may interleave
                pings += 1
        encoded.append(bytes(out))
    return encoded, pings


async def write_in_pieces(writer: asyncio.StreamWriter, data: bytes, rng: random.Random) -> None:
    """Write ``data``, mostly whole, sometimes cut at random places."""
    position = 0
    while position < len(data):
        step = rng.choice([1, 2, 7, 100, 1500]) if rng.random() < 0.3 else len(data)
        writer.write(data[position : position + step])
        await writer.drain()
        position += step


async def accept_worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ServerProtocol:
    """A host's side of the opening handshake, by hand: the test writes its frames' bytes itself."""
    protocol = ServerProtocol(max_size=None)
    request = None
    while request is None:
        protocol.receive_data(await bounded(reader.read(65536)))
        request = next((e for e in protocol.events_received() if isinstance(e, Request)), None)
    protocol.send_response(protocol.accept(request))
    writer.write(b"".join(protocol.data_to_send()))
    return protocol


@asynccontextmanager
async def worker_client(
    host: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    on_message: MessageHandler,
    on_lost: LostHandler,
) -> AsyncIterator[WebSocketClient]:
    """The real worker client, connected to a host played by ``host`` on a real socket."""
    server = await asyncio.start_server(host, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = None
    try:
        client = await bounded(
            connect(
                f"ws://127.0.0.1:{port}/",
                on_message,
                on_lost,
                headers={},
                ssl=None,
                max_size=1 << 24,
                compression=False,
                ping_interval=None,
                ping_timeout=None,
                write_buffer_limit=1 << 20,
            )
        )
        yield client
    finally:
        if client is not None:
            client.abort()
        server.close()
        await bounded(server.wait_closed())


@pytest.mark.parametrize("seed", range(6))
async def test_worker_reads_every_message_whole_once_and_in_order(seed: int) -> None:
    """Each message is written in pieces once the one before it has arrived: the reads start
    on a frame, as they mostly do, and some end inside one."""
    rng = random.Random(seed)
    messages = mixed_messages(rng, 60)
    encoded, pings = encode(messages, rng, masked=False)
    received: list[tuple[bytes, bool]] = []
    arrived = asyncio.Event()
    pongs: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_message(data: bytes | bytearray, text: bool) -> None:
        received.append((bytes(data), text))
        arrived.set()

    async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = await accept_worker(reader, writer)
        for count, message in enumerate(encoded, 1):
            await write_in_pieces(writer, message, rng)
            while len(received) < count:
                arrived.clear()
                await bounded(arrived.wait())
        writer.write(frame_bytes(Opcode.CLOSE, b"\x03\xe8done", masked=False))
        answered = 0
        while protocol.close_rcvd is None:  # the worker's pongs, then its side of the close
            protocol.receive_data(await bounded(reader.read(65536)))
            answered += sum(
                isinstance(e, Frame) and e.opcode is Opcode.PONG for e in protocol.events_received()
            )
        pongs.set_result(answered)
        writer.close()

    lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with worker_client(host, on_message, lost.set_result):
        assert await bounded(lost) == "the host closed the connection (code 1000: done)"
        assert await bounded(pongs) == pings > 0
    assert received == [(data, opcode is Opcode.TEXT) for opcode, data, _ in messages]


@asynccontextmanager
async def raw_worker(
    server: HttpAgentServer,
) -> AsyncIterator[tuple[ClientProtocol, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A WebSocket to the host, opened by hand: the test writes its frames' bytes itself."""
    url = urlsplit(server.url)
    assert url.hostname is not None and url.port is not None
    protocol = ClientProtocol(parse_uri(f"ws://{url.netloc}{WORKER_WS_PATH}"), max_size=None)
    reader, writer = await bounded(asyncio.open_connection(url.hostname, url.port))
    try:
        protocol.send_request(protocol.connect())
        writer.write(b"".join(protocol.data_to_send()))
        while not any(isinstance(e, Response) for e in protocol.events_received()):
            protocol.receive_data(await bounded(reader.read(65536)))
        assert protocol.state is State.OPEN
        yield protocol, reader, writer
    finally:
        writer.close()


@pytest.mark.parametrize("seed", range(4))
async def test_host_reads_every_message_whole_once_and_in_order(server: HttpAgentServer, seed: int) -> None:
    """Calls of a method the host does not know: each gets its error back, by id, in order."""
    rng = random.Random(seed)
    hello = {"jsonrpc": "2.0", "id": "hi", "method": "hello", "params": {"protocol": PROTOCOL_VERSION}}
    calls = [m for m in mixed_messages(rng, 40) if m[0] is Opcode.TEXT]
    encoded, pings = encode([(Opcode.TEXT, json.dumps(hello).encode(), 1), *calls], rng, masked=True)
    async with raw_worker(server) as (protocol, reader, writer):
        answers: list[Any] = []
        pongs = 0
        for count, message in enumerate(encoded, 1):  # each once the answer before it is in
            await bounded(write_in_pieces(writer, message, rng))
            while len(answers) < count:
                protocol.receive_data(await bounded(reader.read(1 << 20)))
                for event in protocol.events_received():
                    assert isinstance(event, Frame)
                    if event.opcode is Opcode.PONG:
                        pongs += 1
                    elif event.opcode is Opcode.TEXT:
                        answers.append(json.loads(event.data))
        while pongs < pings:
            protocol.receive_data(await bounded(reader.read(1 << 20)))
            pongs += sum(isinstance(e, Frame) and e.opcode is Opcode.PONG for e in protocol.events_received())
    assert [answer["id"] for answer in answers] == ["hi", *(json.loads(data)["id"] for _, data, _ in calls)]
    assert "result" in answers[0] and all(answer["error"]["code"] == -32601 for answer in answers[1:])
    assert pongs == pings > 0


async def test_host_reads_nothing_more_once_it_closes(server: HttpAgentServer) -> None:
    """A message that is not UTF-8 closes the connection (1007); a call read with it, in the
    same read, gets no answer."""
    hello = {"jsonrpc": "2.0", "id": "hi", "method": "hello", "params": {"protocol": PROTOCOL_VERSION}}
    call = {"jsonrpc": "2.0", "id": 5, "method": "no_such_method", "params": {}}
    async with raw_worker(server) as (protocol, reader, writer):
        writer.write(frame_bytes(Opcode.TEXT, json.dumps(hello).encode(), masked=True))
        while not (answers := [e for e in protocol.events_received() if isinstance(e, Frame)]):
            protocol.receive_data(await bounded(reader.read(65536)))
        assert json.loads(answers[0].data)["id"] == "hi"
        bad = frame_bytes(Opcode.TEXT, b'"\xff\xfe"', masked=True)
        writer.write(bad + frame_bytes(Opcode.TEXT, json.dumps(call).encode(), masked=True))
        answered, close = [], None
        while close is None:
            data = await bounded(reader.read(65536))
            assert data, "the host closed the socket before its close frame"
            protocol.receive_data(data)
            for event in protocol.events_received():
                assert isinstance(event, Frame)
                if event.opcode is Opcode.TEXT:
                    answered.append(json.loads(event.data)["id"])
                elif event.opcode is Opcode.CLOSE:
                    close = event
    assert answered == []
    assert protocol.close_rcvd is not None and protocol.close_rcvd.code == 1007


async def test_worker_masks_each_frame_with_a_fresh_key() -> None:
    keys: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()

    async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = await accept_worker(reader, writer)
        raw = b""
        while len(raw) < 3 * (2 + 4 + 5):  # three masked 5-byte text frames
            raw += await reader.read(65536)
        frames = [raw[i : i + 11] for i in range(0, 33, 11)]
        protocol.receive_data(raw)
        assert [e.data for e in protocol.events_received() if isinstance(e, Frame)] == [b"hello"] * 3
        keys.set_result([frame[2:6] for frame in frames])
        writer.close()

    async with worker_client(host, lambda data, text: None, lambda reason: None) as client:
        for _ in range(3):
            client.send_text(b"hello")
        assert len(set(await bounded(keys))) == 3
