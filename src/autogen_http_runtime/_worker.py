"""HttpWorkerAgentRuntime: autogen-core's AgentRuntime protocol over one WebSocket to a host."""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import signal
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from autogen_core import (
    JSON_DATA_CONTENT_TYPE,
    Agent,
    AgentId,
    AgentInstantiationContext,
    AgentMetadata,
    AgentRuntime,
    AgentType,
    CancellationToken,
    MessageContext,
    MessageHandlerContext,
    MessageSerializer,
    Subscription,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
)
from autogen_core._runtime_impl_helpers import get_impl
from autogen_core._telemetry import MessageRuntimeTracingConfig, TraceHelper
from opentelemetry.trace import TracerProvider

from . import _wire as wire
from ._address import parse_host_address
from ._compat import warn_grpc_config_ignored
from ._connection import HostConnection
from ._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_CONTROL_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    WORKER_LOGGER,
)
from ._exceptions import (
    AgentNotFoundError,
    HostConnectionError,
    MessageTooLargeError,
    RpcError,
    SubscriptionError,
)
from ._serialization import PayloadCodec
from ._signals import signals_received
from ._tracing import continued, current_trace_context, trace_context_from
from ._wire import ErrorCode, FrameError, JsonObject, Method, RequestId

__all__ = ["HttpWorkerAgentRuntime"]

T = TypeVar("T", bound=Agent)
AgentFactory = Callable[[], Awaitable[Agent]]


class _State(enum.Enum):
    NEW = "not started"
    STARTING = "starting"
    RUNNING = "running"
    DISCONNECTED = "disconnected from its host"
    STOPPED = "stopped"


