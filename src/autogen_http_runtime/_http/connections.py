"""Every connection ``HttpAgentServer`` accepts, guarded against peers that hold it without using it.

uvicorn bounds none of these, and a peer can hold each for as long as it likes:

- **The time to a request.** uvicorn arms no timer between accepting a connection and a
  complete request, so sockets that send half a request, or nothing, keep their descriptor
  for ever. Here a connection must complete each request's headers, and send each part of
  a body, within ``request_timeout`` seconds, or it is cut.
- **A close that waits for a flush.** asyncio's ``transport.close()`` writes out what is
  buffered first, and a peer that reads nothing never lets it: uvicorn ends a WebSocket
  whose keepalive timed out, or whose endpoint returned, that way, and the socket and its
  buffer stay. Here a WebSocket closed with data unsent is cut ``close_timeout`` seconds
  later (the host has given up on that peer by then).
- **Descriptors.** Once the process runs out of them, asyncio's accept loop fails and logs
  in a tight loop, and nobody gets in. Here connections stop at ``RLIMIT_NOFILE`` less a
  reserve: a new connection past it displaces the oldest that has not sent a request yet,
  or is cut itself.

:class:`GuardedConnection` stands between asyncio's transport and uvicorn's protocol for
one connection, through uvicorn's public seams only: the protocol class given to
``uvicorn.Config(http=...)`` (constructed as uvicorn constructs its own), a transport that
forwards to asyncio's, and the ASGI ``state`` uvicorn copies into every scope of the
connection, which :class:`GuardedApp` turns into the scope extension :data:`CONNECTION`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, cast

from .._logging import Throttled

__all__ = [
    "CONNECTION",
    "ConnectionLimits",
    "GuardedApp",
    "GuardedConnection",
    "descriptor_budget",
    "guarded_protocol",
]

#: The scope extension ``GuardedApp`` adds: ``{"connection": GuardedConnection}``.
CONNECTION: Final = "autogen_http_runtime.connection"
#: Where a connection leaves itself in the ASGI ``state`` of its scopes, for ``GuardedApp``.
_STATE_KEY: Final = "autogen_http_runtime.connection"
#: Descriptors kept back from connections: log files, the listening socket, outgoing connections.
_RESERVE_FRACTION, _RESERVE_MIN, _RESERVE_MAX = 8, 16, 256

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def descriptor_budget() -> int | None:
    """Connections this process may hold: its ``RLIMIT_NOFILE`` less a reserve; ``None`` if unlimited."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft - min(_RESERVE_MAX, max(_RESERVE_MIN, soft // _RESERVE_FRACTION)))


class ConnectionLimits:
    """What the connections of one server share: their limits, and who is waiting for a request.

    Args:
        request_timeout: Seconds a connection has to complete a request's headers (or each
            part of its body) before it is cut.
        close_timeout: Seconds a WebSocket closed with data unsent gets before it is cut.
        max_open: Connections held at once (see :func:`descriptor_budget`); ``None``: no limit.
    """

    def __init__(
        self, *, request_timeout: float, close_timeout: float, max_open: int | None, logger: logging.Logger
    ) -> None:
        self.request_timeout = request_timeout
        self.close_timeout = close_timeout
        self.max_open = max_open
        self.open = 0
        #: Connections that have not started a request yet, oldest first (a dict keeps order).
        self.waiting: dict[GuardedConnection, None] = {}
        self.log = Throttled(logger)

    def admit(self, connection: GuardedConnection) -> bool:
        """Count a new connection in; ``False`` if it must be cut (no room, nobody to displace)."""
        self.open += 1
        if self.max_open is None or self.open <= self.max_open:
            return True
        displaced = next(iter(self.waiting), None)
        self.log.warning(
            "Out of descriptors: %d connections hold all this process may use (raise its "
            "RLIMIT_NOFILE, see docs/operations.md); cut %s",
            self.open - 1,
            "the new one from " + connection.peer
            if displaced is None
            else f"the oldest that has sent no request, from {displaced.peer}",
            key="full",
        )
        if displaced is None:
            return False
        displaced.cut()
        return True


