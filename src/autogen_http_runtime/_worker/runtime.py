"""HttpWorkerAgentRuntime: autogen-core's AgentRuntime protocol over one WebSocket to a host."""

from __future__ import annotations

import logging
import signal
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from autogen_core import (
    JSON_DATA_CONTENT_TYPE,
    Agent,
    AgentId,
    AgentMetadata,
    AgentRuntime,
    AgentType,
    CancellationToken,
    MessageSerializer,
    Subscription,
    TopicId,
)
from opentelemetry.trace import TracerProvider

from .._compat import get_impl, warn_grpc_config_ignored
from .._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_CONTROL_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    DEFAULT_RECONNECT_TIMEOUT,
    DEFAULT_WRITE_BUFFER_LIMIT,
    WORKER_LOGGER,
)
from .._protocol.descriptions import DEFAULT_SKILL_VERSION
from .._randomness import message_ids
from .._signals import signals_received
from .a2a_skills import describe_a2a_skill
from .agents import LocalAgents
from .dialing import ConnectionOptions
from .durable import AgentStates
from .inbound import Inbound
from .lifecycle import Lifecycle
from .link import ReconnectPolicy
from .outbound import Outbound
from .registrations import Registrations
from .serialization import PayloadCodec
from .tracing import RuntimeTracer

__all__ = ["HttpWorkerAgentRuntime"]

T = TypeVar("T", bound=Agent)


