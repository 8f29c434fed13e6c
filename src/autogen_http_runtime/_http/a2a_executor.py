"""An A2A request to an agent type, carried out as a call to an agent through the routing core.

The A2A SDK's ``DefaultRequestHandler`` runs :class:`AgentTypeExecutor` for each
``SendMessage`` (and ``message/send``) to one agent type's endpoint. Each request becomes a
``send`` to ``AgentId(agent_type, contextId)`` made by an in-process caller
(:class:`~.local.AgentCall`) with the A2A caller's identity, so the access policy, the rate
limit and cancellation apply as for ``POST /v1/rpc``.

Bad input is refused before any task exists, with an A2A error (``InvalidParamsError``),
by :class:`InputReader`, which the SDK runs before the executor; so is a ``contextId`` too
long to be an agent key. Otherwise the request is an A2A task: rejected when the core
refuses the call (the rate limit, no worker for the type now, the host shutting down),
completed with the reply as its artifact, failed saying why (the agent raised, the
deadline passed, the worker left), or cancelled by ``CancelTask``, which cancels the
handler's cancellation token.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from a2a.auth.user import User
from a2a.helpers import new_raw_part, new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext, SimpleRequestContextBuilder
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.routes import DefaultServerCallContextBuilder
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import Message, Part, SendMessageRequest, Task, TaskState
from a2a.utils.errors import InternalError, InvalidParamsError
from autogen_core import JSON_DATA_CONTENT_TYPE
from jsonschema import exceptions as schema_errors
from jsonschema import validators
from starlette.requests import Request

from .._host import views
from .._host.core import RoutingCore
from .._host.security import ANONYMOUS, Identity
from .._protocol import json_codec as _json
from .._protocol import wire
from .._protocol.descriptions import A2ASkill
from .._protocol.wire import NO_VALUE, JsonObject, Method
from ..a2a._parts import ReplyTypeError, to_parts, value_for
from .admission import request_identity
from .local import AgentCall

#: The longest A2A ``contextId`` taken as an agent key.
MAX_CONTEXT_ID: Final = 256
#: Where the route leaves an ``X-Deadline`` it read, on ``request.state`` and in the call state.
DEADLINE_STATE: Final = "autogen_http_a2a_deadline"
#: Where :class:`InputReader` leaves the ``send`` params it made, in the call state.
PARAMS_STATE: Final = "autogen_http_a2a_params"
#: Finished tasks one agent type's endpoint keeps for ``GetTask``; older ones are forgotten.
FINISHED_TASKS_KEPT: Final = 1000

_FINISHED = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
    }
)


class Caller(User):
    """The A2A caller, as the host authenticated it: the SDK's user, holding our identity."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    @property
    def is_authenticated(self) -> bool:
        return self.identity is not ANONYMOUS

    @property
    def user_name(self) -> str:
        return self.identity.name


class CallerContextBuilder(DefaultServerCallContextBuilder):
    """Hands the SDK the caller the host's admission found, and the deadline the route read.

    The task store keys tasks by the user's name, so one identity can neither read nor
    cancel another's tasks.
    """

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[DEADLINE_STATE] = getattr(request.state, DEADLINE_STATE, None)
        return context

    def build_user(self, request: Request) -> User:
        return Caller(request_identity(request))


class FinishedTaskLimit(InMemoryTaskStore):
    """The SDK's in-memory task store, keeping only the latest finished tasks: a host that
    serves A2A for months must not keep every task it ever ran."""

    def __init__(self, keep: int = FINISHED_TASKS_KEPT) -> None:
        super().__init__()
        self._keep = keep
        self._finished: dict[str, ServerCallContext] = {}  # task id -> its owner's context, oldest first

    async def save(self, task: Task, context: ServerCallContext) -> None:
        await super().save(task, context)
        if task.status.state in _FINISHED and task.id not in self._finished:
            self._finished[task.id] = context
            while len(self._finished) > self._keep:
                oldest = next(iter(self._finished))
                await self.delete(oldest, self._finished.pop(oldest))


