"""Exceptions raised by autogen-http-runtime.

Everything this package raises on purpose derives from :class:`HttpRuntimeError`.
Where the in-process ``SingleThreadedAgentRuntime`` raises a built-in type for the
same situation, ours also derives from that type, so code written for either
runtime keeps working::

    HttpRuntimeError
    ├── HostConnectionError (ConnectionError)   not connected, connection lost, host stopping
    │   ├── AuthenticationError                  the host refused our credentials (HTTP 401/403)
    │   └── TLSError                             TLS does not work out (certificate not trusted, ...)
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

from enum import IntEnum
from typing import Any, Final, NamedTuple

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


class ErrorCode(IntEnum):
    """JSON-RPC error codes: the standard five, then ours (-32001 to -32012).

    This is the one place each code is defined: its exception below names it, and
    :data:`HTTP_MEANINGS` gives what the HTTP API answers when a request fails with it.
    """

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    AGENT_NOT_FOUND = -32001
    WORKER_DISCONNECTED = -32002
    REMOTE_ERROR = -32003
    AGENT_TYPE_CONFLICT = -32004
    SUBSCRIPTION_EXISTS = -32005
    SUBSCRIPTION_NOT_FOUND = -32006
    DEADLINE_EXCEEDED = -32007
    MESSAGE_TOO_LARGE = -32008
    CANCELLED = -32009
    SHUTTING_DOWN = -32010
    TOO_MANY_CALLS = -32011
    FORBIDDEN = -32012
    CLUSTER_UNAVAILABLE = -32013


class HttpMeaning(NamedTuple):
    """An error code as an HTTP answer: its status and its RFC 9457 problem type and title."""

    status: int
    kind: str
    title: str


HTTP_MEANINGS: Final[dict[ErrorCode, HttpMeaning]] = {
    ErrorCode.PARSE_ERROR: HttpMeaning(400, "parse-error", "Parse error"),
    ErrorCode.INVALID_REQUEST: HttpMeaning(400, "invalid-request", "Invalid request"),
    ErrorCode.METHOD_NOT_FOUND: HttpMeaning(404, "method-not-found", "Method not found"),
    ErrorCode.INVALID_PARAMS: HttpMeaning(400, "invalid-params", "Invalid params"),
    ErrorCode.INTERNAL_ERROR: HttpMeaning(500, "internal", "Internal error"),
    ErrorCode.AGENT_NOT_FOUND: HttpMeaning(404, "agent-not-found", "Agent not found"),
    ErrorCode.WORKER_DISCONNECTED: HttpMeaning(502, "worker-disconnected", "Worker disconnected"),
    ErrorCode.REMOTE_ERROR: HttpMeaning(502, "remote-error", "The agent failed"),
    ErrorCode.AGENT_TYPE_CONFLICT: HttpMeaning(409, "agent-type-conflict", "Agent type taken"),
    ErrorCode.SUBSCRIPTION_EXISTS: HttpMeaning(409, "subscription-exists", "Subscription exists"),
    ErrorCode.SUBSCRIPTION_NOT_FOUND: HttpMeaning(404, "subscription-not-found", "No such subscription"),
    ErrorCode.DEADLINE_EXCEEDED: HttpMeaning(504, "deadline-exceeded", "Deadline exceeded"),
    ErrorCode.MESSAGE_TOO_LARGE: HttpMeaning(413, "too-large", "Too large"),
    ErrorCode.CANCELLED: HttpMeaning(409, "cancelled", "Cancelled"),
    ErrorCode.SHUTTING_DOWN: HttpMeaning(503, "shutting-down", "Shutting down"),
    ErrorCode.TOO_MANY_CALLS: HttpMeaning(429, "rate-limited", "Too many requests"),
    ErrorCode.FORBIDDEN: HttpMeaning(403, "forbidden", "Forbidden"),
    ErrorCode.CLUSTER_UNAVAILABLE: HttpMeaning(503, "cluster-unavailable", "Cluster unavailable"),
}


def error_code_name(code: int) -> str:
    """``AGENT_NOT_FOUND`` for -32001, and so on; ``OTHER`` for a code the protocol does not define."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return "OTHER"


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
    """TLS does not work out with the host: its certificate is not trusted (wrong CA, wrong
    host name, expired), it asked for a client certificate this worker lacks, or it speaks
    TLS at a plain ``http://`` (or ``host:port``) address."""


