"""Defaults shared by the host and the workers.

Every timeout has a finite default, but one: an agent call waits as long as its handler
runs unless given a deadline (``call_timeout``), since model calls can take minutes.
Sizes are in bytes.
"""

from __future__ import annotations

#: The package's version (what ``autogen_http_runtime.__version__`` says).
__version__ = "0.1.0"

#: Version of the wire protocol spoken over the worker WebSocket; exchanged in ``hello``.
PROTOCOL_VERSION = "autogen-http/1"

#: Port the host listens on when none is given.
DEFAULT_PORT = 9000
DEFAULT_HOST = "127.0.0.1"

#: Path of the worker WebSocket, relative to where the service's router is mounted.
WORKER_WS_PATH = "/v1/worker"
#: Where the other hosts of a cluster open their direct links to this one (cluster_link_url).
CLUSTER_LINK_PATH = "/v1/cluster/link"
#: Path of the agent-type listing, relative to where the service's router is mounted.
AGENTS_PATH = "/v1/agents"
#: What the ``type`` of every RFC 9457 problem the host answers with starts with; a refusal
#: without it did not come from this package (a worker tells a missing route by it).
PROBLEM_TYPE_PREFIX = "urn:autogen-http:problem:"

#: Largest WebSocket message either side reads or sends by default: 32 MiB, so that a
#: 16 MiB payload fits even once base64-encoded (protobuf) or escaped (JSON strings).
DEFAULT_MAX_MESSAGE_SIZE = 32 * 1024 * 1024
#: What a mounted HttpAgentService advertises unless told otherwise: uvicorn's own default
#: ``ws_max_size``, so that a worker gets MessageTooLargeError instead of a 1009 close.
#: HttpAgentServer raises both to DEFAULT_MAX_MESSAGE_SIZE.
MOUNTED_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

#: WebSocket keepalive: a ping every ``interval`` seconds; no pong within ``timeout``
#: seconds closes the connection, which fails every call pending on it.
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 20.0

#: Seconds a worker waits for the TCP/WebSocket handshake and the protocol ``hello``.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds a worker waits for the host to answer a control call (register, subscribe).
DEFAULT_CONTROL_TIMEOUT = 30.0
#: Seconds a call made while the worker reconnects waits for the connection to come back.
DEFAULT_RECONNECT_TIMEOUT = 10.0
#: Bytes a worker may have queued for the host before send/publish wait for them to drain.
DEFAULT_WRITE_BUFFER_LIMIT = 8 * 1024 * 1024
#: Bytes the host may have queued for one worker; a worker that falls further behind is
#: disconnected (close code 1008) rather than let the host's memory grow without bound.
DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: Bytes queued for one worker past which the host stops reading from the workers sending
#: to it until it catches up (back-pressure), for at most ``slow_consumer_timeout`` seconds.
DEFAULT_HIGH_WATER = 8 * 1024 * 1024
DEFAULT_SLOW_CONSUMER_TIMEOUT = 10.0
#: Seconds a peer the host gives up on (dropped, revoked, keepalive timed out) has to take
#: the close frame before its socket is cut: waiting for a peer that reads nothing would
#: keep what the host wrote for it, and the socket, for ever.
CLOSE_GRACE = 1.0
#: Calls one worker may have in flight through the host at once; more get -32011.
DEFAULT_MAX_CALLS_IN_FLIGHT = 10_000
#: Subscriptions the workers of one identity may hold at once; more get -32011. An AgentChat
#: team adds a few per participant (docs/agentchat.md): room for hundreds of teams at once.
DEFAULT_MAX_SUBSCRIPTIONS = 10_000
#: The largest state of one durable agent (``persist_agent_state``), in bytes of JSON text:
#: a worker does not save a larger one, and a host does not store it.
DEFAULT_MAX_STATE_SIZE = 1024 * 1024
#: Seconds the host lets in-flight calls finish when it stops.
DEFAULT_GRACE = 5.0

HOST_LOGGER = "autogen_http_runtime.host"
WORKER_LOGGER = "autogen_http_runtime.worker"
SERVER_LOGGER = "autogen_http_runtime.server"
