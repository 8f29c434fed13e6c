"""autogen-http-runtime: a drop-in HTTP/WebSocket distributed runtime for Microsoft AutoGen.

Public API: :class:`HttpAgentServer` (the host process), :class:`HttpAgentService` (the
routing core, mountable in any FastAPI app), :class:`HttpWorkerAgentRuntime` (a worker,
implementing autogen-core's ``AgentRuntime``) and the exceptions in :mod:`._exceptions`.
"""

from ._exceptions import (
    AgentNotFoundError,
    AgentTypeConflictError,
    CallCancelledError,
    CallTimeoutError,
    HostConnectionError,
    HostShuttingDownError,
    HttpRuntimeError,
    MessageTooLargeError,
    ProtocolError,
    RemoteAgentError,
    RpcError,
    SerializationError,
    SubscriptionError,
    TooManyCallsError,
    WorkerDisconnectedError,
)
from ._link import ReconnectPolicy
from ._server import HttpAgentServer
from ._service import HttpAgentService
from ._worker import HttpWorkerAgentRuntime

__version__ = "0.1.0"

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
    "__version__",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__"):
        _obj.__module__ = __name__
del _name, _obj
