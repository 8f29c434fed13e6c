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
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import State

from ._batching import joined
from ._session import WorkerSession
from ._websocket import text_frame_header

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

# What this module relies on in uvicorn's protocol; another version without them gets the
# ASGI path instead (direct_protocol() returns None).
_NEEDED = (
    "handle_connect",
    "handle_close",
    "send_receive_event_to_app",
    "connection_lost",
    "resume_writing",
)


def direct_protocol() -> type[asyncio.Protocol] | None:
    """The protocol class for ``uvicorn.Config(ws=...)``, or ``None`` if this uvicorn lacks what it needs."""
    if not all(hasattr(WebSocketsSansIOProtocol, name) for name in _NEEDED):
        return None  # pragma: no cover
    return HostWebSocketProtocol


class HostWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus :meth:`attach` for the worker route."""

    _session: WorkerSession | None = None
    _receive: Receive | None = None
    _catch_up: CatchUp | None = None
    _ended: asyncio.Future[str] | None = None
    _end_reason = "connection lost"
    _flush_scheduled = False
    #: Messages read while waiting for a worker to catch up, routed once it has.
    _held: deque[str | bytes | None] | None = None
    _waiting: asyncio.Task[None] | None = None

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
        self._ended = self.loop.create_future()
        session.outbox.listen(self._schedule_flush)
        if self.read_paused:  # uvicorn pauses reading while the ASGI app has a message to take
            self.read_paused = False
            self.transport.resume_reading()
        # Whatever uvicorn queued for the ASGI app before this (a hello sent right after
        # the handshake, say) is routed first, in order.
        while not self.queue.empty():
            message: Any = self.queue.get_nowait()
            if message["type"] == "websocket.receive":
                self._route(message.get("text"))
            elif message["type"] == "websocket.disconnect":
                self._end(f"closed with code {message.get('code', 1000)}")
        if self.disconnected:
            self._end(self._end_reason)
        self._schedule_flush()
        return self._ended

    # -- reading ----------------------------------------------------------------------

    def send_receive_event_to_app(self) -> None:
        if self._receive is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # closing: as uvicorn does, read on only for the peer's close
        text: str | bytes | None = None
        if self.curr_msg_data_type == "text":
            try:
                # What workers send is ASCII (JSON with \u escapes): read as it is, no copy.
                text = data if data.isascii() else data.decode()
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
        while True:
            await self._catch_up(behind)
            while held:
                assert self._receive is not None
                if (next_behind := self._receive(held.popleft())) is not None:
                    behind = next_behind
                    break
            else:
                break
        self._held = None
        if self.read_paused and not self.disconnected:
            self.read_paused = False
            self.transport.resume_reading()

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
        while not outbox.empty():
            if self.disconnected or self.close_sent:
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
                self.transport.writelines((text_frame_header(len(data), masked=False), data))
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

    def handle_close(self, event: Frame) -> None:
        if self.conn.close_rcvd is not None:
            self._end_reason = f"closed with code {self.conn.close_rcvd.code}"
        super().handle_close(event)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._end(self._end_reason)

    def _end(self, reason: str) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(reason)
