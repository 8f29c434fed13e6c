"""The server-side facts of docs/a2a-notes.md, checked end to end against a2a-sdk 1.3.0.

A stand-in for the host: per agent type, an Agent Card, a DefaultRequestHandler and the
SDK's two endpoints, reached through two catch-all routes of a FastAPI APIRouter; bearer
auth on the JSON-RPC route, the identity handed to the SDK; then the SDK's own client (and
raw JSON-RPC) calls it. Run: .venv/bin/python docs/a2a_notes_check.py (prints ok).
"""

import asyncio
import logging
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import httpx
import uvicorn
from a2a.auth.user import User
from a2a.client import ClientConfig, create_client
from a2a.client.errors import A2AClientError, AgentCardResolutionError
from a2a.helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import DefaultServerCallContextBuilder, create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    CancelTaskRequest,
    HTTPAuthSecurityScheme,
    Message,
    Part,
    Role,
    SecurityRequirement,
    SecurityScheme,
    SendMessageRequest,
    StreamResponse,
    StringList,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from starlette.responses import Response

logging.getLogger("a2a").addHandler(logging.NullHandler())  # it logs executor failures with tracebacks
TOKENS = {"t-alice": "alice"}  # stands for the host's BearerTokens: token -> identity
CANCELS: list[str] = []


async def call_agent(agent_type: str, key: str, caller: str, text: str) -> str:
    """Stands for runtime.send_message(input, AgentId(agent_type, key), cancellation_token=...)."""
    if text == "boom":
        raise ValueError("kaboom")
    if text == "wait":
        await asyncio.Event().wait()
    return f"{agent_type}/{key} for {caller}: {text.upper()}"


class TypeExecutor(AgentExecutor):
    def __init__(self, agent_type: str) -> None:
        self.agent_type = agent_type

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        if not text:  # bad input: raised before any Task, the client gets JSON-RPC -32602
            raise InvalidParamsError(message="expected a text part")
        # The SDK made both ids if the client sent none: context_id is the AgentId key.
        assert context.message is not None and context.task_id and context.context_id
        await event_queue.enqueue_event(new_task_from_user_message(context.message))  # task mode
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        caller = context.call_context.user.user_name
        try:
            reply = await call_agent(self.agent_type, context.context_id, caller, text)
        except asyncio.CancelledError:  # CancelTask: executor.cancel() ran, now execute() is cancelled
            CANCELS.append("execute cancelled")
            raise
        except Exception as exc:  # the agent's exception: the task ends FAILED, saying why
            await updater.failed(updater.new_agent_message([new_text_part(f"{type(exc).__name__}: {exc}")]))
            return
        await updater.add_artifact([new_text_part(reply)], name="reply")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        CANCELS.append("executor.cancel")
        assert context.task_id and context.context_id
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


class Identity(User):
    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self._name


class IdentityContextBuilder(DefaultServerCallContextBuilder):
    """The identity the host's auth found becomes the SDK's user: the executor reads it, and
    InMemoryTaskStore keys tasks by it (its default owner_resolver)."""

    def build_user(self, request: Request) -> User:
        return Identity(request.state.identity)


async def require_bearer(request: Request) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or token not in TOKENS:
        raise HTTPException(401, "A bearer token is required.", {"WWW-Authenticate": "Bearer"})
    request.state.identity = TOKENS[token]


@dataclass
class TypeEndpoints:
    handler: DefaultRequestHandler
    card: Callable[[Request], Awaitable[Response]]  # the SDK's card endpoint
    rpc: Callable[[Request], Awaitable[Response]]  # the SDK's JSON-RPC endpoint