class GuardedConnection(asyncio.Protocol):
    """One connection: uvicorn's protocol inside, asyncio's transport outside, and the timers.

    Use a subclass made by :func:`guarded_protocol`; uvicorn constructs it as its own
    protocol, with the same keywords.
    """

    inner_class: type[asyncio.Protocol]
    limits: ConnectionLimits

    def __init__(self, **settings: Any) -> None:
        self._limits = self.limits
        # uvicorn copies this into every scope of the connection: how GuardedApp finds us.
        settings["app_state"] = {**(settings.get("app_state") or {}), _STATE_KEY: self}
        self._inner: asyncio.Protocol = self.inner_class(**settings)
        self._transport: asyncio.Transport | None = None
        self._outer: _GuardedTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._cut_timer: asyncio.TimerHandle | None = None
        self._requests = 0
        #: Bytes came in since the last request started: a request is under way.
        self._partial = False
        self._upgraded = False
        self._lost = False
        self.peer = "an unknown peer"

    # -- asyncio's side ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses, so no isinstance).
        transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, (tuple, list)) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        if not self._limits.admit(self):
            self._lost = True  # counted out again by connection_lost, which abort() brings
            transport.abort()
            return
        self._limits.waiting[self] = None
        self._arm()
        self._outer = _GuardedTransport(transport, self)
        self._inner.connection_made(self._outer)

    def data_received(self, data: bytes) -> None:
        if not self._requests:
            self._partial = True
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._disarm()
        if self._cut_timer is not None:
            self._cut_timer.cancel()
            self._cut_timer = None
        self._limits.waiting.pop(self, None)
        self._limits.open -= 1
        if self._outer is not None:  # uvicorn's protocol never saw a connection it was not given
            self._inner.connection_lost(exc)

    # -- what the app and the endpoint see -----------------------------------------------------

    def request_started(self) -> None:
        """The app took a request (its headers are complete): no timer while it runs."""
        self._requests += 1
        self._partial = False
        self._limits.waiting.pop(self, None)
        self._disarm()

    def request_finished(self) -> None:
        """The app is done with a request: the next must be complete within the timeout too."""
        self._requests -= 1
        if not self._requests and not self._upgraded:
            self._arm()

    def expect_body(self) -> None:
        """The app waits for more of a request's body: it must come within the timeout."""
        self._arm()

    def got_body(self) -> None:
        self._disarm()

    def unsent(self) -> int:
        """Bytes written to the socket that the peer has not taken yet (0 once it is closing:
        asyncio's TLS transport cannot tell then)."""
        transport = self._transport
        if transport is None or self._lost or transport.is_closing():
            return 0
        return transport.get_write_buffer_size()

    def abort_after(self, seconds: float) -> None:
        """Cut the socket ``seconds`` from now, unless it is gone by then."""
        if self._cut_timer is None and not self._lost:
            self._cut_timer = self._loop.call_later(seconds, self._abort)

    def cut(self) -> None:
        """Cut the socket now."""
        self._abort()

    # -- the transport's side -------------------------------------------------------------------

    def upgraded(self, protocol: asyncio.BaseProtocol) -> None:
        """uvicorn switched the connection to its WebSocket protocol."""
        self._inner = cast(asyncio.Protocol, protocol)
        self._upgraded = True

    def inner(self) -> asyncio.Protocol:
        return self._inner

    def closing(self, unsent: int) -> None:
        """uvicorn closed the transport with ``unsent`` bytes not taken by the peer yet: a
        WebSocket that has any is cut after a while."""
        if self._upgraded and unsent:
            self.abort_after(self._limits.close_timeout)

    # -- timers ---------------------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        if not self._lost:
            self._timer = self._loop.call_later(self._limits.request_timeout, self._overdue)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _overdue(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or self._lost:
            return
        if self._requests and not self._partial:  # a request body overdue
            what = "part of a request body"
        elif self._partial or self in self._limits.waiting:
            what = "a complete request"
        else:  # idle between requests, as keep-alive allows: an orderly close
            transport.close()
            return
        self._limits.log.warning(
            "Cut the connection from %s: no %s within %g s (hello_timeout)",
            self.peer,
            what,
            self._limits.request_timeout,
            key="overdue",
        )
        self._abort()

    def _abort(self) -> None:
        self._cut_timer = None
        self._limits.waiting.pop(self, None)  # not to be displaced twice before it is gone
        if self._transport is not None and not self._lost:
            self._transport.abort()


class _GuardedTransport(asyncio.Transport):
    """asyncio's transport as uvicorn's protocol sees it: the same, but for ``close()``
    (see :meth:`GuardedConnection.closing`) and the protocol switch of a WebSocket upgrade."""

    def __init__(self, transport: asyncio.Transport, connection: GuardedConnection) -> None:
        super().__init__()
        self._transport = transport
        self._connection = connection

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        unsent = self._connection.unsent()
        self._transport.close()
        self._connection.closing(unsent)

    def abort(self) -> None:
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._connection.upgraded(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._connection.inner()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()


def guarded_protocol(inner: type[asyncio.Protocol], limits: ConnectionLimits) -> type[GuardedConnection]:
    """The protocol class for ``uvicorn.Config(http=...)``: uvicorn's ``inner``, guarded by ``limits``."""
    return type("GuardedConnection", (GuardedConnection,), {"inner_class": inner, "limits": limits})


class GuardedApp:
    """The ASGI app in front of the server's own: tells each connection when a request runs,
    and offers it to the app as the scope extension :data:`CONNECTION`."""

    def __init__(self, app: AsgiApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        connection = state.pop(_STATE_KEY, None) if isinstance(state, dict) else None
        if not isinstance(connection, GuardedConnection) or scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        scope.setdefault("extensions", {})[CONNECTION] = {"connection": connection}
        if scope["type"] == "http":
            receive = _timed_body(receive, connection)
        connection.request_started()
        try:
            await self._app(scope, receive, send)
        finally:
            connection.request_finished()


def _timed_body(receive: Receive, connection: GuardedConnection) -> Receive:
    """``receive``, with each part of the request body due within the connection's timeout."""
    body_done = False

    async def timed() -> MutableMapping[str, Any]:
        nonlocal body_done
        if body_done:
            return await receive()  # after the body: only the disconnect, whenever it comes
        connection.expect_body()
        try:
            message = await receive()
        finally:
            connection.got_body()
        if message.get("type") != "http.request" or not message.get("more_body", False):
            body_done = True
        return message

    return timed