class ClusterJoinError(HttpRuntimeError, RuntimeError):
    """A host cannot join its cluster: Redis cannot be reached, or a setting every host of the
    cluster must share (``replicas``, ``max_message_size``, the access policy, the secret)
    differs from the running hosts' (the message names it)."""


class SerializationError(HttpRuntimeError, ValueError):
    """A message or result could not be serialized: no serializer is registered for its type."""


class RpcError(HttpRuntimeError):
    """A JSON-RPC error object received from the host or another worker.

    Attributes:
        code: The JSON-RPC error code (see ``docs/protocol.md``).
        message: The error message, as sent by the peer.
        data: The error's ``data`` member, or ``None``.
    """

    code: int = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = int(self.code if code is None else code)  # a plain int, whatever the class says
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.code, self.data))


def _rebuild(cls: type[RpcError], message: str, code: int, data: Any) -> RpcError:
    return cls(message, code=code, data=data)


class ProtocolError(RpcError):
    """A peer sent something the wire protocol does not allow (JSON-RPC codes -32700 to -32603)."""


class AgentNotFoundError(RpcError, LookupError):
    """No connected worker serves the recipient's agent type."""

    code = ErrorCode.AGENT_NOT_FOUND


class WorkerDisconnectedError(RpcError):
    """The worker serving the recipient disconnected before it answered."""

    code = ErrorCode.WORKER_DISCONNECTED


class RemoteAgentError(RpcError):
    """The remote agent's handler (or its factory) raised an exception.

    Attributes:
        remote_type: The name of the exception type raised on the remote worker,
            for example ``"ValueError"``.
        remote_message: ``str()`` of the remote exception.
        remote_traceback: The remote traceback as text, when the worker sent one.
    """

    code = ErrorCode.REMOTE_ERROR

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

    code = ErrorCode.AGENT_TYPE_CONFLICT


class SubscriptionError(RpcError, ValueError):
    """A subscription with the same id (or the same match) already exists, or none has this id."""

    code = ErrorCode.SUBSCRIPTION_EXISTS


class CallTimeoutError(RpcError, TimeoutError):
    """The call did not complete before its deadline."""

    code = ErrorCode.DEADLINE_EXCEEDED


class MessageTooLargeError(RpcError):
    """A frame is larger than the limit of the side that would have to read it."""

    code = ErrorCode.MESSAGE_TOO_LARGE


class CallCancelledError(RpcError):
    """The call was cancelled before it completed."""

    code = ErrorCode.CANCELLED


class HostShuttingDownError(RpcError):
    """The host is shutting down and no longer accepts new calls."""

    code = ErrorCode.SHUTTING_DOWN


class TooManyCallsError(RpcError):
    """The calling worker already has as many calls in flight as the host allows, or its
    identity went over the host's rate limit; retry later."""

    code = ErrorCode.TOO_MANY_CALLS


class PermissionDeniedError(RpcError, PermissionError):
    """The host's access policy does not let this caller's identity do this.

    Registering an agent type, calling one, publishing to or subscribing to a topic type
    it has no rule for, or naming as sender an agent it does not serve.
    """

    code = ErrorCode.FORBIDDEN


class ClusterUnavailableError(RpcError):
    """The recipient is served on another host of the cluster, and this host cannot reach the
    cluster's engine (Redis) now; calls between workers of one host go on. Retry later."""

    code = ErrorCode.CLUSTER_UNAVAILABLE


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
        ClusterUnavailableError,
    )
}
_BY_CODE[ErrorCode.SUBSCRIPTION_NOT_FOUND] = SubscriptionError


def error_from_wire(code: int, message: str, data: Any = None) -> RpcError:
    """Build the exception that stands for a JSON-RPC error object received from a peer."""
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = ProtocolError if -32768 <= code <= -32600 else RpcError
    return cls(message, code=code, data=data)
