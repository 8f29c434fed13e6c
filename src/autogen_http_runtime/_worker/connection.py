"""One WebSocket between a worker and its host: handshake, send/receive loops, calls in flight."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import websockets

from .._constants import PROTOCOL_VERSION
from .._exceptions import (
    CallTimeoutError,
    ErrorCode,
    HostConnectionError,
    MessageTooLargeError,
    error_from_wire,
)
from .._protocol import wire
from .._protocol.address import HostEndpoint
from .._protocol.batching import FLUSH_FRAMES, MAX_BATCH_BYTES, YIELD_AFTER_WRITES, joined, take_batch
from .._protocol.wire import JsonObject, MessageError, Method, RequestId
from .._transport import client as _websocket
from .dialing import ConnectionOptions, connect_failure


@dataclass(frozen=True)
class ConnectionHandlers:
    """What a connection does with what the host sends; each gets the connection first.

    Called synchronously from the read loop: they must not block.
    """

    request: Callable[[HostConnection, wire.Request], None]
    cancel: Callable[[HostConnection, RequestId], None]
    event: Callable[[HostConnection, wire.Event], None]
    closed: Callable[[HostConnection, str], None]


class HostConnection:
    """One open WebSocket to the host, after a successful ``hello``. Use :meth:`open`.

    Frames sent during one turn of the event loop go out together, as one batch, at the end
    of it (or as soon as ``FLUSH_FRAMES`` of them wait); frames from the host are handled as
    soon as they arrive, in ``data_received``.
    """

    def __init__(
        self,
        options: ConnectionOptions,
        endpoint: HostEndpoint,
        handlers: ConnectionHandlers,
        logger: logging.Logger,
    ) -> None:
        self._ws: _websocket.WebSocketClient | None = None
        #: The host this connection reached.
        self.endpoint = endpoint
        self.max_message_size = options.max_message_size
        self.worker_id = ""
        self.replicas = False
        self._handlers = handlers
        self._log = logger
        self._ids = itertools.count(1)
        self._pending: dict[RequestId, asyncio.Future[Any]] = {}
        #: Frames waiting for the end of this turn of the event loop, and their size.
        self._outgoing: deque[bytes | None] = deque()
        self._outgoing_bytes = 0
        self._flush_scheduled = False
        self._early_writes = 0
        self._loop = asyncio.get_running_loop()
        self._closed_reason: str | None = None

    @classmethod
    async def open(
        cls,
        options: ConnectionOptions,
        endpoint: HostEndpoint,
        handlers: ConnectionHandlers,
        logger: logging.Logger,
    ) -> HostConnection:
        """Connect to the host at ``endpoint`` (one of ``options.endpoints``), say hello, and
        return the live connection.

        Raises:
            HostConnectionError: The host cannot be reached, refused the WebSocket, or
                did not answer ``hello`` within ``connect_timeout`` seconds.
            RpcError: The host refused ``hello`` (e.g. an unsupported protocol version).
        """
        url = endpoint.ws_url
        conn = cls(options, endpoint, handlers, logger)
        try:
            conn._ws = await asyncio.wait_for(
                _websocket.connect(
                    url,
                    conn._received,
                    conn._lost,
                    headers=options.headers,
                    ssl=options.ssl,
                    max_size=options.max_message_size,
                    compression=options.compression,
                    ping_interval=options.ping_interval,
                    ping_timeout=options.ping_timeout,
                    write_buffer_limit=options.write_buffer_limit,
                ),
                timeout=options.connect_timeout,
            )
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise await connect_failure(url, exc, options.connect_timeout) from exc
        if conn._closed_reason is not None:
            raise HostConnectionError(f"The connection to the host was lost: {conn._closed_reason}.")
        try:
            hello = await conn.call(
                Method.HELLO,
                {
                    "protocol": PROTOCOL_VERSION,
                    "name": options.name,
                    "instance": options.instance_id,
                    "max_message_size": options.max_message_size,
                    "batch": True,
                    "acks": True,
                },
                timeout=options.connect_timeout,
            )
        except BaseException:
            await conn.close()
            raise
        conn.worker_id = str(hello.get("worker_id", "")) if isinstance(hello, dict) else ""
        # Whether the host lets several workers serve one type: then even an agent of a type
        # served here may live on another worker, and is reached through the host.
        conn.replicas = isinstance(hello, dict) and hello.get("replicas") is True
        host_limit = hello.get("max_message_size") if isinstance(hello, dict) else None
        if isinstance(host_limit, int) and host_limit > 0:
            conn.max_message_size = min(options.max_message_size, host_limit)
        return conn

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this connection runs on (asking asyncio for it costs a system call
        on Python 3.11: it checks the process id)."""
        return self._loop

    # -- sending ----------------------------------------------------------------------

    def _send(self, frame: JsonObject) -> None:
        if self._closed_reason is not None:
            raise HostConnectionError(f"Not connected to the host: {self._closed_reason}.")
        text = wire.encode_bytes(frame)
        size = len(text)
        if size > self.max_message_size:
            raise MessageTooLargeError(
                f"The message is {size} bytes on the wire; the limit is {self.max_message_size} bytes "
                "(max_message_size on the worker and the host).",
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )
        self._outgoing.append(text)
        self._outgoing_bytes += size
        if self._outgoing_bytes >= MAX_BATCH_BYTES or len(self._outgoing) >= FLUSH_FRAMES:
            # Out now, for the host to work on while we make more (see FLUSH_FRAMES); a sender
            # that never yields to the loop then waits in drain() (see YIELD_AFTER_WRITES).
            self._write_out()
            self._early_writes += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """At the end of a turn of the loop: write what is left."""
        self._flush_scheduled = False
        self._early_writes = 0
        self._write_out()

    def _write_out(self) -> None:
        """Write the frames sent so far, in batches the host reads (docs/protocol.md, "Batches")."""
        frames, self._outgoing, self._outgoing_bytes = self._outgoing, deque(), 0
        if self._ws is None or self._closed_reason is not None:
            return
        try:
            while frames and (batch := take_batch(frames, self.max_message_size)) is not None:
                self._ws.send_text(joined(batch))
        except websockets.exceptions.InvalidState:
            pass  # closing: the connection's end is reported by _lost()
        except Exception:
            self._log.exception("Writing to the host failed")
            self._ws.abort()

    async def drain(self, timeout: float | None = None) -> None:
        """Wait while more than ``write_buffer_limit`` bytes wait in the socket's buffer:
        back-pressure for senders.

        Raises:
            HostConnectionError: The connection closed meanwhile.
            asyncio.TimeoutError: The buffer was still full after ``timeout`` seconds.
        """
        if self._early_writes >= YIELD_AFTER_WRITES:
            await asyncio.sleep(0)  # let the loop run: this sender has not waited for a while
        if self._ws is not None:
            await self._ws.drain(timeout)
        if self._closed_reason is not None:
            raise HostConnectionError(f"Not connected to the host: {self._closed_reason}.")

    def start_call(self, method: str, params: JsonObject) -> tuple[RequestId, asyncio.Future[Any]]:
        """Send a request and return its id and the future of its result."""
        request_id = next(self._ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._send(wire.request(request_id, method, params))
        self._pending[request_id] = future
        return request_id, future

    async def call(self, method: str, params: JsonObject, *, timeout: float | None = None) -> Any:
        """Send a request and wait for its result.

        Cancelling the caller (or the timeout) sends a ``cancel`` notification for the
        call, so the host and the serving worker stop working on it.

        Raises:
            RpcError: The peer answered with an error (the subclass says which).
            CallTimeoutError: No answer within ``timeout`` seconds.
            HostConnectionError: The connection closed before the answer came.
        """
        request_id, future = self.start_call(method, params)
        return await self.wait(method, request_id, future, timeout=timeout)

    async def wait(
        self, method: str, request_id: RequestId, future: asyncio.Future[Any], *, timeout: float | None
    ) -> Any:
        """Wait for the answer to a call made with :meth:`start_call`; see :meth:`call`."""
        try:
            if timeout is None:
                return await future
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            self.abandon(request_id)
            raise CallTimeoutError(
                f"'{method}' got no answer within {timeout} seconds.", code=ErrorCode.DEADLINE_EXCEEDED
            ) from None
        except asyncio.CancelledError:
            self.abandon(request_id)
            raise

    def abandon(self, request_id: RequestId) -> None:
        """Forget a call and tell the host to cancel it."""
        future = self._pending.pop(request_id, None)
        if future is not None:
            future.cancel()
            if self._closed_reason is None:
                self._send(wire.notification(Method.CANCEL, {"id": request_id}))

    def send_result(self, request_id: RequestId, value: Any) -> None:
        self._send(wire.result(request_id, value))

    def send_error(self, request_id: RequestId, code: int, message: str, data: Any = None) -> None:
        self._send(wire.error(request_id, code, message, data))

    def send_event(self, event: JsonObject) -> None:
        self._send(event)

    def notify(self, method: str, params: JsonObject) -> None:
        self._send(wire.notification(method, params))

    # -- receiving --------------------------------------------------------------------

    def _received(self, data: bytes | bytearray, text: bool) -> None:
        if not text:
            self._log.warning("Ignored a binary frame from the host")
            return
        for frame in wire.decode_batch(data):
            try:
                self._dispatch(frame)
            except Exception:
                # One frame we failed on must not cost the connection and every call on it.
                self._log.exception("Failed to handle a frame from the host")

    def _lost(self, reason: str) -> None:
        if self._ws is not None:
            self._shut(reason)
        else:
            # Still connecting: a failed handshake is reported by open(). The WebSocket may
            # also have opened and closed (a host that accepts and closes at once, 1013)
            # before connect() returned: keep the reason, for open() to fail with.
            self._closed_reason = reason

    def _dispatch(self, frame: wire.Message | MessageError) -> None:
        if isinstance(frame, MessageError):
            self._log.warning("Bad frame from the host: %s", frame.message)
        elif isinstance(frame, wire.Response):
            future = self._pending.pop(frame.id, None)
            if future is not None and not future.done():
                future.set_result(frame.result)
        elif isinstance(frame, wire.ErrorResponse):
            future = self._pending.pop(frame.id, None) if frame.id is not None else None
            if future is not None and not future.done():
                future.set_exception(error_from_wire(frame.code, frame.message, frame.data))
            elif future is None:
                self._log.warning("The host reported error %d: %s", frame.code, frame.message)
        elif isinstance(frame, wire.Request):
            self._handlers.request(self, frame)
        elif isinstance(frame, wire.Notification):
            request_id = frame.params.get("id")
            if frame.method == Method.CANCEL and isinstance(request_id, (int, str)):
                self._handlers.cancel(self, request_id)
        else:
            self._handlers.event(self, frame)

    def _shut(self, reason: str) -> None:
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        self._outgoing, self._outgoing_bytes = deque(), 0
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(HostConnectionError(f"The connection to the host was lost: {reason}."))
        self._handlers.closed(self, reason)

    async def close(self, code: int = 1000, reason: str = "worker stopping") -> None:
        """Fail pending calls and close the WebSocket with ``code``. Idempotent."""
        if self._ws is not None and self._closed_reason is None:
            self._write_out()  # what was sent before closing still goes out first
        self._shut(f"closed by this worker ({reason})")
        if self._ws is not None:
            await self._ws.close(code, reason)
