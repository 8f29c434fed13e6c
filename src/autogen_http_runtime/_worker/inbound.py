"""What the host sends a worker: calls to its agents and events for them, each in a task.

Every call gets an answer on the connection it came in on, whatever its handler does; an
event handler's failure is logged and touches nothing else, as on the in-process runtime.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Coroutine
from typing import Any

from autogen_core import Agent, AgentId, CancellationToken, MessageContext, MessageHandlerContext, TopicId

from .._exceptions import AgentNotFoundError, ErrorCode, HostConnectionError, MessageTooLargeError
from .._logging import call_extra
from .._protocol import json_codec as _json
from .._protocol import wire
from .._protocol.wire import JsonObject, MessageError, Method, RequestId
from .agents import LocalAgents
from .connection import HostConnection
from .serialization import PayloadCodec
from .tracing import RuntimeTracer, continued, handler_attributes, trace_context_from


class Inbound:
    """Serves the calls and events the host delivers to one worker's agents."""

    def __init__(
        self,
        agents: LocalAgents,
        codec: PayloadCodec,
        tracer: RuntimeTracer,
        logger: logging.Logger,
    ) -> None:
        self._agents = agents
        self._codec = codec
        self._tracer = tracer
        self._log = logger
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Calls being served, by connection and request id.
        self._serving: dict[tuple[HostConnection, RequestId], CancellationToken] = {}

    def connection_closed(self, connection: HostConnection) -> None:
        """Answers can no longer reach their callers: tell the handlers still running."""
        for key in [key for key in self._serving if key[0] is connection]:
            self._serving.pop(key).cancel()

    async def stop(self) -> None:
        """Cancel every handler still running and wait (up to 5 s) for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    def _spawn(self, connection: HostConnection, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = connection.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def request(self, connection: HostConnection, req: wire.Request) -> None:
        token = CancellationToken()
        self._serving[(connection, req.id)] = token
        self._spawn(connection, self._serve_request(connection, req, token))

    def cancel(self, connection: HostConnection, request_id: RequestId) -> None:
        token = self._serving.get((connection, request_id))
        if token is not None:
            token.cancel()

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
            value = await self._handle_request(req, token)
        except MessageError as exc:
            reply_error(exc.code, exc.message)
        except AgentNotFoundError as exc:
            reply_error(ErrorCode.AGENT_NOT_FOUND, exc.message)
        except asyncio.CancelledError:
            reply_error(ErrorCode.CANCELLED, "The call was cancelled.")
            raise
        except BaseException as exc:
            # Whatever the handler raised, its caller must hear of it, or it would wait forever.
            reply_error(ErrorCode.REMOTE_ERROR, f"{type(exc).__name__}: {exc}", _error_data(exc))
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
                reply_error(ErrorCode.REMOTE_ERROR, f"{type(exc).__name__}: {exc}", _error_data(exc))
        finally:
            self._serving.pop((connection, req.id), None)

    async def _handle_request(self, req: wire.Request, token: CancellationToken) -> Any:
        recipient = wire.required_agent_id(req.params, "recipient")
        if req.method == Method.SEND:
            return await self._handle_send(req, recipient, token)
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
            return {}
        raise MessageError(ErrorCode.METHOD_NOT_FOUND, f"Method '{req.method}' not found.")

    async def _handle_send(self, req: wire.Request, recipient: AgentId, token: CancellationToken) -> Any:
        sender = wire.agent_id_from_wire(req.params, "sender", optional=True)
        payload = wire.payload_from_wire(req.params.get("payload"))
        message_id = req.params.get("message_id")
        message = self._codec.decode(payload)
        agent = await self._agents.get(recipient)
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
        if response is None:
            return {"payload": None}
        return {"payload": wire.payload_to_wire(self._codec.encode(response))}

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
        self._spawn(connection, self._deliver_event(event))

    async def _deliver_event(self, event: wire.Event) -> None:
        attributes = event.attributes
        try:
            recipient = wire.event_agent(attributes, wire.EXT_RECIPIENT)
            if recipient is None:
                raise MessageError(ErrorCode.INVALID_REQUEST, "An event from the host needs 'agrecipient'.")
            sender = wire.event_agent(attributes, wire.EXT_SENDER)
            payload = wire.event_payload(attributes)
            message = self._codec.decode(payload)
            agent = await self._agents.get(recipient)
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
        except asyncio.CancelledError:
            raise
        except Exception:
            # As on the in-process runtime, a failing event handler is logged and does not
            # affect other subscribers or the publisher.
            self._log.exception(
                "Error handling event %s on topic %s",
                attributes.get("id"),
                event.topic_type,
                extra=call_extra(None, attributes.get("traceparent"), event_id=attributes.get("id")),
            )


def _error_data(exc: BaseException) -> JsonObject:
    """What a caller learns of a remote failure: the exception type, its message and the traceback."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
