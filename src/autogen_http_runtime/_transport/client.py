"""A WebSocket client: an asyncio protocol driving websockets' sans-I/O ``ClientProtocol``.

websockets' own asyncio client hands every message through a queue to a reader task, and
every send through a lock and a coroutine. A worker's frames are small and many, and those
hops cost about a third of its CPU per call (docs/performance.md). Here a message reaches
its callback straight from ``data_received``, and :meth:`WebSocketClient.send_text` writes
at once. What websockets' client does besides, this does too: the opening handshake with
extra headers, TLS, keepalive pings, the closing handshake, and flow control for sending
(senders wait in :meth:`WebSocketClient.drain` while the socket's buffer is full).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl as ssl_module
from collections.abc import Callable, Mapping
from typing import Final, cast

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidMessage
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri

from .._constants import __version__
from .._randomness import random_chunks
from .fastpath import frame_reader_allowed
from .frames import FrameReader, masked_frame, write_pieces

#: Seconds to wait for the host's side of the closing handshake before dropping the socket.
CLOSE_TIMEOUT: Final = 2.0

#: Called with each complete message's bytes, and whether it is text. The bytes may be a
#: bytearray (websockets reads into one): no copy of a large message just to make it bytes.
MessageHandler = Callable[[bytes | bytearray, bool], None]
#: Called once when the connection is gone, with why, in words.
LostHandler = Callable[[str], None]


class WebSocketClient(asyncio.Protocol):
    """One client WebSocket connection. Use :func:`connect`."""

    def __init__(
        self,
        protocol: ClientProtocol,
        on_message: MessageHandler,
        on_lost: LostHandler,
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
        write_buffer_limit: int,
    ) -> None:
        self._ws = protocol
        #: Whole text frames are read there, websockets reads the rest (see frames.py); or,
        #: without the fast path, websockets reads everything and frames every message.
        self._fast = frame_reader_allowed()
        self._frames = FrameReader(protocol, masked=False) if self._fast else None
        self._on_message = on_message
        self._on_lost = on_lost
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._write_buffer_limit = write_buffer_limit
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._opened: asyncio.Future[None] = loop.create_future()
        self._lost: asyncio.Future[None] = loop.create_future()
        self._fragments: list[bytes] = []
        self._fragmented_text = False
        self._ping_payload: bytes | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._failure: str | None = None
        self._mask_keys = random_chunks(4)
        #: Set while the socket takes more data; cleared while its buffer is full.
        self.writable = asyncio.Event()
        self.writable.set()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, but has its methods).
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=self._write_buffer_limit)

    def data_received(self, data: bytes) -> None:
        rest: bytes | bytearray = data
        if self._frames is not None:
            messages, rest = self._frames.read(data)
            for message in messages:
                self._on_message(message, True)
        if rest:
            self._ws.receive_data(rest)
            self._handle_events()
            self._write_out()

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._handle_events()
        self._write_out()
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ws.state is not State.CLOSED:
            self._ws.receive_eof()
            self._handle_events()
        for timer in (self._ping_timer, self._pong_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self.writable.set()
        reason = self.close_description()
        if not self._opened.done():
            self._opened.set_exception(
                self._ws.handshake_exc
                or InvalidMessage("the host closed the connection before answering the WebSocket handshake")
            )
        if not self._lost.done():
            self._lost.set_result(None)
            self._on_lost(reason)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # -- what the connection's user calls --------------------------------------------------

    @property
    def extensions(self) -> list[str]:
        """Names of the extensions the handshake agreed on (``permessage-deflate``)."""
        return [extension.name for extension in self._ws.extensions]

    def send_text(self, data: bytes) -> None:
        """Send one text message now (``data`` is UTF-8).

        Raises:
            websockets.exceptions.InvalidState: The connection is closing or closed.
        """
        self._send(data, binary=False)

    def _send(self, data: bytes, *, binary: bool) -> None:
        transport, ws = self._transport, self._ws
        if (
            not self._fast
            or ws.state is not State.OPEN
            or ws.extensions
            or ws.debug
            or transport is None
            or transport.is_closing()
        ):
            # Compressed, logged frame by frame, closing or closed: websockets frames it, or raises.
            if binary:
                ws.send_binary(data)
            else:
                ws.send_text(data)
            self._write_out()
            return
        # What websockets would write, without copying a large message into one buffer with
        # its header: the header and the masked data go to the socket as they are.
        write_pieces(transport, masked_frame(data, next(self._mask_keys), binary=binary))

    def send_binary(self, data: bytes) -> None:
        """Send one binary message now, as :meth:`send_text` sends a text one.

        Raises:
            websockets.exceptions.InvalidState: The connection is closing or closed.
        """
        self._send(data, binary=True)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait while the socket's buffer holds more than the write buffer limit.

        Raises:
            asyncio.TimeoutError: The buffer was still full after ``timeout`` seconds.
        """
        if not self.writable.is_set():
            await asyncio.wait_for(self.writable.wait(), timeout)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code``: send the close frame, wait briefly for the host's answer."""
        if self._ws.state is State.OPEN:
            self._ws.send_close(code, reason)
            self._write_out()
        if self._transport is not None and not self._lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._lost), CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                self._transport.abort()
                await self._lost

    def abort(self) -> None:
        """Drop the socket now, without a closing handshake."""
        if self._transport is not None:
            self._transport.abort()

    @property
    def close_code(self) -> int | None:
        """The code of the close frame the host sent, if it sent one."""
        received = self._ws.close_rcvd
        return None if received is None else received.code

    def close_description(self) -> str:
        """Why the connection closed, in words."""
        received = self._ws.close_rcvd
        if received is not None:
            detail = f": {received.reason}" if received.reason else ""
            return f"the host closed the connection (code {received.code}{detail})"
        if self._failure is not None:
            return self._failure
        sent = self._ws.close_sent
        if sent is not None and sent.code != 1000:
            detail = f": {sent.reason}" if sent.reason else ""
            return f"this worker closed the connection (code {sent.code}{detail})"
        return "the connection dropped without a close frame"

    # -- inside ---------------------------------------------------------------------------

    async def _handshake(self, headers: Mapping[str, str]) -> None:
        request = self._ws.connect()
        for name, value in {"User-Agent": f"autogen-http-runtime/{__version__}", **headers}.items():
            if name in request.headers:
                del request.headers[name]
            request.headers[name] = value
        self._ws.send_request(request)
        self._write_out()
        await self._opened
        if self._ping_interval is not None and not self._lost.done():
            self._ping_timer = self._loop.call_later(self._ping_interval, self._ping)

    def _handle_events(self) -> None:
        for event in self._ws.events_received():
            if isinstance(event, Response):
                if self._opened.done():
                    continue
                if self._ws.handshake_exc is not None:
                    self._opened.set_exception(self._ws.handshake_exc)
                else:
                    self._opened.set_result(None)
            elif isinstance(event, Frame):
                self._handle_frame(event)

    def _handle_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                data = frame.data
                self._on_message(data if isinstance(data, bytearray) else bytes(data), opcode is Opcode.TEXT)
            else:
                self._fragments = [bytes(frame.data)]
                self._fragmented_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self._on_message(data, self._fragmented_text)
        elif opcode is Opcode.PONG and self._ping_payload is not None and frame.data == self._ping_payload:
            self._ping_payload = None
        # Pings are answered, and close frames handled, by the protocol itself.

    def _write_out(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        for data in self._ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if self._close_timer is None and self._ws.close_expected():
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, transport.abort)

    def _ping(self) -> None:
        if self._ws.state is not State.OPEN:
            return
        if self._ping_payload is None:  # the last one was answered
            self._ping_payload = os.urandom(4)
            self._ws.send_ping(self._ping_payload)
            self._write_out()
            if self._ping_timeout is not None:
                if self._pong_timer is not None:
                    self._pong_timer.cancel()
                self._pong_timer = self._loop.call_later(
                    self._ping_timeout, self._ping_timed_out, self._ping_payload
                )
        assert self._ping_interval is not None
        self._ping_timer = self._loop.call_later(self._ping_interval, self._ping)

    def _ping_timed_out(self, payload: bytes) -> None:
        if self._ping_payload == payload and self._ws.state is State.OPEN:
            self._failure = "keepalive ping timeout: the host did not answer in time"
            self._ws.fail(1011, "keepalive ping timeout")
            self._write_out()
            self.abort()


