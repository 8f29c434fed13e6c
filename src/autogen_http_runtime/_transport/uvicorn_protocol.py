"""uvicorn's WebSocket protocol with a direct path: once attached, messages skip ASGI both ways.

Under plain ASGI each message a worker sends crosses uvicorn's queue, the ASGI ``receive``
chain and a task switch, with a read pause and resume around it, and each message the host
writes crosses a writer task and the ASGI ``send`` chain. :class:`DirectWebSocketProtocol`
is uvicorn's own sans-I/O WebSocket protocol with a shorter path:

- The handshake still runs through ASGI, so the app's endpoint authenticates and admits
  as under any server. The scope carries :data:`DIRECT_FRAMES`: ``{"protocol": the protocol}``.
- Once the endpoint has accepted, it calls :meth:`DirectWebSocketProtocol.attach` with a
  :class:`DirectPeer`. From then on each message goes to the peer from ``data_received``,
  and the peer writes with :meth:`~DirectWebSocketProtocol.write_text` (the frame header
  written by hand): no task, queue or read pause per message.

This module touches uvicorn's internals (its protocol's attributes, its ASGI queue); it is
used only when :func:`direct_protocol` finds the uvicorn it was written against and the
fast path is on (``_transport/fastpath.py``). Anything else takes the ASGI path, which
behaves the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import re
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request
from websockets.protocol import State

from .fastpath import uvicorn_direct_path_allowed
from .frames import FrameReader, frame_header, write_pieces

__all__ = ["DIRECT_FRAMES", "DirectPeer", "DirectWebSocketProtocol", "direct_protocol"]

#: The scope extension offered to the endpoint: ``{"protocol": DirectWebSocketProtocol}``.
DIRECT_FRAMES = "autogen_http_runtime.direct_frames"

# What this module relies on in uvicorn's protocol, methods and attributes. A uvicorn whose
# protocol lacks any of them gets the ASGI path instead (direct_protocol() returns None).
_METHODS = ("handle_connect", "send_receive_event_to_app", "handle_parser_exception", "connection_lost")
_ATTRIBUTES = (
    "conn", "transport", "loop", "logger", "queue", "scope", "response", "frames", "curr_msg_data_type",
    "close_sent", "close_timer", "close_timeout", "read_paused", "writable", "disconnected",
)  # fmt: skip


class DirectPeer(Protocol):
    """What an attached connection reports to."""

    def receive(self, received: str | bytes | None) -> None:
        """One message: its text (its bytes when ASCII), or ``None`` for a binary message.
        Attached with ``binary=True``: a binary message's bytes, or ``None`` for a text one."""

    def end(self, reason: str) -> None:
        """The connection ended (a close frame, a protocol error, a shutdown, the socket lost)."""

    def lost(self) -> None:
        """The socket is gone."""

    def wake(self) -> None:
        """The socket takes data again."""