class HttpWorkerAgentRuntime(AgentRuntime):
    """A worker: runs agents in this process and reaches every other agent through the host.

    A drop-in replacement for ``GrpcWorkerAgentRuntime``::

        runtime = HttpWorkerAgentRuntime("127.0.0.1:9000")   # or "http://host:9000/prefix"
        await runtime.start()
        await MyAgent.register(runtime, "my_agent", lambda: MyAgent())
        ...
        await runtime.stop()

    Args:
        host_address: ``"host:port"`` (the gRPC runtime's style), ``"http://host:port[/prefix]"``
            or ``"https://..."`` (then the WebSocket uses TLS).
        tracer_provider: OpenTelemetry tracer provider for the runtime's spans; the global
            provider when ``None``.
        payload_serialization_format: Preferred content type for payloads, JSON
            (``application/json``) or protobuf (``application/x-protobuf``), for calls and
            publishes alike. A message type with no serializer for it falls back to one
            that has.
        max_message_size: Largest WebSocket message in bytes this worker sends or reads.
        call_timeout: Default deadline in seconds for ``send_message``; ``None`` (the
            default) waits as long as the handler runs, since model calls can be slow.
        connect_timeout: Seconds ``start()`` waits to connect and shake hands.
        control_timeout: Seconds to wait for the host to answer a registration or subscription.
        ping_interval: Seconds between keepalive pings; ``None`` disables them.
        ping_timeout: Seconds without a pong before the connection is dropped.
        headers: Extra HTTP headers for the WebSocket handshake (e.g. ``Authorization``).
        name: A label for this worker in the host's logs.
        logger: Logger for connection events and errors; ``autogen_http_runtime.worker`` by default.
        extra_grpc_config: Accepted so that code written for ``GrpcWorkerAgentRuntime`` runs
            unchanged; it has no meaning here and is ignored with a warning.
    """

    def __init__(
        self,
        host_address: str,
        tracer_provider: TracerProvider | None = None,
        payload_serialization_format: str = JSON_DATA_CONTENT_TYPE,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        call_timeout: float | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        control_timeout: float = DEFAULT_CONTROL_TIMEOUT,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        name: str = "",
        logger: logging.Logger | None = None,
        extra_grpc_config: object = None,
    ) -> None:
        warn_grpc_config_ignored(extra_grpc_config)
        self._endpoint = parse_host_address(host_address)
        self._host_address = host_address
        self._codec = PayloadCodec(payload_serialization_format)
        self._trace_helper = TraceHelper(tracer_provider, MessageRuntimeTracingConfig("Worker Runtime"))
        self._max_message_size = max_message_size
        self._call_timeout = call_timeout
        self._connect_timeout = connect_timeout
        self._control_timeout = control_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._headers = dict(headers or {})
        self._name = name
        self._log = logger or logging.getLogger(WORKER_LOGGER)

        self._factories: dict[str, AgentFactory] = {}
        self._instance_types: dict[str, type[Agent]] = {}
        self._agents: dict[AgentId, Agent] = {}
        self._subscriptions: dict[str, Subscription] = {}
        #: Ids of the subscriptions sent to the host on the current connection.
        self._subscriptions_sent: set[str] = set()
        self._state = _State.NEW
        self._connection: HostConnection | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._serving: dict[RequestId, CancellationToken] = {}
        self._stopping: asyncio.Future[None] | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the host and register every agent type and subscription added so far.

        Returns once the host has acknowledged all of them. Cancelling it closes the
        connection and leaves the runtime stopped.

        A failed start leaves the runtime as it was before, so it can be retried.

        Raises:
            RuntimeError: The runtime was already started.
            HostConnectionError: The host cannot be reached, or :meth:`stop` was called meanwhile.
            AgentTypeConflictError: Another worker already registered one of the agent types.
        """
        if self._state is not _State.NEW:
            raise RuntimeError(f"The runtime cannot start: it is {self._state.value}.")
        self._state = _State.STARTING
        try:
            connection = await HostConnection.open(
                self._endpoint,
                name=self._name,
                max_message_size=self._max_message_size,
                connect_timeout=self._connect_timeout,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                headers=self._headers,
                on_request=self._on_request,
                on_cancel=self._on_cancel,
                on_event=self._on_event,
                on_close=self._on_connection_closed,
                logger=self._log,
            )
            self._connection = connection
            if self._state is not _State.STARTING:
                raise HostConnectionError("The runtime was stopped while it was starting.")
            # Snapshots: registrations made while we await are sent by their own calls,
            # since the connection is open by now (the host accepts a type twice from one worker).
            for agent_type in list(self._factories):
                await self._control(Method.REGISTER_AGENT_TYPE, {"type": agent_type})
            for subscription in list(self._subscriptions.values()):
                if subscription.id not in self._subscriptions_sent:
                    self._subscriptions_sent.add(subscription.id)
                    await self._control(
                        Method.ADD_SUBSCRIPTION, {"subscription": _subscription_to_wire(subscription)}
                    )
        except BaseException:
            if self._connection is not None:
                await self._connection.close(1000, "start failed")
                self._connection = None
            self._subscriptions_sent.clear()
            if self._state is _State.STARTING:
                self._state = _State.NEW  # nothing is left behind: start() may be tried again
            raise
        self._state = _State.RUNNING
        self._log.info("Worker connected to %s as %s", self._endpoint.ws_url, self._connection.worker_id)

    async def stop(self) -> None:
        """Close the connection to the host and stop serving.

        The host is told first (``bye``) and frees this worker's agent types and
        subscriptions before ``stop()`` returns, so another worker may register them at
        once. Calls this worker is waiting on fail with :class:`HostConnectionError`;
        handlers still running are cancelled. A second call does nothing.
        """
        if self._state is _State.NEW:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._shutdown())
        # Shielded: a cancelled stop() still leaves the runtime fully stopped.
        await asyncio.shield(self._stopping)

    async def _shutdown(self) -> None:
        was_open = self._connection_open
        self._state = _State.STOPPED
        if self._connection is not None:
            if was_open:
                try:
                    await self._connection.call(Method.BYE, {}, timeout=min(self._control_timeout, 5.0))
                except (HostConnectionError, RpcError):
                    pass  # the host is gone or too old to know 'bye': closing the socket frees us too
            await self._connection.close(1000, "worker stopping")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        self._log.info("Worker stopped")

    async def stop_when_signal(
        self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Run until one of ``signals`` arrives, then :meth:`stop`. The handlers are removed on return."""
        with signals_received(signals) as received:
            await received.wait()
        self._log.info("Signal received; stopping the worker")
        await self.stop()

    def _on_connection_closed(self, reason: str) -> None:
        # Answers can no longer reach their callers: tell the handlers still running.
        for token in list(self._serving.values()):
            token.cancel()
        if self._state in (_State.RUNNING, _State.STARTING):
            self._state = _State.DISCONNECTED
            self._log.warning("Lost the connection to the host: %s", reason)

    def _live_connection(self) -> HostConnection:
        if self._state is not _State.RUNNING or self._connection is None or self._connection.closed:
            raise HostConnectionError(
                f"The runtime is {self._state.value}; it must be running (connected to "
                f"{self._host_address}) to send or publish messages."
            )
        return self._connection

    async def _control(self, method: str, params: JsonObject) -> Any:
        assert self._connection is not None
        return await self._connection.call(method, params, timeout=self._control_timeout)

    @property
    def _connection_open(self) -> bool:
        return (
            self._state in (_State.STARTING, _State.RUNNING)
            and self._connection is not None
            and not self._connection.closed
        )

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
        connection = self._live_connection()
        if cancellation_token is not None and cancellation_token.is_cancelled():
            raise asyncio.CancelledError("The cancellation token was already cancelled.")
        payload = self._codec.encode(message)
        with self._trace_helper.trace_block(
            "create", recipient, parent=None, extraAttributes={"message_type": payload.data_type}
        ):
            params: JsonObject = {
                "recipient": wire.agent_id_to_wire(recipient),
                "sender": None if sender is None else wire.agent_id_to_wire(sender),
                "message_id": message_id or str(uuid.uuid4()),
                "payload": wire.payload_to_wire(payload),
            }
            params.update(current_trace_context())
            deadline = timeout if timeout is not None else self._call_timeout
            if deadline is not None:
                params["timeout"] = deadline
            request_id, future = connection.start_call(Method.SEND, params)
            if cancellation_token is not None:
                cancellation_token.link_future(future)
            reply = await connection.wait(Method.SEND, request_id, future, timeout=deadline)
        with self._trace_helper.trace_block("ack", recipient, parent=None):
            body = reply.get("payload") if isinstance(reply, dict) else None
            return None if body is None else self._codec.decode(wire.payload_from_wire(body))

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
        if not topic_id.source or not topic_id.type:
            # CloudEvents require a non-empty 'type' and 'source'; fail here rather than at the host.
            raise ValueError(f"Cannot publish to {topic_id!r}: the topic type and source must not be empty.")
        connection = self._live_connection()
        payload = self._codec.encode(message)
        with self._trace_helper.trace_block(
            "publish", topic_id, parent=None, extraAttributes={"message_type": payload.data_type}
        ):
            connection.send_event(
                wire.event(
                    event_id=message_id or str(uuid.uuid4()),
                    topic_type=topic_id.type,
                    topic_source=topic_id.source,
                    payload=payload,
                    sender=sender,
                    trace=current_trace_context(),
                )
            )

    # -- messages in ------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_request(self, req: wire.Request) -> None:
        token = CancellationToken()
        self._serving[req.id] = token
        self._spawn(self._serve_request(req, token))

    def _on_cancel(self, request_id: RequestId) -> None:
        token = self._serving.get(request_id)
        if token is not None:
            token.cancel()

    async def _serve_request(self, req: wire.Request, token: CancellationToken) -> None:
        try:
            value = await self._handle_request(req, token)
        except FrameError as exc:
            self._reply_error(req.id, exc.code, exc.message)
        except AgentNotFoundError as exc:
            self._reply_error(req.id, ErrorCode.AGENT_NOT_FOUND, exc.message)
        except asyncio.CancelledError:
            self._reply_error(req.id, ErrorCode.CANCELLED, "The call was cancelled.")
            raise
        except BaseException as exc:
            # Whatever the handler raised, its caller must hear of it, or it would wait forever.
            self._reply_error(
                req.id, ErrorCode.REMOTE_ERROR, f"{type(exc).__name__}: {exc}", _error_data(exc)
            )
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            try:
                self._connection_for_reply().send_result(req.id, value)
            except HostConnectionError:
                pass
            except MessageTooLargeError as exc:
                self._reply_error(req.id, ErrorCode.MESSAGE_TOO_LARGE, f"The reply is too large: {exc}")
            except Exception as exc:
                self._reply_error(
                    req.id, ErrorCode.REMOTE_ERROR, f"{type(exc).__name__}: {exc}", _error_data(exc)
                )
        finally:
            self._serving.pop(req.id, None)

    def _connection_for_reply(self) -> HostConnection:
        if self._connection is None:
            raise HostConnectionError("not connected")
        return self._connection

    def _reply_error(self, request_id: RequestId, code: int, message: str, data: Any = None) -> None:
        try:
            self._connection_for_reply().send_error(request_id, code, message, data)
        except HostConnectionError:
            self._log.debug("Could not report error for call %r: the connection is closed", request_id)

    async def _handle_request(self, req: wire.Request, token: CancellationToken) -> Any:
        recipient = wire.required_agent_id(req.params, "recipient")
        if req.method == Method.SEND:
            return await self._handle_send(req, recipient, token)
        if req.method == Method.AGENT_METADATA:
            return {"metadata": dict(await self.agent_metadata(recipient))}
        if req.method == Method.AGENT_SAVE_STATE:
            return {"state": dict(await self.agent_save_state(recipient))}
        if req.method == Method.AGENT_LOAD_STATE:
            state = req.params.get("state")
            if not isinstance(state, dict):
                raise FrameError(ErrorCode.INVALID_PARAMS, "'state' must be an object.")
            await self.agent_load_state(recipient, state)
            return {}
        raise FrameError(ErrorCode.METHOD_NOT_FOUND, f"Method '{req.method}' not found.")

    async def _handle_send(self, req: wire.Request, recipient: AgentId, token: CancellationToken) -> Any:
        sender = wire.agent_id_from_wire(req.params, "sender", optional=True)
        payload = wire.payload_from_wire(req.params.get("payload"))
        message_id = req.params.get("message_id")
        message = self._codec.decode(payload)
        agent = await self._get_agent(recipient)
        ctx = MessageContext(
            sender=sender,
            topic_id=None,
            is_rpc=True,
            cancellation_token=token,
            message_id=message_id if isinstance(message_id, str) else str(req.id),
        )
        with continued(trace_context_from(req.params)):
            with self._trace_helper.trace_block(
                "process", agent.id, parent=None, extraAttributes={"message_type": payload.data_type}
            ):
                with MessageHandlerContext.populate_context(agent.id):
                    response = await agent.on_message(message, ctx=ctx)
        if response is None:
            return {"payload": None}
        return {"payload": wire.payload_to_wire(self._codec.encode(response))}

    def _on_event(self, event: wire.Event) -> None:
        self._spawn(self._deliver_event(event))

    async def _deliver_event(self, event: wire.Event) -> None:
        attributes = event.attributes
        try:
            recipient = wire.event_agent(attributes, wire.EXT_RECIPIENT)
            if recipient is None:
                raise FrameError(ErrorCode.INVALID_REQUEST, "An event from the host needs 'agrecipient'.")
            sender = wire.event_agent(attributes, wire.EXT_SENDER)
            payload = wire.event_payload(attributes)
            message = self._codec.decode(payload)
            agent = await self._get_agent(recipient)
            ctx = MessageContext(
                sender=sender,
                topic_id=TopicId(event.topic_type, event.topic_source),
                is_rpc=False,
                cancellation_token=CancellationToken(),
                message_id=str(attributes["id"]),
            )
            with continued(trace_context_from(attributes)):
                with self._trace_helper.trace_block(
                    "process", agent.id, parent=None, extraAttributes={"message_type": payload.data_type}
                ):
                    with MessageHandlerContext.populate_context(agent.id):
                        await agent.on_message(message, ctx=ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            # As on the in-process runtime, a failing event handler is logged and does not
            # affect other subscribers or the publisher.
            self._log.exception("Error handling event %s on topic %s", attributes.get("id"), event.topic_type)

    # -- agents -----------------------------------------------------------------------

    async def register_factory(
        self,
        type: str | AgentType,
        agent_factory: Callable[[], T | Awaitable[T]],
        *,
        expected_class: type[T] | None = None,
    ) -> AgentType:
        """Register a factory for an agent type served by this worker.

        Works before and after :meth:`start`; after start it returns once the host has
        the type. A rejected registration leaves nothing behind.

        Raises:
            ValueError: This worker already registered the type.
            AgentTypeConflictError: Another worker of the host serves the type (a ``ValueError``).
        """
        agent_type = AgentType(type) if isinstance(type, str) else type
        if agent_type.type in self._factories:
            raise ValueError(f"Agent with type {agent_type} already exists.")

        async def factory_wrapper() -> T:
            maybe_agent = agent_factory()
            agent = await maybe_agent if inspect.isawaitable(maybe_agent) else maybe_agent
            if expected_class is not None and not issubclass(builtin_type(agent), expected_class):
                raise ValueError(
                    f"Factory registered using the wrong type: expected {expected_class.__name__}, "
                    f"got {builtin_type(agent).__name__}"
                )
            return agent

        self._factories[agent_type.type] = factory_wrapper
        await self._register_type_with_host(agent_type.type)
        return agent_type

    async def register_agent_instance(self, agent_instance: Agent, agent_id: AgentId) -> AgentId:
        """Register an existing agent instance under ``agent_id``; see :meth:`register_factory`.

        Raises:
            ValueError: An agent with this id already exists here, or the type is served by a
                factory or by instances of another class.
            AgentTypeConflictError: Another worker of the host serves the type.
        """
        if agent_id in self._agents:
            raise ValueError(f"Agent with id {agent_id} already exists.")
        new_type = agent_id.type not in self._factories
        if new_type:
            self._factories[agent_id.type] = _instance_only_factory
            self._instance_types[agent_id.type] = builtin_type(agent_instance)
            await self._register_type_with_host(agent_id.type)
        else:
            if self._factories[agent_id.type] is not _instance_only_factory:
                raise ValueError("Agent factories and agent instances cannot be registered to the same type.")
            if self._instance_types[agent_id.type] is not builtin_type(agent_instance):
                raise ValueError("Agent instances must be the same object type.")
        try:
            await agent_instance.bind_id_and_runtime(id=agent_id, runtime=self)
        except BaseException:
            if new_type:
                self._factories.pop(agent_id.type, None)
                self._instance_types.pop(agent_id.type, None)
                self._forget_on_host(agent_id.type)
            raise
        self._agents[agent_id] = agent_instance
        return agent_id

    async def _register_type_with_host(self, agent_type: str) -> None:
        try:
            if self._connection_open:
                await self._control(Method.REGISTER_AGENT_TYPE, {"type": agent_type})
            else:
                self._require_not_lost()
        except BaseException:
            self._factories.pop(agent_type, None)
            self._instance_types.pop(agent_type, None)
            self._forget_on_host(agent_type)
            raise

    def _require_not_lost(self) -> None:
        """Before start, changes wait for start(); once the connection is gone they cannot reach the host."""
        if self._state in (_State.DISCONNECTED, _State.STOPPED):
            raise HostConnectionError(
                f"The runtime is {self._state.value}: the host cannot be told of this change."
            )

    def _forget_on_host(self, agent_type: str) -> None:
        """Undo a registration the host may have accepted (after a cancel or a local failure)."""
        if self._connection_open:
            assert self._connection is not None
            _, answer = self._connection.start_call(Method.UNREGISTER_AGENT_TYPE, {"type": agent_type})
            answer.add_done_callback(_consume)

    async def _get_agent(self, agent_id: AgentId) -> Agent:
        agent = self._agents.get(agent_id)
        if agent is not None:
            return agent
        factory = self._factories.get(agent_id.type)
        if factory is None:
            raise AgentNotFoundError(
                f"Agent type '{agent_id.type}' is not registered on this worker.",
                code=ErrorCode.AGENT_NOT_FOUND,
            )
        with AgentInstantiationContext.populate_context((self, agent_id)):
            agent = await factory()
        self._agents[agent_id] = agent
        return agent

    async def try_get_underlying_agent_instance(self, id: AgentId, type: type[T] = Agent) -> T:  # type: ignore[assignment]
        """The agent object itself, for an agent served by this worker.

        Raises:
            LookupError: This worker does not serve ``id.type``.
            TypeError: The agent is not an instance of ``type``.
        """
        if id.type not in self._factories:
            raise LookupError(f"Agent with name {id.type} not found on this worker.")
        agent = await self._get_agent(id)
        if not isinstance(agent, type):
            raise TypeError(
                f"Agent with name {id.type} is not of type {type.__name__}. "
                f"It is of type {builtin_type(agent).__name__}"
            )
        return agent

    async def get(
        self, id_or_type: AgentId | AgentType | str, /, key: str = "default", *, lazy: bool = True
    ) -> AgentId:
        """The id of an agent of this worker; with ``lazy=False`` the agent is created now."""
        return await get_impl(id_or_type=id_or_type, key=key, lazy=lazy, instance_getter=self._get_agent)

    # -- state ------------------------------------------------------------------------

    async def save_state(self) -> Mapping[str, Any]:
        """The state of every agent instantiated on this worker, keyed by ``str(agent_id)``."""
        return {
            str(agent_id): dict(await agent.save_state()) for agent_id, agent in list(self._agents.items())
        }

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Load state saved by :meth:`save_state` into this worker's agents (created as needed)."""
        for agent_id_str, agent_state in state.items():
            agent_id = AgentId.from_str(agent_id_str)
            if agent_id.type in self._factories:
                await (await self._get_agent(agent_id)).load_state(agent_state)

    async def _remote(self, method: str, agent: AgentId, extra: JsonObject | None = None) -> Any:
        params: JsonObject = {"recipient": wire.agent_id_to_wire(agent)}
        params.update(extra or {})
        connection = self._live_connection()
        return await connection.call(method, params, timeout=self._call_timeout)

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        """Metadata of an agent on this worker or, through the host, on any other."""
        if agent.type in self._factories:
            return (await self._get_agent(agent)).metadata
        reply = await self._remote(Method.AGENT_METADATA, agent)
        return cast(AgentMetadata, reply["metadata"])

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        """Saved state of an agent on this worker or, through the host, on any other."""
        if agent.type in self._factories:
            return await (await self._get_agent(agent)).save_state()
        reply = await self._remote(Method.AGENT_SAVE_STATE, agent)
        return cast(Mapping[str, Any], reply["state"])

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        """Load state into an agent on this worker or, through the host, on any other."""
        if agent.type in self._factories:
            await (await self._get_agent(agent)).load_state(state)
            return
        await self._remote(Method.AGENT_LOAD_STATE, agent, {"state": dict(state)})

    # -- subscriptions ----------------------------------------------------------------

    async def add_subscription(self, subscription: Subscription) -> None:
        """Add a subscription to the host, for an agent type served by any worker.

        Works before :meth:`start` too (the subscription is sent on start).

        Raises:
            SubscriptionError: A subscription with the same id or the same match exists
                (a ``ValueError`` saying it "already exists").
            TypeError: The subscription is not a ``TypeSubscription`` (``DefaultSubscription``
                included) or a ``TypePrefixSubscription``: only those can be sent to the host.
        """
        body = _subscription_to_wire(subscription)
        # Once connected, the host checks for duplicates: the local copy can be stale, since
        # any worker may remove a subscription.
        if not self._connection_open:
            for existing in self._subscriptions.values():
                if existing.id == subscription.id or existing == subscription:
                    raise SubscriptionError(
                        f"Subscription already exists: id {existing.id!r}.",
                        code=ErrorCode.SUBSCRIPTION_EXISTS,
                    )
        previous = self._subscriptions.get(subscription.id)
        previous_sent = subscription.id in self._subscriptions_sent
        self._require_not_lost()
        self._subscriptions[subscription.id] = subscription
        if self._connection_open:
            self._subscriptions_sent.add(subscription.id)
            try:
                await self._control(Method.ADD_SUBSCRIPTION, {"subscription": body})
            except BaseException:
                # A rejected subscription leaves the local record as it was.
                if previous is None:
                    self._subscriptions.pop(subscription.id, None)
                else:
                    self._subscriptions[subscription.id] = previous
                if not previous_sent:
                    self._subscriptions_sent.discard(subscription.id)
                raise

    async def remove_subscription(self, id: str) -> None:
        """Remove a subscription by id, whichever worker added it.

        Raises:
            SubscriptionError: No subscription has this id (a ``ValueError``).
        """
        self._require_not_lost()
        if self._connection_open:
            await self._control(Method.REMOVE_SUBSCRIPTION, {"id": id})
        elif id not in self._subscriptions:
            raise SubscriptionError(
                f"Subscription does not exist: id {id!r}.", code=ErrorCode.SUBSCRIPTION_NOT_FOUND
            )
        self._subscriptions.pop(id, None)
        self._subscriptions_sent.discard(id)

    def add_message_serializer(
        self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]
    ) -> None:
        """Register one serializer or a list of them for the message types this worker exchanges."""
        self._codec.add(serializer)