class A2ATypes:
    """Per agent type: a card, a DefaultRequestHandler and the SDK's two endpoints for them."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.types: dict[str, TypeEndpoints] = {}

    def add(self, agent_type: str, description: str) -> None:
        url = f"{self.base_url}/a2a/{agent_type}"
        card = AgentCard(
            name=agent_type,
            description=description,
            version="0.1.0",
            # 1.0 first (the SDK client prefers it); the 0.3 entry adds the legacy fields for 0.3 clients.
            supported_interfaces=[
                AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
                AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="0.3"),
            ],
            capabilities=AgentCapabilities(streaming=True),
            default_input_modes=["text/plain", "application/json"],
            default_output_modes=["text/plain", "application/json"],
            skills=[AgentSkill(id=agent_type, name=agent_type, description=description, tags=["autogen"])],
            security_schemes={
                "bearer": SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="Bearer"))
            },
            security_requirements=[SecurityRequirement(schemes={"bearer": StringList()})],
        )
        handler = DefaultRequestHandler(
            agent_executor=TypeExecutor(agent_type), task_store=InMemoryTaskStore(), agent_card=card
        )
        [card_route] = create_agent_card_routes(card, card_url="/")
        [rpc_route] = create_jsonrpc_routes(
            handler, rpc_url="/", context_builder=IdentityContextBuilder(), enable_v0_3_compat=True
        )
        self.types[agent_type] = TypeEndpoints(handler, card_route.endpoint, rpc_route.endpoint)

    async def remove(self, agent_type: str) -> None:
        await self.types.pop(agent_type).handler.aclose()  # cancels its running executions

    def router(self) -> APIRouter:
        router = APIRouter()

        def lookup(agent_type: str) -> TypeEndpoints:
            if (entry := self.types.get(agent_type)) is None:
                raise HTTPException(404, f"No A2A agent type {agent_type!r}.")
            return entry

        @router.get("/a2a/{agent_type}/.well-known/agent-card.json")  # public
        async def card(agent_type: str, request: Request) -> Response:
            return await lookup(agent_type).card(request)

        @router.post("/a2a/{agent_type}", dependencies=[Depends(require_bearer)])
        async def rpc(agent_type: str, request: Request) -> Response:
            return await lookup(agent_type).rpc(request)

        return router


def user_message(text: str) -> SendMessageRequest:
    return SendMessageRequest(message=Message(role=Role.ROLE_USER, message_id=text, parts=[Part(text=text)]))


async def check(base: str, a2a_types: A2ATypes) -> None:
    url = f"{base}/a2a/upper"
    async with httpx.AsyncClient(headers={"Authorization": "Bearer t-alice"}) as http:
        # The SDK's client: card from <url>/.well-known/agent-card.json, calls with the client's headers.
        send = await create_client(url, client_config=ClientConfig(httpx_client=http, streaming=False))
        [event] = [e async for e in send.send_message(user_message("hi"))]
        assert event.task.status.state == TaskState.TASK_STATE_COMPLETED
        key = event.task.context_id  # a new context: the AgentId key
        assert event.task.artifacts[0].parts[0].text == f"upper/{key} for alice: HI"

        stream = await create_client(url, client_config=ClientConfig(httpx_client=http))
        kinds = [e.WhichOneof("payload") async for e in stream.send_message(user_message("hi"))]
        assert kinds == ["task", "artifact_update", "status_update"]

        [event] = [e async for e in send.send_message(user_message("boom"))]
        assert event.task.status.state == TaskState.TASK_STATE_FAILED
        assert event.task.status.message.parts[0].text == "ValueError: kaboom"
        no_text = SendMessageRequest(
            message=Message(role=Role.ROLE_USER, message_id="r", parts=[Part(raw=b"?")])
        )
        try:
            [_ async for _ in send.send_message(no_text)]
            raise AssertionError("no error")
        except InvalidParamsError as exc:
            assert exc.message == "expected a text part"

        # Streaming: the task (and its id) is the first event.
        events = cast("AsyncGenerator[StreamResponse]", stream.send_message(user_message("wait")))
        first = await anext(events)
        cancelled = await stream.cancel_task(CancelTaskRequest(id=first.task.id))
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
        assert CANCELS == ["executor.cancel", "execute cancelled"]
        await events.aclose()

        await a2a_types.remove("upper")
        try:
            [_ async for _ in send.send_message(user_message("late"))]
            raise AssertionError("no error")
        except A2AClientError as exc:
            assert exc.message.startswith("HTTP Error 404")
        await send.close()
        await stream.close()

    async with httpx.AsyncClient() as raw:  # not one the SDK's ClientFactory has seen: see below
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "message/send",
            "params": {
                "message": {
                    "role": "user",
                    "messageId": "m",
                    "kind": "message",
                    "parts": [{"kind": "text", "text": "old"}],
                }
            },
        }
        auth = {"Authorization": "Bearer t-alice"}
        assert (await raw.post(url, json=body)).status_code == 401  # auth before the type lookup
        assert (await raw.post(url, json=body, headers=auth)).status_code == 404  # removed above
        a2a_types.add("upper", "Upper-cases text.")
        # A 0.3 client: 0.3 method names, no A2A-Version header. A 1.0 name without it fails.
        reply = (await raw.post(url, json=body, headers=auth)).json()
        assert reply["result"]["status"]["state"] == "completed"
        body["method"] = "SendMessage"
        assert (await raw.post(url, json=body, headers=auth)).json()["error"]["code"] == -32009
        card = (await raw.get(f"{url}/.well-known/agent-card.json")).json()
        assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"] == {"scheme": "Bearer"}
        assert card["securityRequirements"] == [{"schemes": {"bearer": {}}}]
        assert card["security"] == [{"bearer": []}] and card["url"] == url  # 0.3 fields
    try:
        await create_client(f"{base}/a2a/nobody")
        raise AssertionError("no error")
    except AgentCardResolutionError as exc:
        assert exc.status_code == 404


async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    a2a_types = A2ATypes(base)
    app = FastAPI()  # stands for the host's app
    app.include_router(a2a_types.router())
    a2a_types.add("upper", "Upper-cases text.")  # types come and go after the app is built
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await check(base, a2a_types)
    finally:
        for agent_type in list(a2a_types.types):
            await a2a_types.remove(agent_type)
        server.should_exit = True
        await serving
    print("ok")  # noqa: T201


asyncio.run(main())
