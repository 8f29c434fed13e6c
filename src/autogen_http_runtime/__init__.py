"""autogen-http-runtime: a drop-in HTTP/WebSocket distributed runtime for Microsoft AutoGen.

Public API: :class:`HttpAgentServer` (the host process), :class:`HttpAgentService` (the
routing core, mountable in any FastAPI app), :class:`HttpWorkerAgentRuntime` (a worker,
implementing autogen-core's ``AgentRuntime``), the security settings (:class:`BearerTokens`,
:class:`AccessPolicy`, :class:`RateLimit`; see ``docs/security.md``) and the exceptions in
:mod:`._exceptions`.
"""

from ._constants import __version__
from ._exceptions import (
    AgentNotFoundError,
    AgentTypeConflictError,
    AuthenticationError,
    CallCancelledError,
    CallTimeoutError,
    ClusterJoinError,
    ClusterUnavailableError,
    HostConnectionError,
    HostShuttingDownError,
    HttpRuntimeError,
    MessageTooLargeError,
    PermissionDeniedError,
    ProtocolError,
    RemoteAgentError,
    RpcError,
    SerializationError,
    SubscriptionError,
    TLSError,
    TooManyCallsError,
    WorkerDisconnectedError,
)
from ._host.security import AccessPolicy, AccessRule, BearerTokens, Identity, RateLimit
from ._http.server import HttpAgentServer
from ._http.service import HttpAgentService
from ._worker.link import ReconnectPolicy
from ._worker.runtime import HttpWorkerAgentRuntime

__all__ = [
    "AccessPolicy",
    "AccessRule",
    "AgentNotFoundError",
    "AgentTypeConflictError",
    "AuthenticationError",
    "BearerTokens",
    "CallCancelledError",
    "CallTimeoutError",
    "ClusterJoinError",
    "ClusterUnavailableError",
    "HostConnectionError",
    "HostShuttingDownError",
    "HttpAgentServer",
    "HttpAgentService",
    "HttpRuntimeError",
    "HttpWorkerAgentRuntime",
    "Identity",
    "MessageTooLargeError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimit",
    "ReconnectPolicy",
    "RemoteAgentError",
    "RpcError",
    "SerializationError",
    "SubscriptionError",
    "TLSError",
    "TooManyCallsError",
    "WorkerDisconnectedError",
    "__version__",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__"):
        _obj.__module__ = __name__
del _name, _obj