builtin_type = type


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a fire-and-forget call's outcome so asyncio does not warn about it."""
    if not future.cancelled():
        future.exception()


def _error_data(exc: BaseException) -> JsonObject:
    """What a caller learns of a remote failure: the exception type, its message and the traceback."""
    return {
        "type": builtin_type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(builtin_type(exc), exc, exc.__traceback__)),
    }


async def _instance_only_factory() -> Agent:
    raise RuntimeError(
        "Agent factory was invoked for an agent instance that was not registered. This is likely due to "
        "the agent type being incorrectly subscribed to a topic. If this exception occurs when publishing "
        "a message to the DefaultTopicId, then it is likely that `skip_class_subscriptions` needs to be "
        "turned off when registering the agent."
    )


def _subscription_to_wire(subscription: Subscription) -> JsonObject:
    if isinstance(subscription, TypeSubscription):
        return wire.subscription_to_wire(
            "type", subscription.id, subscription.agent_type, subscription.topic_type
        )
    if isinstance(subscription, TypePrefixSubscription):
        return wire.subscription_to_wire(
            "type_prefix", subscription.id, subscription.agent_type, subscription.topic_type_prefix
        )
    raise TypeError(
        f"{builtin_type(subscription).__name__} cannot be sent to the host: use TypeSubscription, "
        "DefaultSubscription or TypePrefixSubscription."
    )