@functools.cache
def direct_protocol() -> type[asyncio.Protocol] | None:
    """The protocol class for ``uvicorn.Config(ws=...)``, or ``None`` if the fast path is off
    or this uvicorn's sans-I/O protocol is not the one this module was written against."""
    if not uvicorn_direct_path_allowed():
        return None
    try:
        source = inspect.getsource(WebSocketsSansIOProtocol)
    except (OSError, TypeError):  # pragma: no cover - installed without its sources
        return None
    if not all(callable(getattr(WebSocketsSansIOProtocol, name, None)) for name in _METHODS):
        return None  # pragma: no cover
    if not all(re.search(rf"self\.{name}\b\s*[:=]", source) for name in _ATTRIBUTES):
        return None  # pragma: no cover
    return DirectWebSocketProtocol


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus :meth:`attach` for the direct path."""

    _peer: DirectPeer | None = None
    #: Reads whole text frames once attached; websockets reads the rest (see frames.py).
    _frames: FrameReader | None = None
    #: Attached for binary messages (a cluster's direct link), not text ones.
    _binary: bool = False

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            # The ASGI task is created but has not run: it sees the extension.
            self.scope["extensions"][DIRECT_FRAMES] = {"protocol": self}

    def attach(self, peer: DirectPeer, *, binary: bool = False) -> None:
        """Send this connection's messages to ``peer`` from now on (``binary``: it carries
        binary messages, and their bytes are what ``peer`` receives).

        Called by the endpoint once it has accepted the WebSocket; the endpoint reads no
        more ASGI messages.
        """
        self._peer = peer
        self._binary = binary
        self._frames = FrameReader(self.conn, masked=True, binary=binary)
        if self.read_paused:  # uvicorn pauses reading while the ASGI app has a message to take
            self.resume_reading()
        # Whatever uvicorn queued for the ASGI app before this (a hello sent right after
        # the handshake, say) goes first, in order. From now on uvicorn's "disconnect"
        # events (a close frame, a protocol error, a shutdown, the socket lost) end the
        # connection at once, as they end an ASGI endpoint's loop.
        queued, self.queue = self.queue, _Disconnects(peer, binary)  # type: ignore[assignment]
        while not queued.empty():
            self.queue.put_nowait(queued.get_nowait())

    # -- for the peer ---------------------------------------------------------------------

    def pause_reading(self) -> None:
        self.read_paused = True  # and resumed by a close we start, as uvicorn does
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.disconnected:
            self.read_paused = False
            self.transport.resume_reading()

    @property
    def closing(self) -> bool:
        """Gone, or closing: nothing more should be written."""
        return self.disconnected or self.close_sent or self.transport.is_closing()

    @property
    def can_write(self) -> bool:
        """Whether the socket takes more data now (``DirectPeer.wake`` says when it does again)."""
        return self.writable.is_set()

    @property
    def open(self) -> bool:
        return self.conn.state is State.OPEN

    def write_text(self, data: bytes) -> None:
        """Write one text message (``data`` is UTF-8)."""
        if self.conn.extensions:  # compression: websockets frames it
            self.conn.send_text(data)
            self.transport.write(b"".join(self.conn.data_to_send()))
        else:  # the header alone: no copy of a large message to prefix it
            write_pieces(self.transport, (frame_header(len(data), masked=False), data))

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake, as uvicorn does for an ASGI ``websocket.close``."""
        if self.transport.is_closing():
            return
        with contextlib.suppress(InvalidState):
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    def close_and_abort(self, code: int, reason: str, after: float) -> None:
        """Send a close frame if the socket takes it, and drop the socket ``after`` seconds
        later whatever the peer does: for a peer that does not read, waiting for its side
        of the closing handshake could take forever."""
        if self.close_sent:
            return
        self.close(code, reason)
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(after, self.transport.abort)
        self.close_sent = True

    # -- reading ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._frames is None:
            super().data_received(data)
            return
        messages, rest = self._frames.read(data)
        for message in messages:
            if self.close_sent:
                break  # closing: as uvicorn does, read on only for the peer's close
            if self._binary:
                assert self._peer is not None
                self._peer.receive(bytes(message))
            else:
                self._receive_text(message)
        if rest:
            super().data_received(bytes(rest))  # a copy only after a held frame

    def send_receive_event_to_app(self) -> None:
        if self._peer is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # closing: as uvicorn does, read on only for the peer's close
        if self._binary:
            self._peer.receive(None if self.curr_msg_data_type == "text" else bytes(data))
        elif self.curr_msg_data_type == "text":
            self._receive_text(data)
        else:
            self._peer.receive(None)

    def _receive_text(self, data: bytes | bytearray) -> None:
        assert self._peer is not None
        try:
            # What workers send is ASCII (JSON with \u escapes): routed as it is, not decoded
            # (bytes() of bytes is the same object).
            text = bytes(data) if data.isascii() else data.decode()
        except UnicodeDecodeError:
            self.logger.warning("Invalid UTF-8 in a text message from a worker; closing it")
            self.conn.send_close(1007, "invalid UTF-8")
            self.handle_parser_exception()
            return
        self._peer.receive(text)

    # -- writing and the end ------------------------------------------------------------

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._peer is not None:
            self._peer.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # queues a "disconnect": see _Disconnects
        if self._peer is not None:
            self._peer.lost()


class _Disconnects:
    """Stands in for uvicorn's ASGI queue once a connection is attached: the "disconnect"
    events uvicorn puts there end the connection, as they end the ASGI endpoint's loop."""

    def __init__(self, peer: DirectPeer, binary: bool) -> None:
        self._peer = peer
        self._binary = binary

    def put_nowait(self, message: Any) -> None:
        if message["type"] == "websocket.receive":
            self._peer.receive(message.get("bytes" if self._binary else "text"))
        elif message["type"] == "websocket.disconnect":
            self._peer.end(f"closed with code {message.get('code', 1000)}")

    def empty(self) -> bool:
        return True
