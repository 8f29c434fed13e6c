"""A2AAgent: an autogen-core agent that forwards what it receives to a remote A2A agent.

Everything A2A goes through the official SDK (``a2a-sdk``): the card through
``A2ACardResolver``, the calls through the ``Client`` its ``ClientFactory`` makes, the
streamed task through ``append_artifact_to_task``. This module decides only what AutoGen
sees: which A2A context an agent id uses, what a reply becomes (``_parts``), what an error
becomes (``_errors``) and how a cancellation reaches the remote task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, cast

import httpx
from a2a.client import (
    A2ACardResolver,
    Client,
    ClientCallContext,
    ClientCallInterceptor,
    ClientConfig,
    ClientFactory,
)
from a2a.helpers import get_message_text
from a2a.server.tasks.task_manager import append_artifact_to_task
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    Message,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.errors import A2AError as SdkError
from autogen_core import BaseAgent, MessageContext

from ._errors import A2AAgentError, A2ATimeoutError, error_from_sdk
from ._parts import ReplyTypeError, from_parts, to_parts

__all__ = ["A2AAgent"]

_log = logging.getLogger("autogen_http_runtime.a2a")

#: Seconds to wait for the remote agent to accept a cancellation before giving up on it.
CANCEL_TIMEOUT = 5.0
#: Seconds to wait for a TCP (and TLS) connection to the remote agent.
CONNECT_TIMEOUT = 10.0

_FINAL_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
        TaskState.TASK_STATE_INPUT_REQUIRED,
        TaskState.TASK_STATE_AUTH_REQUIRED,
    }
)


class A2AAgent(BaseAgent):
    """Forwards each message it receives to a remote A2A agent and returns the agent's reply.

    Register it like any agent; AutoGen agents then call the remote agent by ``AgentId``::

        await A2AAgent.register(runtime, "weather", lambda: A2AAgent("https://weather.example"))
        reply = await runtime.send_message("Paris tomorrow?", AgentId("weather", "alice"))

    Each agent id holds one A2A context: its first call lets the remote agent open one, and
    later calls send that ``contextId`` back, so the remote agent sees one conversation per
    agent id (``save_state`` / ``load_state`` keep it). What a message becomes on the wire,
    and what a reply becomes, is in ``_parts`` (and docs/a2a.md): a ``str`` is a text part,
    a dataclass or Pydantic model a data part; a text reply comes back as ``str``, a data
    reply as its JSON value, or as ``output_type`` when one is given.

    A remote error, a failed task or a reply that does not fit ``output_type`` raises
    :class:`A2AAgentError` in the handler, so the caller gets it (through a distributed
    runtime: as ``RemoteAgentError`` naming it). Cancelling the call (``ctx.cancellation_token``)
    sends ``CancelTask`` for the remote task, once the task's id is known: with streaming,
    from the first event; without it, never (the request is abandoned instead).

    Args:
        agent: The remote agent: its base URL (its card is read from
            ``<url>/.well-known/agent-card.json``), the URL of its card (ending in ``.json``),
            or its ``AgentCard``.
        description: This agent's description; by default the card's, or names the URL.
        output_type: What to turn each reply into (``str``, ``bytes``, a Pydantic model, a
            dataclass, any type Pydantic validates); ``None`` returns what the parts hold.
        httpx_client: The HTTP client for the card and the calls; the agent neither
            configures nor closes it. By default it makes its own, with no read timeout
            (an agent may think for long) and closes it in :meth:`close`.
        headers: HTTP headers sent with every request, the card's included.
        token: A bearer token: ``Authorization: Bearer <token>`` on every request.
        streaming: Call ``SendStreamingMessage`` when the card says the agent streams (the
            default), else ``SendMessage``.
        timeout: Seconds a call may take in all; then its remote task is cancelled and
            :class:`A2ATimeoutError` raised. ``None``: no limit.
        interceptors: The SDK's ``ClientCallInterceptor`` s for every call, e.g.
            ``a2a.client.AuthInterceptor``.
    """

    def __init__(
        self,
        agent: str | AgentCard,
        *,
        description: str | None = None,
        output_type: Any = None,
        httpx_client: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        streaming: bool = True,
        timeout: float | None = None,
        interceptors: Sequence[ClientCallInterceptor] = (),
    ) -> None:
        if isinstance(agent, AgentCard):
            self._card: AgentCard | None = agent
            self._url: str | None = None
            self._where = repr(agent.name or "(unnamed)")
            default_description = agent.description or f"The A2A agent {agent.name}."
        else:
            self._card = None
            self._url = agent
            self._where = agent
            default_description = f"The A2A agent at {agent}."
        super().__init__(description if description is not None else default_description)
        self._output_type = output_type
        self._http = httpx_client
        self._owns_http = httpx_client is None
        self._headers = dict(headers or {})
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._streaming = streaming
        self._timeout = timeout
        self._interceptors = list(interceptors)
        self._client: Client | None = None
        self._context_id: str | None = None
        self._connecting = asyncio.Lock()
        self._first_call = asyncio.Lock()

    @property
    def card(self) -> AgentCard | None:
        """The remote agent's card: as given, or once read (at the first call)."""
        return self._card

    @property
    def context_id(self) -> str | None:
        """The A2A context this agent id's calls share; ``None`` before the first reply."""
        return self._context_id

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        # A task of its own, so that the cancellation token cancels this call and nothing
        # else, even when it fires after the handler returned.
        call = asyncio.ensure_future(self._call(message))
        ctx.cancellation_token.link_future(call)
        return await call

    async def save_state(self) -> Mapping[str, Any]:
        return {"context_id": self._context_id}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        context_id = state.get("context_id")
        self._context_id = context_id if isinstance(context_id, str) and context_id else None

    async def close(self) -> None:
        """Release the SDK client, and the HTTP client when this agent made it."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self._owns_http and self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    # -- one call ---------------------------------------------------------------------

    async def _call(self, message: Any) -> Any:
        if self._timeout is None:
            return await self._exchange(message)
        try:
            return await asyncio.wait_for(self._exchange(message), self._timeout)
        except asyncio.TimeoutError as exc:
            if isinstance(exc, A2AAgentError):
                raise
            raise A2ATimeoutError(
                f"A2A agent {self._where}: no answer within {self._timeout} s.", reason="TIMEOUT"
            ) from exc

    async def _exchange(self, message: Any) -> Any:
        if self._context_id is None:
            # The first call opens the context; calls made meanwhile wait to share it.
            async with self._first_call:
                if self._context_id is None:
                    return await self._send(message)
        return await self._send(message)

    async def _send(self, message: Any) -> Any:
        client = await self._connect()
        request = SendMessageRequest(message=self._request_message(message))
        reply = _Reply()
        try:
            try:
                events = cast(
                    "AsyncGenerator[StreamResponse, None]",
                    client.send_message(request, context=self._call_context()),
                )
                async with contextlib.aclosing(events):
                    async for event in events:
                        reply.add(event)
                        if reply.context_id:
                            self._context_id = reply.context_id
            except asyncio.CancelledError:
                if reply.task_id is not None and not reply.finished:
                    await self._cancel_remote(client, reply.task_id)
                raise
        except SdkError as exc:
            raise error_from_sdk(exc, self._where) from exc
        return reply.value(self._output_type, self._where)

    def _request_message(self, message: Any) -> Message:
        request = Message()
        if isinstance(message, Message):
            request.CopyFrom(message)  # e.g. with a task_id, to answer an input-required task
        else:
            request.parts.extend(to_parts(message))
        request.role = Role.ROLE_USER
        if not request.message_id:
            request.message_id = str(uuid.uuid4())
        if self._context_id is not None and not request.context_id:
            request.context_id = self._context_id
        return request

    async def _cancel_remote(self, client: Client, task_id: str) -> None:
        try:
            await asyncio.wait_for(
                client.cancel_task(CancelTaskRequest(id=task_id), context=self._call_context()),
                CANCEL_TIMEOUT,
            )
        except (SdkError, asyncio.TimeoutError) as exc:
            # It may have ended meanwhile; the caller has been told of the cancellation anyway.
            _log.debug("A2A agent %s: cancelling task %s failed: %r", self._where, task_id, exc)

    def _call_context(self) -> ClientCallContext | None:
        if not self._headers:
            return None
        return ClientCallContext(service_parameters=dict(self._headers))

    # -- the SDK client ---------------------------------------------------------------

    async def _connect(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._connecting:
            if self._client is None:
                if self._http is None:
                    self._http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT))
                card = self._card if self._card is not None else await self._resolve_card(self._http)
                factory = ClientFactory(ClientConfig(streaming=self._streaming, httpx_client=self._http))
                try:
                    self._client = factory.create(card, interceptors=list(self._interceptors))
                except ValueError as exc:
                    raise A2AAgentError(
                        f"A2A agent {self._where}: its card offers no interface this client speaks ({exc}).",
                        reason="NO_COMPATIBLE_TRANSPORT",
                    ) from exc
                self._card = card
            return self._client

    async def _resolve_card(self, http: httpx.AsyncClient) -> AgentCard:
        assert self._url is not None
        # A URL ending in .json is the card's own; "/" makes the resolver read it as it is.
        card_path = "/" if self._url.split("?", 1)[0].endswith(".json") else None
        resolver = A2ACardResolver(http, self._url)
        try:
            return await resolver.get_agent_card(
                relative_card_path=card_path,
                http_kwargs={"headers": dict(self._headers)} if self._headers else None,
            )
        except SdkError as exc:
            raise error_from_sdk(exc, self._where) from exc


class _Reply:
    """What one call got back: a Message, or a Task built up from the streamed events."""

    def __init__(self) -> None:
        self.message: Message | None = None
        self.task: Task | None = None

    @property
    def task_id(self) -> str | None:
        return self.task.id if self.task is not None and self.task.id else None

    @property
    def context_id(self) -> str:
        source = self.message if self.message is not None else self.task
        return source.context_id if source is not None else ""

    @property
    def finished(self) -> bool:
        return self.message is not None or (self.task is not None and self.task.status.state in _FINAL_STATES)

    def add(self, event: StreamResponse) -> None:
        kind = event.WhichOneof("payload")
        if kind == "message":
            self.message = event.message
        elif kind == "task":
            self.task = Task()
            self.task.CopyFrom(event.task)
        elif kind == "status_update":
            update = event.status_update
            self._task(update.task_id, update.context_id).status.CopyFrom(update.status)
        elif kind == "artifact_update":
            artifact = event.artifact_update
            append_artifact_to_task(self._task(artifact.task_id, artifact.context_id), artifact)

    def _task(self, task_id: str, context_id: str) -> Task:
        if self.task is None:  # a server that streams updates without the Task first
            self.task = Task(id=task_id, context_id=context_id)
        return self.task

    def value(self, output_type: Any, where: str) -> Any:
        """The reply as ``output_type``.

        Raises:
            A2AAgentError: The task did not complete, or the reply does not fit ``output_type``.
        """
        if self.message is not None:
            parts = list(self.message.parts)
        elif self.task is not None:
            status = self.task.status
            if status.state != TaskState.TASK_STATE_COMPLETED:
                state = TaskState.Name(status.state)
                said = get_message_text(status.message) if status.HasField("message") else ""
                raise A2AAgentError(
                    f"A2A agent {where}: task {self.task.id} ended {state}" + (f": {said}" if said else "."),
                    reason=state,
                    task_id=self.task.id,
                )
            parts = [part for artifact in self.task.artifacts for part in artifact.parts]
            if not parts and status.HasField("message"):
                parts = list(status.message.parts)
        else:
            raise A2AAgentError(f"A2A agent {where} answered nothing.", reason="INVALID_AGENT_RESPONSE")
        try:
            return from_parts(parts, output_type)
        except ReplyTypeError as exc:
            raise A2AAgentError(
                f"A2A agent {where}: {exc}", reason="INVALID_AGENT_RESPONSE", task_id=self.task_id
            ) from exc