class InputReader(SimpleRequestContextBuilder):
    """Turns an A2A message into the ``send`` an agent type's call is, before any task exists.

    The SDK builds each ``SendMessage``'s request context with it before it starts the
    executor, so what it raises is the client's JSON-RPC error, with no task and no
    executor failure logged: ``InvalidParamsError`` for input the agent cannot take.
    """

    def __init__(self, core: RoutingCore, agent_type: str, *, logger: logging.Logger) -> None:
        super().__init__()
        self._core = core
        self._agent_type = agent_type
        self._log = logger
        self._checker: tuple[A2ASkill, Any] | None = None  # (skill, its input schema's validator)

    async def build(
        self,
        context: ServerCallContext,
        params: SendMessageRequest | None = None,
        task_id: str | None = None,
        context_id: str | None = None,
        task: Task | None = None,
    ) -> RequestContext:
        request = await super().build(context, params, task_id, context_id, task)
        message, key = request.message, request.context_id
        assert message is not None and key and request.task_id  # made by the SDK when not sent
        skill = views.a2a_skill(self._core, self._agent_type)
        if skill is None:
            raise InternalError(message=f"Agent type {self._agent_type!r} is no longer offered over A2A.")
        if len(key) > MAX_CONTEXT_ID:
            raise InvalidParamsError(message=f"The contextId is longer than {MAX_CONTEXT_ID} characters.")
        context.state[PARAMS_STATE] = {
            "recipient": {"type": self._agent_type, "key": key},
            "sender": None,
            "message_id": message.message_id or request.task_id,
            "payload": self._payload(message, skill),
        }
        return request

    def _payload(self, message: Message, skill: A2ASkill) -> JsonObject:
        """The ``send`` payload the message's parts carry for the skill's input type.

        Raises:
            InvalidParamsError: The parts hold no such value.
        """
        try:
            value = value_for(message.parts, skill.input_schema, repr(skill.input_type))
        except ReplyTypeError as exc:
            raise InvalidParamsError(message=str(exc)) from None
        validator = self._validator(skill)
        if validator is not None:
            found = schema_errors.best_match(validator.iter_errors(value))  # type: ignore[no-untyped-call]
            if found is not None:
                where = "/".join(map(str, found.absolute_path))
                at = f" at {where!r}" if where else ""
                raise InvalidParamsError(message=f"Not a valid {skill.input_type!r}{at}: {found.message}")
        return {"data_type": skill.input_type, "data_content_type": JSON_DATA_CONTENT_TYPE, "data": value}

    def _validator(self, skill: A2ASkill) -> Any:
        """The validator of the skill's input schema (made once per description); ``None`` when
        there is no schema, or the worker sent one that is not a valid JSON Schema."""
        if self._checker is not None and self._checker[0] is skill:
            return self._checker[1]
        validator = None
        if skill.input_schema is not None:
            cls = validators.validator_for(skill.input_schema)
            try:
                cls.check_schema(skill.input_schema)
                validator = cls(skill.input_schema)
            except schema_errors.SchemaError as exc:
                self._log.warning(
                    "Agent type %r: its input schema is not a valid JSON Schema (%s); input is not checked",
                    self._agent_type,
                    exc.message,
                )
        self._checker = (skill, validator)
        return validator


class AgentTypeExecutor(AgentExecutor):
    """Carries out the A2A requests to one agent type's endpoint, read by :class:`InputReader`."""

    def __init__(self, core: RoutingCore, *, slow_consumer_timeout: float) -> None:
        self._core = core
        self._slow_consumer_timeout = slow_consumer_timeout

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message, task_id, context_id = context.message, context.task_id, context.context_id
        state = context.call_context.state
        assert message is not None and task_id and context_id and PARAMS_STATE in state
        caller = context.call_context.user
        identity = caller.identity if isinstance(caller, Caller) else ANONYMOUS
        # The task goes out first, so a streaming client learns its id and can cancel it.
        await event_queue.enqueue_event(
            new_task(task_id, context_id, TaskState.TASK_STATE_SUBMITTED, history=[message])
        )
        updater = TaskUpdater(event_queue, task_id, context_id)
        async with AgentCall(self._core, identity, slow_consumer_timeout=self._slow_consumer_timeout) as call:
            await call.start(Method.SEND, state[PARAMS_STATE])
            if call.refused is not None:  # the rate limit, no worker for the type now, shutting down
                await updater.reject(updater.new_agent_message([new_text_part(_error_text(call.refused))]))
                return
            await updater.start_work()
            # Cancelled here by CancelTask (after cancel() below ran) or the handler closing:
            # leaving the block cancels the call, and the handler's cancellation token.
            answer = await call.answer(state.get(DEADLINE_STATE))
        if "error" in answer:
            await updater.failed(updater.new_agent_message([new_text_part(_error_text(answer))]))
            return
        payload = answer.get("result", {}).get("payload")
        if payload is not None:
            data_type, parts = _reply_parts(payload)
            await updater.add_artifact(parts, name=data_type)
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id and context.context_id
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def _error_text(answer: JsonObject) -> str:
    """What the client is told of an error answer: its message (``"ValueError: kaboom"``, ...)."""
    error = answer.get("error")
    return str(error.get("message", "The call failed.")) if isinstance(error, dict) else "The call failed."


def _reply_parts(payload: Any) -> tuple[str, list[Part]]:
    """The reply's type name and the A2A parts for it: a JSON string is a text part, any other
    JSON value a data part, other content (protobuf, ...) a raw part of its media type."""
    reply = wire.payload_from_wire(payload)
    if reply.data_content_type != JSON_DATA_CONTENT_TYPE:
        return reply.data_type, [new_raw_part(reply.data, media_type=reply.data_content_type)]
    value = reply.value if reply.value is not NO_VALUE else _json.loads(reply.data)
    return reply.data_type, to_parts(value)
