"""The worker WebSocket (``/v1/worker``): admission, then a transport for the worker's session.

Two transports carry a worker's messages, with the same behaviour:

- :class:`DirectTransport` under ``HttpAgentServer``: uvicorn's protocol hands each message
  over from ``data_received`` and the outbox is written once per turn of the event loop
  (``_transport/uvicorn_protocol.py``);
- :class:`AsgiTransport` anywhere else (a service mounted in another app or server): the
  endpoint reads ASGI messages, and a writer task sends the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from .._constants import CLOSE_GRACE
from .._host.core import RoutingCore
from .._host.security import Identity
from .._host.session import CLOSE_INTERNAL_ERROR, CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER, WorkerSession
from .._host.transport import Transport
from .._logging import Throttled
from .._protocol.batching import joined
from .._transport.uvicorn_protocol import DIRECT_FRAMES, DirectWebSocketProtocol
from .admission import Admission, peer_of
from .connections import CONNECTION, GuardedConnection
from .problems import Problem

#: Seconds the close frame (and what precedes it) gets to go out when a worker's session ends.
_FLUSH_ON_CLOSE = CLOSE_GRACE


class WorkerEndpoint:
    """The ASGI endpoint of the worker WebSocket for one routing core.

    Args:
        max_connections: Worker WebSockets kept open at once; ``None``: no limit.
        max_connections_per_identity: Worker WebSockets one identity keeps open at once;
            ``None``: no limit.
        hello_timeout: Seconds a new connection has to say hello.
        slow_consumer_timeout: Seconds a worker is held back for a worker it sends to that is behind.
    """

    def __init__(
        self,
        core: RoutingCore,
        admission: Admission,
        *,
        max_connections: int | None,
        max_connections_per_identity: int | None = None,
        hello_timeout: float,
        slow_consumer_timeout: float,
        logger: logging.Logger,
    ) -> None:
        self._core = core
        self._admission = admission
        self.max_connections = max_connections
        self.max_connections_per_identity = max_connections_per_identity
        self._hello_timeout = hello_timeout
        self._slow_consumer_timeout = slow_consumer_timeout
        self._log = logger
        # Anyone who reaches the port can be refused as often as they like: one WARNING a
        # minute for each kind of refusal, the rest at DEBUG.
        self._refusals = Throttled(logger)
        self._open = 0
        #: Connections open by identity name (only while a per-identity limit is set).
        self._open_by_identity: dict[str, int] = {}
        #: The endpoint task of each connection, for a shutdown to wait on.
        self.connections: set[asyncio.Task[Any]] = set()

    async def __call__(self, websocket: WebSocket) -> None:
        if self.max_connections is not None and self._open >= self.max_connections:
            self._refusals.warning(
                "Refused a worker: already %d connections (max_connections)", self._open, key=503
            )
            await refuse(
                websocket,
                Problem(
                    503,
                    "too-many-connections",
                    "Too many connections",
                    f"The host already serves {self.max_connections} worker connections (max_connections).",
                ),
            )
            return
        admitted = await self._admission.admit(websocket)
        if isinstance(admitted, Problem):
            self._refusals.warning(
                "Refused a worker from %s: %s", peer_of(websocket), admitted.detail, key=admitted.status
            )
            await refuse(websocket, admitted)
            return
        limit = self.max_connections_per_identity
        name = admitted.name
        if limit is not None and self._open_by_identity.get(name, 0) >= limit:
            self._refusals.warning(
                "Refused a worker of identity %r: it has %d connections (max_connections_per_identity)",
                name,
                limit,
                key=(429, name),
            )
            await refuse(
                websocket,
                Problem(
                    429,
                    "too-many-connections",
                    "Too many connections",
                    f"Identity '{name}' already has {limit} worker connections to this host "
                    "(max_connections_per_identity).",
                ),
            )
            return
        self._open += 1
        if limit is not None:
            self._open_by_identity[name] = self._open_by_identity.get(name, 0) + 1
        try:
            await self._serve(websocket, admitted)
        finally:
            self._open -= 1
            if limit is not None:
                left = self._open_by_identity[name] - 1
                if left:
                    self._open_by_identity[name] = left
                else:
                    del self._open_by_identity[name]

    async def _serve(self, websocket: WebSocket, identity: Identity) -> None:
        await websocket.accept()
        core = self._core
        if not core.accepting:
            # Accept first: a close before accepting reaches the client as a bare HTTP 403.
            await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason="host shutting down")
            return
        session = core.open_session(identity=identity)
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        extensions = websocket.scope.get("extensions", {})
        protocol = extensions.get(DIRECT_FRAMES, {}).get("protocol")
        transport: DirectTransport | AsgiTransport
        if isinstance(protocol, DirectWebSocketProtocol):
            transport = DirectTransport(core, session, protocol, task, **self._transport_settings())
        else:
            connection = extensions.get(CONNECTION, {}).get("connection")
            guarded = connection if isinstance(connection, GuardedConnection) else None
            transport = AsgiTransport(
                core, session, websocket, task, self._log, guarded, **self._transport_settings()
            )
        expiry = identity.expiry
        expires = (
            None
            if expiry is None
            else asyncio.get_running_loop().call_later(
                max(0.0, expiry - time.time()), core.cut_off, session, "credentials expired"
            )
        )
        reason = "connection closed"
        try:
            reason = await transport.run()
            if session.close_reason:  # the host closed it: its own code and reason say why
                reason = f"closed by the host with code {session.close_code}: {session.close_reason}"
        except (WebSocketDisconnect, RuntimeError) as exc:
            reason = f"connection lost: {exc!r}"
        except asyncio.CancelledError:
            if not session.cut_off:
                raise
            # The transport cancelled us (cut off); returning lets uvicorn drop the socket.
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:
                uncancel()
            reason = session.close_reason
            if session.overflowed:
                self._log.warning("Worker %s dropped: %s", session.worker_id, reason)
        finally:
            if expires is not None:
                expires.cancel()
            transport.close()
            core.close_session(session, reason)
            session.outbox.put_nowait(None)
            await transport.flushed(_FLUSH_ON_CLOSE)
            self.connections.discard(task)

    def _transport_settings(self) -> dict[str, float]:
        return {"slow_consumer_timeout": self._slow_consumer_timeout, "hello_timeout": self._hello_timeout}


class DirectTransport(Transport):
    """A worker's session on uvicorn's protocol, past ASGI (see ``_transport/uvicorn_protocol.py``)."""

    def __init__(
        self,
        core: RoutingCore,
        session: WorkerSession,
        protocol: DirectWebSocketProtocol,
        task: asyncio.Task[Any],
        *,
        slow_consumer_timeout: float,
        hello_timeout: float,
    ) -> None:
        super().__init__(
            core, session, slow_consumer_timeout=slow_consumer_timeout, hello_timeout=hello_timeout
        )
        self._ws = protocol
        self._task = task
        self._flush_scheduled = False
        session.unsent = protocol.transport.get_write_buffer_size

    async def run(self) -> str:
        """Attach to the connection and return why it ended."""
        self._ws.attach(self)
        self.wake()
        return await asyncio.shield(self.ended)

    def pause_reading(self) -> None:
        self._ws.pause_reading()

    def resume_reading(self) -> None:
        self._ws.resume_reading()

    def dropped(self) -> None:
        self._task.cancel()

    def wake(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    async def flushed(self, timeout: float) -> None:
        await asyncio.wait({self.ended}, timeout=timeout)

    def _flush(self) -> None:
        """Write what the session's outbox holds, as far as the socket takes it."""
        self._flush_scheduled = False
        session, ws = self.session, self._ws
        outbox = session.outbox
        if session.cut_off:
            outbox.clear()
            ws.close_and_abort(session.close_code, session.close_reason, after=_FLUSH_ON_CLOSE)
            return
        while not outbox.empty():
            if ws.closing:
                outbox.clear()
                return
            if not ws.can_write:
                return  # wake() flushes the rest once the socket takes data
            batch = outbox.take_batch(session.max_message_size, session.batching)
            if batch is None:
                ws.close(session.close_code, session.close_reason)
                return
            if not ws.open:
                outbox.clear()  # the peer is closing; its close ends the connection
                return
            ws.write_text(joined(batch))
            for one in batch:
                session.sent(one)


