"""The seed's import path: ``from autogen_http_runtime.runtimes.http import HttpWorkerAgentRuntime``.

Re-exports the very same objects as :mod:`autogen_http_runtime`.
"""

from ... import (
    AgentNotFoundError,
    AgentTypeConflictError,
    CallCancelledError,
    CallTimeoutError,
    HostConnectionError,
    HostShuttingDownError,
    HttpAgentServer,
    HttpAgentService,
    HttpRuntimeError,
    HttpWorkerAgentRuntime,
    MessageTooLargeError,
    ProtocolError,
    ReconnectPolicy,
    RemoteAgentError,
    RpcError,
    SerializationError,
    SubscriptionError,
    TooManyCallsError,
    WorkerDisconnectedError,
)

__all__ = [
    "AgentNotFoundError",
    "AgentTypeConflictError",
    "CallCancelledError",
    "CallTimeoutError",
    "HostConnectionError",
    "HostShuttingDownError",
    "HttpAgentServer",
    "HttpAgentService",
    "HttpRuntimeError",
    "HttpWorkerAgentRuntime",
    "MessageTooLargeError",
    "ProtocolError",
    "ReconnectPolicy",
    "RemoteAgentError",
    "RpcError",
    "SerializationError",
    "SubscriptionError",
    "TooManyCallsError",
    "WorkerDisconnectedError",
]
