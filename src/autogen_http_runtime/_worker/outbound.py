"""What a worker sends through its host: calls to agents elsewhere, and events."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, cast

from autogen_core import AgentId, AgentMetadata, CancellationToken, TopicId

from .._exceptions import CallTimeoutError
from .._protocol import json_codec as _json
from .._protocol import wire
from .._protocol.wire import JsonObject, Method
from .agents import LocalAgents
from .connection import HostConnection
from .durable import AgentStates
from .serialization import PayloadCodec
from .tracing import RuntimeTracer, current_trace_context, handler_attributes


class Link(Protocol):
    """What sending needs of the worker's link to its host (``Lifecycle`` provides it)."""

    async def ready(self, deadline: float | None = None) -> HostConnection: ...

    def live_connection(self) -> HostConnection | None: ...


class Outbound:
    """Sends calls and events on whatever connection the link has, with spans around them.

    Args:
        link: The worker's connection, waited for while it reconnects (``ready``), or as it
            is now (``live_connection``: whether the host has replicas).
        call_timeout: The default deadline of a call, in seconds; ``None``: none.
        message_ids: Where fresh message ids come from.
        states: Durable agents' states (``persist_agent_state``): an agent of this worker
            is activated before its metadata or state is read here, as through the host.
    """

    def __init__(
        self,
        agents: LocalAgents,
        codec: PayloadCodec,
        tracer: RuntimeTracer,
        link: Link,
        call_timeout: float | None,
        message_ids: Iterator[str],
        states: AgentStates | None = None,
    ) -> None:
        self._agents = agents
        self._codec = codec
        self._tracer = tracer
        self._ready = link.ready
        self._live = link.live_connection
        self._call_timeout = call_timeout
        self._message_ids = message_ids
        self._states = states

    async def send(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None,
        cancellation_token: CancellationToken | None,
        message_id: str | None,
        timeout: float | None,
    ) -> Any:
        """See ``HttpWorkerAgentRuntime.send_message``."""
        if cancellation_token is not None and cancellation_token.is_cancelled():
            raise asyncio.CancelledError("The cancellation token was already cancelled.")
        payload = self._codec.encode(message)
        connection, deadline = await self._connection_for_call(
            timeout if timeout is not None else self._call_timeout
        )
        sent: dict[str, str] = {}
        with self._tracer.span("create", recipient, payload.data_type):
            params: JsonObject = {
                "recipient": wire.agent_id_to_wire(recipient),
                "sender": None if sender is None else wire.agent_id_to_wire(sender),
                "message_id": message_id or next(self._message_ids),
                "payload": wire.payload_to_wire(payload),
            }
            # The 'create' span: the remote 'process' span's parent, and what it links to.
            created = current_trace_context()
            params.update(created)
            if deadline is not None:
                params["timeout"] = deadline
            with self._tracer.span("send", recipient, link=created):
                if created:
                    sent = current_trace_context()  # the 'ack' span links to this one
                request_id, future = connection.start_call(Method.SEND, params)
            if cancellation_token is not None:
                cancellation_token.link_future(future)
            reply = await connection.wait(Method.SEND, request_id, future, timeout=deadline)
        # As autogen-core's: named after the agent the answer goes to, the caller.
        with self._tracer.span("ack", sender, link=sent) as span:
            body = reply.get("payload") if isinstance(reply, dict) else None
            result = None if body is None else self._codec.decode(wire.payload_from_wire(body))
            if span is not None:
                caller_class = None  # as autogen-core's: the calling agent's class, when it is here
                if sender is not None and sender.type in self._agents:
                    caller_class = type(await self._agents.get(sender)).__name__
                span.set_attributes(
                    handler_attributes(
                        self._codec.registry,
                        sender=recipient,
                        recipient=sender,
                        recipient_class=caller_class,
                        context=None,
                        message=result,
                    )
                )
            return result

    async def _connection_for_call(self, deadline: float | None) -> tuple[HostConnection, float | None]:
        """The connection to send a call on, once it can take it, and what is then left of the
        call's deadline: waiting for a reconnect or a full socket buffer counts against it.

        Raises:
            CallTimeoutError: The deadline passed first.
        """
        if deadline is None or not math.isfinite(deadline):  # JSON has no Infinity: none, on the wire
            connection = await self._ready()
            await connection.drain()
            return connection, None
        loop = asyncio.get_running_loop()
        ends = loop.time() + deadline
        connection = await self._ready(deadline)
        try:
            await connection.drain(max(ends - loop.time(), 0.0))
        except asyncio.TimeoutError:
            raise CallTimeoutError(
                f"No answer within the call's deadline of {deadline} s: "
                "the connection to the host stayed too full to take the call."
            ) from None
        left = ends - loop.time()
        if left <= 0:
            raise CallTimeoutError(
                f"No answer within the call's deadline of {deadline} s: it passed while the call "
                "waited for the connection to the host."
            )
        return connection, left

    async def publish(
        self, message: Any, topic_id: TopicId, *, sender: AgentId | None, message_id: str | None
    ) -> None:
        """See ``HttpWorkerAgentRuntime.publish_message``."""
        if not topic_id.source or not topic_id.type:
            # CloudEvents require a non-empty 'type' and 'source'; fail here rather than at the host.
            raise ValueError(f"Cannot publish to {topic_id!r}: the topic type and source must not be empty.")
        payload = self._codec.encode(message)
        connection = await self._ready()
        await connection.drain()
        # autogen-core's names: 'create' where the message is made, 'publish' where it leaves.
        with self._tracer.span("create", topic_id, payload.data_type):
            created = current_trace_context()
            with self._tracer.span("publish", topic_id, link=created):
                connection.send_event(
                    wire.event(
                        event_id=message_id or next(self._message_ids),
                        topic_type=topic_id.type,
                        topic_source=topic_id.source,
                        payload=payload,
                        sender=sender,
                        trace=created,
                    )
                )

    async def call(self, method: str, agent: AgentId, extra: JsonObject | None = None) -> Any:
        """A routed call other than ``send`` (metadata, state) to ``agent``, wherever it is served."""
        params: JsonObject = {"recipient": wire.agent_id_to_wire(agent)}
        params.update(extra or {})
        connection, deadline = await self._connection_for_call(self._call_timeout)
        return await connection.call(method, params, timeout=deadline)

    # -- an agent's metadata and state: here when it lives here, else through the host --

    def _lives_here(self, agent: AgentId) -> bool:
        """Whether ``agent`` lives on this worker for sure: its type is served here, and no
        replica elsewhere may own it (with replicas, the host's placement decides)."""
        if agent.type not in self._agents:
            return False
        connection = self._live()
        return connection is None or not connection.replicas or agent in self._agents.instance_ids()

    async def _activated(self, agent: AgentId) -> None:
        """With durable agents: ``agent``, of this worker, holds its last saved state."""
        if self._states is not None:
            await self._states.activate(await self._ready(), await self._agents.get(agent))

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        if self._lives_here(agent):
            await self._activated(agent)
            return await self._agents.metadata(agent)
        return cast(AgentMetadata, (await self.call(Method.AGENT_METADATA, agent))["metadata"])

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        if self._lives_here(agent):
            await self._activated(agent)
            return await self._agents.save_agent(agent)
        return cast(Mapping[str, Any], (await self.call(Method.AGENT_SAVE_STATE, agent))["state"])

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        if self._lives_here(agent):
            await self._activated(agent)
            await self._agents.load_agent(agent, state)
            if self._states is not None:  # as through the host: the state it was given is saved
                await self._states.save(await self._ready(), await self._agents.get(agent))
            return
        await self.call(Method.AGENT_LOAD_STATE, agent, {"state": _json.readable(dict(state))})