class HttpWorkerAgentRuntime(AgentRuntime):
    """A worker: runs agents in this process and reaches every other agent through the host.

    A drop-in replacement for ``GrpcWorkerAgentRuntime``::

        runtime = HttpWorkerAgentRuntime("127.0.0.1:9000")   # or "http://host:9000/prefix"
        await runtime.start()
        await MyAgent.register(runtime, "my_agent", lambda: MyAgent())
        ...
        await runtime.stop()

    When the connection to the host is lost, the worker reconnects in the background (see
    :class:`ReconnectPolicy`) and registers its types and subscriptions again. Calls in flight then
    fail with :class:`HostConnectionError`; calls made meanwhile wait up to ``reconnect_timeout`` s,
    or until their deadline (then :class:`CallTimeoutError`) if that comes first.

    Args:
        host_address: ``"host:port"`` (as for gRPC), ``"http://host:port[/prefix]"`` or ``"https://..."``;
            or several hosts of a cluster, a list or ``"a:9000,b:9000"`` (docs/cluster.md).
        tracer_provider: OpenTelemetry tracer provider for the runtime's spans; the global one when ``None``.
        payload_serialization_format: Preferred content type for payloads, JSON (``application/json``)
            or protobuf (``application/x-protobuf``), for calls and publishes alike. A message type with
            no serializer for it falls back to one that has.
        max_message_size: Largest WebSocket message in bytes this worker sends or reads.
        call_timeout: Default deadline in seconds for ``send_message`` and calls for metadata and
            state, a wait for a reconnection included; ``None`` (the default): none, as handlers may be slow.
        connect_timeout: Seconds ``start()`` (and each reconnection attempt) waits to
            connect and shake hands.
        control_timeout: Seconds to wait for the host to answer a registration or subscription.
        ping_interval: Seconds between keepalive pings; ``None`` disables them.
        ping_timeout: Seconds without a pong before the connection is dropped.
        reconnect: How to reconnect after losing the host; ``None`` does not reconnect.
        reconnect_timeout: Seconds a call made while reconnecting waits for the connection.
        wait_for_host: Seconds ``start()`` keeps trying to reach a host that is not up yet,
            by the ``reconnect`` policy's backoff (its default when ``reconnect`` is ``None``);
            ``math.inf`` tries as long as the policy allows. 0 (the default) fails at once.
        stop_grace: Seconds ``stop()`` lets the handlers running finish and answer their callers.
        write_buffer_limit: Bytes queued for the host above which ``send_message`` and
            ``publish_message`` wait for the queue to drain.
        compression: Offer per-message deflate to the host, which uses it if it allows it
            (``HttpAgentServer(compression=True)``, ``serve --compression on``). Off by
            default: on loopback and data-centre links it costs more CPU than it saves; it
            can pay on a slow link with large text payloads.
        headers: Extra HTTP headers for the WebSocket handshake (e.g. ``Authorization``).
        token: A bearer token for a host that authenticates (sent as
            ``Authorization: Bearer <token>``). A refused token makes ``start()`` raise
            :class:`AuthenticationError`, and ends reconnecting.
        ssl: An ``ssl.SSLContext`` for an ``https://`` host, for full control.
        ssl_ca: A CA bundle (PEM file) to trust instead of the system's trust store.
        ssl_certfile: This worker's client certificate (PEM), for a host that asks for one (mTLS).
        ssl_keyfile: The client certificate's private key, if not in ``ssl_certfile``.
        persist_agent_state: Make this worker's agents durable: before an agent's first
            message here, load its last saved state from the host's store; after each
            message it handles, save ``save_state()`` there (docs/durable-agents.md).
        name: A label for this worker in the host's logs.
        logger: Logger for connection events and errors; ``autogen_http_runtime.worker`` by default.
        extra_grpc_config: Accepted for ``GrpcWorkerAgentRuntime``'s code; ignored with a warning.
    """

    def __init__(
        self,
        host_address: str | Sequence[str],
        tracer_provider: TracerProvider | None = None,
        payload_serialization_format: str = JSON_DATA_CONTENT_TYPE,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        call_timeout: float | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        control_timeout: float = DEFAULT_CONTROL_TIMEOUT,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
        reconnect: ReconnectPolicy | None = ReconnectPolicy(),  # noqa: B008 - frozen, shared safely
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
        wait_for_host: float = 0.0,
        stop_grace: float = DEFAULT_GRACE,
        write_buffer_limit: int = DEFAULT_WRITE_BUFFER_LIMIT,
        compression: bool = False,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        ssl_ca: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        persist_agent_state: bool = False,
        name: str = "",
        logger: logging.Logger | None = None,
        extra_grpc_config: object = None,
    ) -> None:
        warn_grpc_config_ignored(extra_grpc_config)
        options = ConnectionOptions.build(
            host_address,
            name=name,
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            headers=headers,
            token=token,
            write_buffer_limit=write_buffer_limit,
            compression=compression,
            ssl_context=ssl,
            ssl_ca=ssl_ca,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
        self._codec = PayloadCodec(payload_serialization_format)
        self._tracer = RuntimeTracer(tracer_provider, "Worker Runtime")
        self._log = logger or logging.getLogger(WORKER_LOGGER)
        self._agents = LocalAgents(self)
        states = AgentStates(self._log, options.instance_id, control_timeout) if persist_agent_state else None
        self._inbound = Inbound(self._agents, self._codec, self._tracer, self._log, name=name, states=states)
        self._registrations = Registrations(self._agents, control_timeout=control_timeout, logger=self._log)
        self._lifecycle = Lifecycle(
            host_address,
            options,
            self._inbound,
            self._registrations,
            control_timeout=control_timeout,
            reconnect=reconnect,
            reconnect_timeout=reconnect_timeout,
            wait_for_host=wait_for_host,
            stop_grace=stop_grace,
            logger=self._log,
        )
        self._outbound = Outbound(
            self._agents, self._codec, self._tracer, self._lifecycle, call_timeout, message_ids(), states
        )

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, *, wait_for_host: float | None = None) -> None:
        """Connect to the host and register every agent type and subscription added so far.

        Returns once the host has acknowledged them all. A failed or cancelled start can be retried.

        Args:
            wait_for_host: Overrides the runtime's ``wait_for_host`` for this start.

        Raises:
            RuntimeError: The runtime was already started.
            HostConnectionError: The host cannot be reached (within ``wait_for_host``), or
                :meth:`stop` was called meanwhile.
            AuthenticationError: The host refused this worker's credentials (HTTP 401/403).
            TLSError: The host's certificate is not trusted, or it wants a client certificate.
            AgentTypeConflictError: Another worker already registered one of the agent types.
        """
        await self._lifecycle.start(wait_for_host)

    async def stop(self) -> None:
        """Stop serving, let the handlers running finish, and close the connection to the host.

        The host is told first (``drain``): it frees this worker's agent types and
        subscriptions at once, so another worker may register them, and routes nothing new
        here. Handlers running get up to ``stop_grace`` seconds to finish, and their replies
        reach their callers; those still running then are cancelled, and their callers get
        :class:`WorkerDisconnectedError`. Then ``bye``, and the socket closes; calls still waiting
        fail with :class:`HostConnectionError`. Idempotent; a cancelled ``stop()`` still stops.
        """
        await self._lifecycle.stop()

    async def close(self) -> None:
        """Stop (if running), then ``close()`` every agent made or registered here, as
        ``SingleThreadedAgentRuntime.close`` does; each agent's error is logged, the first raised."""
        await self.stop()
        await self._agents.close(self._log)

    async def stop_when_signal(
        self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Run until one of ``signals`` arrives, then :meth:`stop`. The handlers are removed on return."""
        with signals_received(signals) as received:
            await received.wait()
        self._log.info("Signal received; stopping the worker")
        await self.stop()

    # -- messages out -----------------------------------------------------------------

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send ``message`` to ``recipient`` on whichever worker serves its type, and return the reply.

        Cancelling ``cancellation_token`` (or the awaiting task) fails the call here at once
        and cancels the remote handler's ``ctx.cancellation_token``.

        Args:
            timeout: Deadline in seconds for this call; defaults to the runtime's ``call_timeout``.

        Raises:
            AgentNotFoundError: No worker serves ``recipient.type`` (a ``LookupError``).
            RemoteAgentError: The remote handler or agent factory raised.
            WorkerDisconnectedError: The serving worker went away before answering.
            CallTimeoutError: The deadline passed.
            SerializationError: No serializer is registered for the message's type.
            HostConnectionError: This runtime is not connected to its host.
            asyncio.CancelledError: The cancellation token was cancelled.
        """
        return await self._outbound.send(
            message,
            recipient,
            sender=sender,
            cancellation_token=cancellation_token,
            message_id=message_id,
            timeout=timeout,
        )

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> None:
        """Publish ``message`` to every agent subscribed to ``topic_id``, on any worker.

        Returns once the event is queued for the host: delivery is asynchronous, as on the
        in-process runtime. The sender itself does not receive its own message.

        Raises:
            ValueError: The topic's type or source is empty (CloudEvents forbid it).
            SerializationError: No serializer is registered for the message's type.
            HostConnectionError: This runtime is not connected to its host.
        """
        await self._outbound.publish(message, topic_id, sender=sender, message_id=message_id)

    # -- agents -----------------------------------------------------------------------

    async def register_factory(
        self,
        type: str | AgentType,
        agent_factory: Callable[[], T | Awaitable[T]],
        *,
        expected_class: type[T] | None = None,
    ) -> AgentType:
        """Register a factory for an agent type served by this worker.

        Works before and after :meth:`start` (then returns once the host has the type); a
        rejected registration leaves nothing behind.

        Raises:
            ValueError: This worker already registered the type.
            AgentTypeConflictError: Another worker of the host serves the type (a ``ValueError``).
            HostConnectionError: The runtime was stopped or lost its host for good.
        """
        agent_type = AgentType(type) if isinstance(type, str) else type
        self._agents.add_factory(agent_type.type, agent_factory, expected_class)
        await self._registrations.add_type(agent_type.type, self._lifecycle)
        return agent_type

    async def register_agent_instance(self, agent_instance: Agent, agent_id: AgentId) -> AgentId:
        """Register an existing agent instance under ``agent_id``; see :meth:`register_factory`.

        Raises:
            ValueError: An agent with this id is here already, or a factory or another class serves the type.
            AgentTypeConflictError: Another worker of the host serves the type.
        """
        await self._registrations.add_instance(agent_id, agent_instance, self, self._lifecycle)
        return agent_id

    async def register_a2a_skill(
        self,
        agent_type: str,
        *,
        name: str,
        description: str,
        input_type: type[Any],
        output_type: type[Any] | None = None,
        version: str = DEFAULT_SKILL_VERSION,
    ) -> None:
        """Offer ``agent_type`` of this worker to the A2A clients of a host that serves A2A
        (docs/a2a.md): a skill on its Agent Card, whose messages' text or data part becomes an
        ``input_type`` message (which needs a JSON serializer). Before or after registering the
        type; the host hears of it with the type and forgets it when the type goes.

        Raises:
            SerializationError: ``input_type`` has no JSON serializer (a ``ValueError``).
            HostConnectionError: The runtime was stopped or lost its host for good.
        """
        skill = describe_a2a_skill(self._codec, name, description, input_type, output_type, version)
        await self._registrations.set_a2a_skill(agent_type, skill, self._lifecycle)

    async def try_get_underlying_agent_instance(self, id: AgentId, type: type[T] = Agent) -> T:  # type: ignore[assignment]
        """The agent object itself, for an agent served by this worker.

        Raises:
            LookupError: This worker does not serve ``id.type``.
            TypeError: The agent is not an instance of ``type``.
        """
        return await self._agents.underlying(id, type)

    async def get(
        self, id_or_type: AgentId | AgentType | str, /, key: str = "default", *, lazy: bool = True
    ) -> AgentId:
        """The id of an agent of this worker; with ``lazy=False`` the agent is created now."""
        return await get_impl(id_or_type=id_or_type, key=key, lazy=lazy, instance_getter=self._agents.get)

    # -- state ------------------------------------------------------------------------

    async def save_state(self) -> Mapping[str, Any]:
        """The state of every agent instantiated on this worker, keyed by ``str(agent_id)``."""
        return await self._agents.save_all()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Load state saved by :meth:`save_state` into this worker's agents (created as needed)."""
        await self._agents.load_all(state)

    def agent_state_counts(self) -> dict[str, int]:
        """With ``persist_agent_state``: ``loads``, ``saves``, ``stale`` and ``failed`` saves so far."""
        return {} if self._inbound.states is None else self._inbound.states.as_dict()

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        """Metadata of an agent on this worker or, through the host, on any other."""
        return await self._outbound.agent_metadata(agent)

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        """Saved state of an agent on this worker or, through the host, on any other."""
        return await self._outbound.agent_save_state(agent)

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        """Load state into an agent on this worker or, through the host, on any other."""
        await self._outbound.agent_load_state(agent, state)

    # -- subscriptions ----------------------------------------------------------------

    async def add_subscription(self, subscription: Subscription) -> None:
        """Add a subscription to the host, for an agent type served by any worker (before
        :meth:`start` too: then it is sent on start).

        Raises:
            SubscriptionError: A subscription with the same id or the same match exists
                (a ``ValueError`` saying it "already exists").
            TypeError: The subscription is not a ``TypeSubscription`` (``DefaultSubscription``
                included) or a ``TypePrefixSubscription``: only those can be sent to the host.
            HostConnectionError: The runtime was stopped or lost its host for good.
        """
        await self._registrations.add_subscription(
            subscription, self._lifecycle.control if self._lifecycle.host_must_hear() else None
        )

    async def remove_subscription(self, id: str) -> None:
        """Remove a subscription by id, whichever worker added it.

        Raises:
            SubscriptionError: No subscription has this id (a ``ValueError``).
            HostConnectionError: The runtime was stopped or lost its host for good.
        """
        await self._registrations.remove_subscription(
            id, self._lifecycle.control if self._lifecycle.host_must_hear() else None
        )

    def add_message_serializer(
        self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]
    ) -> None:
        """Register one serializer or a list of them for the message types this worker exchanges."""
        self._codec.add(serializer)