class AsgiTransport(Transport):
    """A worker's session over the ASGI WebSocket interface: a reader loop and a writer task."""

    def __init__(
        self,
        core: RoutingCore,
        session: WorkerSession,
        websocket: WebSocket,
        task: asyncio.Task[Any],
        logger: logging.Logger,
        connection: GuardedConnection | None,
        *,
        slow_consumer_timeout: float,
        hello_timeout: float,
    ) -> None:
        """``connection``: the socket's guard when ``HttpAgentServer`` serves it (it can cut the
        socket, and tell what the socket holds unsent); ``None`` under another server."""
        super().__init__(
            core, session, slow_consumer_timeout=slow_consumer_timeout, hello_timeout=hello_timeout
        )
        self._websocket = websocket
        self._task = task
        self._log = logger
        self._connection = connection
        self._writer: asyncio.Task[None] | None = None
        self._cancel_timer: asyncio.TimerHandle | None = None
        if connection is not None:
            session.unsent = connection.unsent

    async def run(self) -> str:
        """Route the worker's messages until the WebSocket ends; return why it ended."""
        self._writer = asyncio.create_task(self._write())
        while True:
            message = await self._websocket.receive()
            if message["type"] == "websocket.disconnect":
                return f"closed with code {message.get('code', 1000)}"
            self.receive(message.get("text"))
            # Not kept while we wait for the next: it may be max_message_size bytes of text.
            del message
            await self.readable()

    def pause_reading(self) -> None:
        pass  # the reader loop awaits readable() before it reads on

    def resume_reading(self) -> None:
        pass

    def dropped(self) -> None:
        # The writer sends the close frame if it is free to; cutting a peer off must not wait
        # for it to read, so a second later the socket is cut (under HttpAgentServer) and the
        # endpoint, whose writer may be stuck on a peer that reads nothing, cancelled.
        if self._connection is not None:
            self._connection.abort_after(_FLUSH_ON_CLOSE)
        if self._cancel_timer is None:
            self._cancel_timer = self._loop.call_later(_FLUSH_ON_CLOSE, self._task.cancel)

    def close(self) -> None:
        if self._cancel_timer is not None:
            self._cancel_timer.cancel()
        super().close()

    async def flushed(self, timeout: float) -> None:
        if self._writer is not None:
            _, still_writing = await asyncio.wait({self._writer}, timeout=timeout)
            if still_writing:
                self._writer.cancel()

    async def _write(self) -> None:
        session, websocket = self.session, self._websocket
        outbox = session.outbox
        try:
            while True:
                while outbox.empty():
                    await outbox.wait()
                if (batch := outbox.take_batch(session.max_message_size, session.batching)) is None:
                    break
                await websocket.send_text(joined(batch).decode("ascii"))
                for data in batch:
                    session.sent(data)
            if websocket.client_state is WebSocketState.CONNECTED:
                await websocket.close(code=session.close_code, reason=session.close_reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the peer is gone; the reader notices and cleans up
        except Exception:
            self._log.exception("Writing to worker %s failed; closing its connection", session.worker_id)
            with contextlib.suppress(Exception):
                await websocket.close(code=CLOSE_INTERNAL_ERROR, reason="host write error")


async def refuse(websocket: WebSocket, problem: Problem) -> None:
    """Refuse a WebSocket handshake with an HTTP status and a problem body where the server
    can send one (uvicorn can), else by closing it (1008: the client sees HTTP 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(problem.response())
    else:
        await websocket.close(code=CLOSE_POLICY_VIOLATION, reason=str(problem.detail)[:120])
