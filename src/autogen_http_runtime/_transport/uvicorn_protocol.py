"""The host's WebSocket protocol under uvicorn: a worker's frames go straight to the routing core.

Under plain ASGI each message a worker sends crosses uvicorn's queue, the ASGI ``receive``
chain and a task switch, with a read pause and resume around it, and each frame the host
writes crosses a writer task and the ASGI ``send`` chain. :class:`HostWebSocketProtocol` is
uvicorn's own sans-I/O WebSocket protocol with a shorter path for the worker route:

- The handshake still runs through ASGI, so authentication and admission are the service's
  endpoint as under any server. The scope carries :data:`DIRECT_FRAMES`, this protocol.
- Once the endpoint has accepted, it calls :meth:`HostWebSocketProtocol.attach`. From then
  on each message is routed from ``data_received``, and the session's outbox is written to
  the socket once per turn of the event loop: no task, queue or read pause per message.

``HttpAgentServer`` uses it; a service mounted in another app (or served by another
server) takes the ASGI path, which behaves the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request
from websockets.protocol import State

from .._host.session import WorkerSession
from .._protocol.batching import joined
from .client import write_pieces
from .frames import TextFrameReader, text_frame_header

__all__ = ["DIRECT_FRAMES", "Attach", "CatchUp", "Receive", "direct_protocol"]

#: The scope extension the protocol offers the worker endpoint: ``{"attach": Attach}``.
DIRECT_FRAMES = "autogen_http_runtime.direct_frames"

#: What the endpoint routes one message with: its text, or its bytes when they are ASCII
#: (``None`` for a binary message); the result is a worker now behind, to wait for before
#: reading more (see ``MessageRouter.handle_text``).
Receive = Callable[[str | bytes | None], WorkerSession | None]
#: Waits until a worker that fell behind has caught up (or drops it).
CatchUp = Callable[[WorkerSession], Awaitable[None]]
#: :meth:`HostWebSocketProtocol.attach`.
Attach = Callable[[WorkerSession, Receive, CatchUp], "asyncio.Future[str]"]

# What this module relies on in uvicorn's protocol, methods and attributes. A uvicorn whose
# protocol lacks any of them gets the ASGI path instead (direct_protocol() returns None).
_METHODS = ("handle_connect", "send_receive_event_to_app", "handle_parser_exception", "connection_lost")
_ATTRIBUTES = (
    "conn", "transport", "loop", "logger", "queue", "scope", "response", "frames", "curr_msg_data_type",
    "close_sent", "close_timer", "close_timeout", "read_paused", "writable", "disconnected",
)  # fmt: skip


@functools.cache
def direct_protocol() -> type[asyncio.Protocol] | None:
    """The protocol class for ``uvicorn.Config(ws=...)``, or ``None`` if this uvicorn's
    sans-I/O protocol is not the one this module was written against."""
    try:
        source = inspect.getsource(WebSocketsSansIOProtocol)
    except (OSError, TypeError):  # pragma: no cover - installed without its sources
        return None
    if not all(callable(getattr(WebSocketsSansIOProtocol, name, None)) for name in _METHODS):
        return None  # pragma: no cover
    if not all(re.search(rf"self\.{name}\b\s*[:=]", source) for name in _ATTRIBUTES):
        return None  # pragma: no cover
    return HostWebSocketProtocol


class HostWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus :meth:`attach` for the worker route."""

    _session: WorkerSession | None = None
    _receive: Receive | None = None
    _catch_up: CatchUp | None = None
    _ended: asyncio.Future[str] | None = None
    #: Why the connection ended, kept while messages read before it are held.
    _end_reason: str | None = None
    _flush_scheduled = False
    #: Messages read while waiting for a worker to catch up, routed once it has.
    _held: deque[str | bytes | None] | None = None
    _waiting: asyncio.Task[None] | None = None
    #: Reads whole text frames once attached; websockets reads the rest (see _frames.py).
    _frames: TextFrameReader | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            # The ASGI task is created but has not run: it sees the extension.
            self.scope["extensions"][DIRECT_FRAMES] = {"attach": self.attach}

    def attach(self, session: WorkerSession, receive: Receive, catch_up: CatchUp) -> asyncio.Future[str]:
        """Route this connection's messages with ``receive`` and write ``session.outbox`` from now on.

        Called by the endpoint once it has accepted the WebSocket; the endpoint reads no
        more ASGI messages. Returns a future of why the connection ended.
        """
        self._session, self._receive, self._catch_up = session, receive, catch_up
        self._frames = TextFrameReader(self.conn, masked=True)
        self._ended = self.loop.create_future()
        session.outbox.listen(self._schedule_flush)
        if self.read_paused:  # uvicorn pauses reading while the ASGI app has a message to take
            self.read_paused = False
            self.transport.resume_reading()
        # Whatever uvicorn queued for the ASGI app before this (a hello sent right after
        # the handshake, say) is routed first, in order. From now on uvicorn's "disconnect"
        # events (a close frame, a protocol error, a shutdown, the socket lost) end the
        # connection here at once, as they end the ASGI endpoint's loop.
        queued, self.queue = self.queue, _Disconnects(self)  # type: ignore[assignment]
        while not queued.empty():
            self.queue.put_nowait(queued.get_nowait())
        self._schedule_flush()
        return self._ended

    # -- reading ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._frames is None:
            super().data_received(data)
            return
        messages, rest = self._frames.read(data)
        for message in messages:
            if self.close_sent:
                break  # closing: as uvicorn does, read on only for the peer's close
            self._route_text(message)
        if rest:
            super().data_received(bytes(rest))  # a copy only after a held frame

    def send_receive_event_to_app(self) -> None:
        if self._receive is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # closing: as uvicorn does, read on only for the peer's close
        if self.curr_msg_data_type == "text":
            self._route_text(data)
        else:
            self._route(None)

    def _route_text(self, data: bytes | bytearray) -> None:
        try:
            # What workers send is ASCII (JSON with \u escapes): routed as it is, not decoded
            # (bytes() of bytes is the same object).
            text = bytes(data) if data.isascii() else data.decode()
        except UnicodeDecodeError:
            self.logger.warning("Invalid UTF-8 in a text message from a worker; closing it")
            self.conn.send_close(1007, "invalid UTF-8")
            self.handle_parser_exception()
            return
        self._route(text)

    def _route(self, text: str | bytes | None) -> None:
        if self._held is not None:
            self._held.append(text)
            return
        assert self._receive is not None
        behind = self._receive(text)
        if behind is not None:
            # Back-pressure: read nothing more from this worker until ``behind`` catches up.
            self._held = deque()
            self.read_paused = True  # and resumed by a close we start, as uvicorn does
            self.transport.pause_reading()
            self._waiting = self.loop.create_task(self._wait_for(behind))

    async def _wait_for(self, behind: WorkerSession) -> None:
        assert self._catch_up is not None and self._held is not None
        held = self._held
        try:
            while True:
                await self._catch_up(behind)
                while held:
                    assert self._receive is not None
                    if (next_behind := self._receive(held.popleft())) is not None:
                        behind = next_behind
                        break
                else:
                    break
        finally:
            self._held = None
            if self.read_paused and not self.disconnected:
                self.read_paused = False
                self.transport.resume_reading()
            if self._end_reason is not None:
                self._end(self._end_reason)  # what ended meanwhile, now that the held are routed

    # -- writing ----------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write what the session's outbox holds, as far as the socket takes it."""
        self._flush_scheduled = False
        session = self._session
        assert session is not None
        outbox = session.outbox
        if session.overflowed:
            outbox.clear()
            if not self.close_sent:
                # Dropped for not reading: the close frame goes out if the socket takes it,
                # but waiting for the worker's side of the handshake could take forever.
                self._close(session.close_code, session.close_reason)
                if self.close_timer is not None:
                    self.close_timer.cancel()
                self.close_timer = self.loop.call_later(1.0, self.transport.abort)
                self.close_sent = True
            return
        while not outbox.empty():
            if self.disconnected or self.close_sent or self.transport.is_closing():
                outbox.clear()
                return
            if not self.writable.is_set():
                return  # resume_writing() flushes the rest
            batch = outbox.take_batch(session.max_message_size, session.batching)
            if batch is None:
                self._close(session.close_code, session.close_reason)
                return
            if self.conn.state is not State.OPEN:
                outbox.clear()  # the peer is closing; its close ends the connection
                return
            data = joined(batch)
            if self.conn.extensions:  # compression: websockets frames it
                self.conn.send_text(data)
                self.transport.write(b"".join(self.conn.data_to_send()))
            else:  # the header alone: no copy of a large message to prefix it
                write_pieces(self.transport, (text_frame_header(len(data), masked=False), data))
            for one in batch:
                session.sent(one)

    def _close(self, code: int, reason: str) -> None:
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

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._session is not None:
            self._schedule_flush()

    # -- the end ----------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # queues a "disconnect": see _Disconnects
        if self._waiting is not None:
            self._waiting.cancel()  # nobody to read from: the held messages go with it

    def _end(self, reason: str) -> None:
        if self._held is not None:
            # Messages read before the end are routed first, as under ASGI: once the
            # worker it waits for has caught up (see _wait_for).
            self._end_reason = reason
            return
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(reason)


class _Disconnects:
    """Stands in for uvicorn's ASGI queue once a connection is attached: the "disconnect"
    events uvicorn puts there end the connection, as they end the ASGI endpoint's loop."""

    def __init__(self, protocol: HostWebSocketProtocol) -> None:
        self._protocol = protocol

    def put_nowait(self, message: Any) -> None:
        if message["type"] == "websocket.receive":
            self._protocol._route(message.get("text"))
        elif message["type"] == "websocket.disconnect":
            self._protocol._end(f"closed with code {message.get('code', 1000)}")

    def empty(self) -> bool:
        return True
