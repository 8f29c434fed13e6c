"""Exceptions raised by autogen-http-runtime.

Everything this package raises on purpose derives from :class:`HttpRuntimeError`.
Where the in-process ``SingleThreadedAgentRuntime`` raises a built-in type for the
same situation, ours also derives from that type, so code written for either
runtime keeps working::

    HttpRuntimeError
    ├── HostConnectionError (ConnectionError)   not connected, connection lost, host stopping
    │   ├── AuthenticationError                  the host refused our credentials (HTTP 401/403)
    │   └── TLSError                             the TLS handshake failed (certificate not trusted, ...)
    ├── SerializationError (ValueError)          a message could not be serialized locally
    └── RpcError                                 a JSON-RPC error object received from the peer
        ├── ProtocolError                        -32700 .. -32603: a peer broke the wire protocol
        ├── AgentNotFoundError (LookupError)     -32001 no worker serves the agent type
        ├── WorkerDisconnectedError              -32002 the serving worker went away mid-call
        ├── RemoteAgentError                     -32003 the remote handler or factory raised
        ├── AgentTypeConflictError (ValueError)  -32004 the agent type is already registered
        ├── SubscriptionError (ValueError)       -32005 / -32006 subscription exists / missing
        ├── CallTimeoutError (TimeoutError)      -32007 the call's deadline passed
        ├── MessageTooLargeError                 -32008 a frame exceeds the size limit
        ├── CallCancelledError                   -32009 the call was cancelled
        ├── HostShuttingDownError                -32010 the host is draining and takes no new calls
        ├── TooManyCallsError                    -32011 too many calls in flight, or over the rate limit
        └── PermissionDeniedError (PermissionError) -32012 the caller's identity may not do this
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentNotFoundError",
    "AgentTypeConflictError",
    "AuthenticationError",
    "CallCancelledError",
    "CallTimeoutError",
    "HostConnectionError",
    "HostShuttingDownError",
    "HttpRuntimeError",
    "MessageTooLargeError",
    "PermissionDeniedError",
    "ProtocolError",
    "RemoteAgentError",
    "RpcError",
    "SerializationError",
    "SubscriptionError",
    "TLSError",
    "TooManyCallsError",
    "WorkerDisconnectedError",
    "error_from_wire",
]


class HttpRuntimeError(Exception):
    """Root of every exception this package raises on purpose."""


class HostConnectionError(HttpRuntimeError, ConnectionError):
    """The worker is not connected to its host, or the connection was lost.

    Pending calls fail with this error when the connection drops; calls made
    while disconnected fail with it at once.
    """


class AuthenticationError(HostConnectionError):
    """The host refused this worker's credentials: no token, a wrong one, or not allowed in.

    Raised by ``start()`` (and ends reconnecting: :meth:`ReconnectPolicy.is_retryable`
    says no), since trying again with the same credentials cannot succeed.

    Attributes:
        status: The HTTP status of the refused handshake (401 or 403), or ``None`` when
            the host closed the WebSocket with code 1008 instead.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TLSError(HostConnectionError):
    """The TLS handshake with the host failed: its certificate is not trusted (wrong CA,
    wrong host name, expired) or it asked for a client certificate this worker lacks."""


class SerializationError(HttpRuntimeError, ValueError):
    """A message or result could not be serialized: no serializer is registered for its type."""


class RpcError(HttpRuntimeError):
    """A JSON-RPC error object received from the host or another worker.

    Attributes:
        code: The JSON-RPC error code (see ``docs/protocol.md``).
        message: The error message, as sent by the peer.
        data: The error's ``data`` member, or ``None``.
    """

    code: int = -32603

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.code, self.data))


def _rebuild(cls: type[RpcError], message: str, code: int, data: Any) -> RpcError:
    return cls(message, code=code, data=data)


class ProtocolError(RpcError):
    """A peer sent something the wire protocol does not allow (JSON-RPC codes -32700 to -32603)."""


class AgentNotFoundError(RpcError, LookupError):
    """No connected worker serves the recipient's agent type."""

    code = -32001


class WorkerDisconnectedError(RpcError):
    """The worker serving the recipient disconnected before it answered."""

    code = -32002


class RemoteAgentError(RpcError):
    """The remote agent's handler (or its factory) raised an exception.

    Attributes:
        remote_type: The name of the exception type raised on the remote worker,
            for example ``"ValueError"``.
        remote_message: ``str()`` of the remote exception.
        remote_traceback: The remote traceback as text, when the worker sent one.
    """

    code = -32003

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        super().__init__(message, code=code, data=data)
        details = data if isinstance(data, dict) else {}
        self.remote_type: str = str(details.get("type", "Exception"))
        self.remote_message: str = str(details.get("message", message))
        traceback = details.get("traceback")
        self.remote_traceback: str | None = traceback if isinstance(traceback, str) else None

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.remote_message}"


class AgentTypeConflictError(RpcError, ValueError):
    """The agent type is already registered by another worker of this host."""

    code = -32004


class SubscriptionError(RpcError, ValueError):
    """A subscription with the same id (or the same match) already exists, or none has this id."""

    code = -32005


class CallTimeoutError(RpcError, TimeoutError):
    """The call did not complete before its deadline."""

    code = -32007


class MessageTooLargeError(RpcError):
    """A frame is larger than the limit of the side that would have to read it."""

    code = -32008


class CallCancelledError(RpcError):
    """The call was cancelled before it completed."""

    code = -32009


class HostShuttingDownError(RpcError):
    """The host is shutting down and no longer accepts new calls."""

    code = -32010


class TooManyCallsError(RpcError):
    """The calling worker already has as many calls in flight as the host allows, or its
    identity went over the host's rate limit; retry later."""

    code = -32011


class PermissionDeniedError(RpcError, PermissionError):
    """The host's access policy does not let this caller's identity do this.

    Registering an agent type, calling one, publishing to or subscribing to a topic type
    it has no rule for, or naming as sender an agent it does not serve.
    """

    code = -32012


_BY_CODE: dict[int, type[RpcError]] = {
    cls.code: cls
    for cls in (
        AgentNotFoundError,
        WorkerDisconnectedError,
        RemoteAgentError,
        AgentTypeConflictError,
        SubscriptionError,
        CallTimeoutError,
        MessageTooLargeError,
        CallCancelledError,
        HostShuttingDownError,
        TooManyCallsError,
        PermissionDeniedError,
    )
}
_BY_CODE[-32006] = SubscriptionError


def error_from_wire(code: int, message: str, data: Any = None) -> RpcError:
    """Build the exception that stands for a JSON-RPC error object received from a peer."""
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = ProtocolError if -32768 <= code <= -32600 else RpcError
    return cls(message, code=code, data=data)