async def connect(
    url: str,
    on_message: MessageHandler,
    on_lost: LostHandler,
    *,
    headers: Mapping[str, str],
    ssl: ssl_module.SSLContext | None,
    max_size: int,
    compression: bool,
    ping_interval: float | None,
    ping_timeout: float | None,
    write_buffer_limit: int,
    proxy: bool = True,
    unacked_timeout: float | None = None,
) -> WebSocketClient:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) and return it once it is open.

    ``proxy``: go through the proxy the environment names for ``url``, if any.
    ``unacked_timeout``: seconds data written may stay unacknowledged by the peer before the
    kernel drops the connection (``TCP_USER_TIMEOUT``, Linux), so that a peer gone silent is
    found without waiting for a ping to time out.

    Raises:
        OSError: The host cannot be reached (``ssl.SSLError`` for TLS failures).
        websockets.exceptions.InvalidHandshake: The host refused the WebSocket, e.g.
            ``InvalidStatus`` for an HTTP error response, or closed before answering.
    """
    uri = parse_uri(url)
    protocol = ClientProtocol(
        uri,
        max_size=max_size,
        extensions=enable_client_permessage_deflate(None) if compression else None,
    )
    tls = (ssl or ssl_module.create_default_context()) if uri.secure else None

    def make() -> WebSocketClient:
        return WebSocketClient(
            protocol,
            on_message,
            on_lost,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            write_buffer_limit=write_buffer_limit,
        )

    loop = asyncio.get_running_loop()
    through = _proxy_for(uri) if proxy else None
    if through is None:
        _, client = await loop.create_connection(
            make, uri.host, uri.port, ssl=tls, server_hostname=uri.host if tls is not None else None
        )
    else:
        client = await _through_proxy(through, uri, tls, make)
    if unacked_timeout is not None and client._transport is not None:
        sock = client._transport.get_extra_info("socket")
        if sock is not None and hasattr(socket, "TCP_USER_TIMEOUT") and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(unacked_timeout * 1000)))
    try:
        await client._handshake(headers)
    except BaseException:
        client.abort()
        raise
    return client


def _proxy_for(uri: WebSocketURI) -> str | None:
    """The proxy the environment names for ``uri`` (``HTTPS_PROXY``, ``NO_PROXY``, ...), if any."""
    try:
        from websockets.proxy import get_proxy  # websockets 15 and later
    except ImportError:
        return None
    return get_proxy(uri)


async def _through_proxy(
    proxy_url: str, uri: WebSocketURI, tls: ssl_module.SSLContext | None, make: Callable[[], WebSocketClient]
) -> WebSocketClient:
    """Reach the host through an HTTP(S) proxy (``CONNECT``), as websockets' own client does."""
    from websockets.asyncio.client import connect_http_proxy
    from websockets.proxy import parse_proxy

    proxy = parse_proxy(proxy_url)
    if not proxy.scheme.startswith("http"):
        raise OSError(f"The proxy {proxy_url!r} is not an HTTP(S) proxy, the only kind a worker can use.")
    transport = await connect_http_proxy(proxy, uri, ssl=True if proxy.scheme == "https" else None)
    try:
        client = make()
        transport.set_protocol(client)
        if tls is not None:
            try:
                upgraded = await asyncio.get_running_loop().start_tls(
                    transport, client, tls, server_hostname=uri.host
                )
            except TypeError as exc:  # Python 3.10's asyncio cannot run TLS inside TLS
                raise OSError(
                    f"Cannot reach a wss:// host through the https:// proxy {proxy_url!r}: {exc}"
                ) from exc
            assert upgraded is not None
            transport = upgraded
        client.connection_made(transport)
    except BaseException:
        transport.abort()
        raise
    return client
