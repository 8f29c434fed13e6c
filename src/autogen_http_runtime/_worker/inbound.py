"""What the host sends a worker: calls to its agents and events for them, each in a task.

Every call gets an answer on the connection it came in on, whatever its handler does; an
event handler's failure is logged and touches nothing else, as on the in-process runtime.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Coroutine
from typing import Any

from autogen_core import (
    Agent,
    AgentId,
    CancellationToken,
    MessageContext,
    MessageHandlerContext,
    TopicId,
    UnknownPayload,
)

from .._exceptions import AgentNotFoundError, ErrorCode, HostConnectionError, MessageTooLargeError
from .._logging import OncePerKind, call_extra
from .._protocol import json_codec as _json
from .._protocol import wire
from .._protocol.errors import remote_error_data
from .._protocol.wire import MessageError, Method, RequestId
from .agents import LocalAgents
from .connection import HostConnection
from .durable import AgentStates
from .handled import HANDLED, RUN, HandledEvents
from .serialization import PayloadCodec, unknown_type, why_undecodable
from .tracing import RuntimeTracer, continued, handler_attributes, trace_context_from


class Inbound:
    """Serves the calls and events the host delivers to one worker's agents."""

    def __init__(
        self,
        agents: LocalAgents,
        codec: PayloadCodec,
        tracer: RuntimeTracer,
        logger: logging.Logger,
        *,
        name: str = "",
        states: AgentStates | None = None,
    ) -> None:
        self._agents = agents
        #: Durable agents' states (``persist_agent_state``), or ``None``.
        self.states = states
        self._codec = codec
        self._tracer = tracer
        self._log = logger
        #: The worker's name as its callers' errors give it.
        self._named = f" '{name}'" if name else ""
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Calls being served, by connection and request id.
        self._serving: dict[tuple[HostConnection, RequestId], CancellationToken] = {}
        #: The token of each call's task: a call whose token is cancelled has nobody to answer.
        self._call_tokens: dict[asyncio.Task[Any], CancellationToken] = {}
        #: Set once the runtime itself cancels the handlers (see :meth:`stop`): why, for their callers.
        self._stop_reason: str | None = None
        #: (what was wrong, type name) pairs of payloads already warned about: later ones log at DEBUG.
        self._bad_payloads = OncePerKind(logger, logging.WARNING, kinds=_MAX_WARNED)
        #: While :meth:`finish` waits: done when what it waits for may have changed (a call
        #: cancelled, the connection closed) besides a handler ending.
        self._changed: asyncio.Future[None] | None = None
        #: At-least-once: the events each agent handled, and the acknowledgements.
        self.handled = HandledEvents()

    def connection_closed(self, connection: HostConnection) -> None:
        """Answers can no longer reach their callers: tell the handlers still running."""
        for key in [key for key in self._serving if key[0] is connection]:
            self._serving.pop(key).cancel()
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    async def finish(
        self, connection: HostConnection, grace: float, stoppers: Collection[asyncio.Task[Any]] = ()
    ) -> None:
        """Let the handlers running now finish for up to ``grace`` seconds, answering their
        callers on ``connection``; then cancel those still running (see :meth:`stop`).

        Ends early if ``connection`` closes: no answer could reach a caller any more. Not
        waited for: a call its caller gave up on (cancelled), and a handler among
        ``stoppers`` (the tasks awaiting the stop), which waits for us.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if waiting := len(self._awaited(stoppers)):
            self._log.info("Stopping: waiting up to %g s for %d handler(s) to finish", grace, waiting)
        try:
            # A call still on the wire when the host stopped routing here may start meanwhile.
            while (running := self._awaited(stoppers)) and not connection.closed:
                if (left := deadline - loop.time()) <= 0:
                    break
                self._changed = changed = loop.create_future()
                await asyncio.wait({*running, changed}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._changed = None
        if running := self._awaited(stoppers):
            why = (
                "the connection to the host closed"
                if connection.closed
                else f"stop_grace of {grace:g} s ran out"
            )
            self._log.warning("Cancelling %d handler(s) still running: %s", len(running), why)
            await self.stop(why)

    def _awaited(self, stoppers: Collection[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
        """The handlers whose end a stop waits for (see :meth:`finish`)."""
        return {
            task
            for task in self._tasks
            if task not in stoppers
            and not ((token := self._call_tokens.get(task)) is not None and token.is_cancelled())
        }

    async def stop(self, why: str = "") -> None:
        """Cancel every handler still running and wait (up to 5 s) for them to end.

        The calls among them are answered -32002: the worker stopped before the handler
        finished (``why``, if given, says more).
        """
        tasks = list(self._tasks)
        self._stop_reason = why
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    def _spawn(self, connection: HostConnection, coro: Coroutine[Any, Any, object]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = connection.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._call_tokens.pop(task, None)

    def request(self, connection: HostConnection, req: wire.Request) -> None:
        token = CancellationToken()
        self._serving[(connection, req.id)] = token
        self._call_tokens[self._spawn(connection, self._serve_request(connection, req, token))] = token

    def cancel(self, connection: HostConnection, request_id: RequestId) -> None:
        token = self._serving.get((connection, request_id))
        if token is not None:
            token.cancel()
            self._wake()  # a stop waiting for this handler need not any more

    async def _serve_request(
        self, connection: HostConnection, req: wire.Request, token: CancellationToken
    ) -> None:
        # Answers go back on the connection the call came in on: after a reconnection,
        # the new host never heard of it, and may even reuse its id for another call.
        def reply_error(code: int, message: str, data: Any = None) -> None:
            try:
                connection.send_error(req.id, code, message, data)
            except HostConnectionError:
                self._log.debug(
                    "Could not report error for call %r: the connection is closed",
                    req.id,
                    extra=call_extra(req.id, req.params.get("traceparent")),
                )

        try:
            value = await self._handle_request(connection, req, token)
        except MessageError as exc:
            reply_error(exc.code, exc.message)
        except AgentNotFoundError as exc:
            reply_error(ErrorCode.AGENT_NOT_FOUND, exc.message)
        except asyncio.CancelledError:
            reply_error(*self._cancelled(req, token))
            raise
        except BaseException as exc:
            # Whatever the handler raised, its caller must hear of it, or it would wait forever.
            reply_error(ErrorCode.REMOTE_ERROR, f"{type(exc).__name__}: {exc}", remote_error_data(exc))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            try:
                connection.send_result(req.id, value)
            except HostConnectionError:
                pass
            except MessageTooLargeError as exc:
                reply_error(ErrorCode.MESSAGE_TOO_LARGE, f"The reply is too large: {exc}")
            except Exception as exc:
                reply_error(ErrorCode.REMOTE_ERROR, f"{type(exc).__name__}: {exc}", remote_error_data(exc))
        finally:
            self._serving.pop((connection, req.id), None)

    def _cancelled(self, req: wire.Request, token: CancellationToken) -> tuple[int, str]:
        """The error for a call whose handler was cancelled: who cancelled it, if we can tell."""
        recipient = _recipient(req)
        if self._stop_reason is not None:  # stop() cancelled it
            why = f" ({self._stop_reason})" if self._stop_reason else ""
            return (
                ErrorCode.WORKER_DISCONNECTED,
                f"The worker{self._named} serving {recipient} stopped before the handler finished{why}.",
            )
        if token.is_cancelled():  # its caller gave up (the host forgets the call: nobody reads this)
            return ErrorCode.CANCELLED, f"The call to {recipient} was cancelled."
        # Cancelled from outside the runtime: asyncio.run() ending on Ctrl-C cancels every task.
        return (
            ErrorCode.CANCELLED,
            f"The call to {recipient} was cancelled on the worker{self._named} serving it "
            "(it is shutting down).",
        )

    async def _handle_request(
        self, connection: HostConnection, req: wire.Request, token: CancellationToken
    ) -> Any:
        recipient = wire.required_agent_id(req.params, "recipient")
        if req.method == Method.SEND:
            return await self._handle_send(connection, req, recipient, token)
        if self.states is not None and req.method in _ROUTED_TO_AGENT:
            await self.states.activate(connection, await self._agents.get(recipient))
        if req.method == Method.AGENT_METADATA:
            # Values from user code go through readable(): see _json.py.
            return {"metadata": _json.readable(dict(await self._agents.metadata(recipient)))}
        if req.method == Method.AGENT_SAVE_STATE:
            return {"state": _json.readable(dict(await self._agents.save_agent(recipient)))}
        if req.method == Method.AGENT_LOAD_STATE:
            state = req.params.get("state")
            if not isinstance(state, dict):
                raise MessageError(ErrorCode.INVALID_PARAMS, "'state' must be an object.")
            await self._agents.load_agent(recipient, state)
            if self.states is not None:  # the state it was given is its state now, anywhere
                await self.states.save(connection, await self._agents.get(recipient))
            return {}
        raise MessageError(ErrorCode.METHOD_NOT_FOUND, f"Method '{req.method}' not found.")

    async def _handle_send(
        self, connection: HostConnection, req: wire.Request, recipient: AgentId, token: CancellationToken
    ) -> Any:
        sender = wire.agent_id_from_wire(req.params, "sender", optional=True)
        payload = wire.payload_from_wire(req.params.get("payload"))
        message_id = req.params.get("message_id")
        if recipient.type not in self._agents:
            await self._agents.get(recipient)  # raises AgentNotFoundError: that comes first
        message = self._decode(payload)
        if isinstance(message, UnknownPayload):
            # A call has a caller to tell, where autogen-core would hand the agent an
            # UnknownPayload and answer None (docs/agentchat.md, "How a receiver finds the class").
            unknown = unknown_type(payload, f"the worker{self._named} serving {recipient}")
            self._warn_once("unknown", payload.data_type, "Refused a call: %s", unknown)
            raise MessageError(ErrorCode.INVALID_PARAMS, f"{unknown}; the call was not delivered.")
        agent = await self._agents.get(recipient)
        if self.states is not None:
            await self.states.activate(connection, agent)
        ctx = MessageContext(
            sender=sender,
            topic_id=None,
            is_rpc=True,
            cancellation_token=token,
            message_id=message_id if isinstance(message_id, str) else str(req.id),
        )
        trace = trace_context_from(req.params)
        with continued(trace):
            attributes = self._attributes(agent, sender, ctx, message)
            with self._tracer.span("process", agent.id, link=trace, attributes=attributes):
                with MessageHandlerContext.populate_context(agent.id):
                    response = await agent.on_message(message, ctx=ctx)
        if self.states is not None:  # sent before the reply, on the same connection
            await self.states.save(connection, agent)
        if response is None:
            return {"payload": None}
        return {"payload": wire.payload_to_wire(self._codec.encode(response))}

    def _decode(self, payload: wire.Payload) -> Any:
        """The message a payload carries (autogen-core's ``UnknownPayload`` for an unknown type).

        Raises:
            MessageError: ``INVALID_PARAMS``: the data does not fit its type (why, in short).
        """
        try:
            return self._codec.decode(payload)
        except Exception as exc:
            raise MessageError(
                ErrorCode.INVALID_PARAMS,
                f"The payload's data does not fit message type {payload.data_type!r}: {why_undecodable(exc)}",
            ) from None

    def _warn_once(self, problem: str, data_type: str, what: str, *args: object) -> None:
        """Log a bad payload at WARNING the first time for its problem and type, at DEBUG after."""
        self._bad_payloads.log((problem, data_type), what, *args)

    def _attributes(
        self, agent: Agent, sender: AgentId | None, ctx: MessageContext, message: Any
    ) -> dict[str, str] | None:
        """autogen-core's attributes of a ``process`` span, made only when spans are."""
        if not self._tracer.active:
            return None
        return handler_attributes(
            self._codec.registry,
            sender=sender,
            recipient=agent.id,
            recipient_class=type(agent).__name__,
            context=ctx,
            message=message,
        )

    def event(self, connection: HostConnection, event: wire.Event) -> None:
        delivery = event.attributes.get(wire.EXT_DELIVERY)
        if delivery is None:
            self._spawn(connection, self._deliver_event(connection, event))
            return
        # At least once: acknowledged once handled; a copy its agent handled already is skipped.
        self.handled.use(connection)
        try:
            recipient = wire.event_agent(event.attributes, wire.EXT_RECIPIENT)
        except MessageError:
            recipient = None
        verdict = RUN if recipient is None else self.handled.start(recipient, str(event.attributes["id"]))
        if verdict == RUN:
            self._spawn(connection, self._deliver_stored(connection, event, str(delivery), recipient))
        elif verdict == HANDLED:
            self.handled.ack(str(delivery))

    async def _deliver_stored(
        self, connection: HostConnection, event: wire.Event, delivery: str, recipient: AgentId | None
    ) -> None:
        outcome: str | None = None
        finished = False  # cancelled (the worker stops): no acknowledgement, delivered again
        try:
            outcome = await self._deliver_event(connection, event)
            finished = True
        finally:
            if recipient is not None:
                self.handled.finish(recipient, str(event.attributes["id"]), finished and outcome is None)
            if finished:
                self.handled.ack(delivery, outcome)

    async def _deliver_event(self, connection: HostConnection, event: wire.Event) -> str | None:
        """Run the recipient's handler; returns why it failed, or ``None`` once it returned."""
        attributes = event.attributes
        try:
            recipient = wire.event_agent(attributes, wire.EXT_RECIPIENT)
            if recipient is None:
                raise MessageError(ErrorCode.INVALID_REQUEST, "An event from the host needs 'agrecipient'.")
            sender = wire.event_agent(attributes, wire.EXT_SENDER)
            payload = wire.event_payload(attributes)
            try:
                message = self._decode(payload)
            except MessageError as exc:
                what = "Dropped event %s on topic %s: %s"
                self._warn_once(
                    "undecodable", payload.data_type, what, attributes["id"], event.topic_type, exc
                )
                return exc.message
            if isinstance(message, UnknownPayload):
                # Nobody to answer: the agent gets the UnknownPayload, as on autogen-core's runtimes.
                what = "Event %s on topic %s: %s; its agent gets an UnknownPayload"
                self._warn_once(
                    "unknown",
                    payload.data_type,
                    what,
                    attributes["id"],
                    event.topic_type,
                    unknown_type(payload),
                )
            agent = await self._agents.get(recipient)
            if self.states is not None:
                await self.states.activate(connection, agent)
            ctx = MessageContext(
                sender=sender,
                topic_id=TopicId(event.topic_type, event.topic_source),
                is_rpc=False,
                cancellation_token=CancellationToken(),
                message_id=str(attributes["id"]),
            )
            trace = trace_context_from(attributes)
            with continued(trace):
                span_attributes = self._attributes(agent, sender, ctx, message)
                with self._tracer.span("process", agent.id, link=trace, attributes=span_attributes):
                    with MessageHandlerContext.populate_context(agent.id):
                        await agent.on_message(message, ctx=ctx)
            if self.states is not None:
                await self.states.save(connection, agent)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # As on the in-process runtime, a failing event handler is logged and does not
            # affect other subscribers or the publisher.
            self._log.exception(
                "Error handling event %s on topic %s",
                attributes.get("id"),
                event.topic_type,
                extra=call_extra(None, attributes.get("traceparent"), event_id=attributes.get("id")),
            )
            return f"{type(exc).__name__}: {exc}"[:500]
        return None


#: The routed methods other than ``send`` that reach an agent (activated first when durable).
_ROUTED_TO_AGENT = frozenset({Method.AGENT_METADATA, Method.AGENT_SAVE_STATE, Method.AGENT_LOAD_STATE})

#: Types warned about, at most: a peer sending random type names must not grow the set for ever.
_MAX_WARNED = 1000


def _recipient(req: wire.Request) -> str:
    """The agent a call is for, as ``type/key``, for its caller's error messages."""
    try:
        return str(wire.required_agent_id(req.params, "recipient"))
    except MessageError:
        return "its recipient"
