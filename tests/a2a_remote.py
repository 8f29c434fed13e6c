"""A real A2A server for the tests, built only from the A2A SDK's own server classes.

``DefaultRequestHandler`` + ``InMemoryTaskStore`` run :class:`Shouter`; the SDK's route
factories (``create_agent_card_routes``, ``create_jsonrpc_routes``) make the Starlette app,
served by uvicorn on a socket bound to 127.0.0.1 port 0. With a token, a small ASGI
middleware refuses every request but the card's without ``Authorization: Bearer <token>``,
and the card declares that bearer scheme.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from a2a.client import ClientCallInterceptor
from a2a.client.interceptors import AfterArgs, BeforeArgs
from a2a.helpers import (
    get_data_parts,
    get_text_parts,
    new_data_part,
    new_task_from_user_message,
    new_text_message,
    new_text_part,
)
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    Message,
    SecurityRequirement,
    SecurityScheme,
    StreamResponse,
    StringList,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class Shouter(AgentExecutor):
    """Replies to a text with a Message of it in upper case; to data ``{"content": word}`` with a
    completed Task whose artifact is the data ``{"content": WORD, "n": 3}``.

    Whatever the part, the word ``boom`` raises ValueError("kaboom"), ``fail`` ends the task
    FAILED saying "no can do", and ``wait`` starts a task that runs until it is cancelled.
    """

    def __init__(self) -> None:
        #: (context id, word) of every request, in order.
        self.seen: list[tuple[str, str]] = []
        #: Set when the SDK calls :meth:`cancel`, i.e. a CancelTask request arrived.
        self.cancelled = asyncio.Event()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None and context.task_id and context.context_id
        word, is_data = _word(context.message)
        self.seen.append((context.context_id, word))
        if word == "boom":
            raise ValueError("kaboom")
        if not is_data and word not in ("wait", "fail"):
            await event_queue.enqueue_event(new_text_message(word.upper(), context_id=context.context_id))
            return
        await event_queue.enqueue_event(new_task_from_user_message(context.message))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        if word == "wait":
            await updater.start_work()
            await asyncio.Event().wait()  # until the SDK cancels this coroutine
        if word == "fail":
            await updater.failed(updater.new_agent_message([new_text_part("no can do")]))
            return
        await updater.add_artifact([new_data_part({"content": word.upper(), "n": 3})], name="reply")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        self.cancelled.set()
        assert context.task_id and context.context_id
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def _word(message: Message) -> tuple[str, bool]:
    data = get_data_parts(message.parts)
    if data:
        value = data[0]
        return (str(value.get("content", "")) if isinstance(value, dict) else str(value)), True
    return "\n".join(get_text_parts(message.parts)), False


class TaskSeen(ClientCallInterceptor):
    """A client interceptor that tells when a streamed call has received its Task (and so the
    calling ``A2AAgent`` knows the task's id: it reads the event right after this hook)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def before(self, args: BeforeArgs) -> None:
        pass

    async def after(self, args: AfterArgs) -> None:
        if isinstance(args.result, StreamResponse) and args.result.HasField("task"):
            self.event.set()


class _BearerOnly:
    """Refuses (401) any request but the card's without the right bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].endswith("/agent-card.json"):
            if dict(scope["headers"]).get(b"authorization") != self._expected:
                refusal = JSONResponse({"error": "unauthorized"}, 401, {"WWW-Authenticate": "Bearer"})
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)


@dataclass
class RemoteAgent:
    """One running SDK server: its base URL (the card is under it), executor and handler."""

    url: str
    executor: Shouter
    handler: DefaultRequestHandler
    card: AgentCard
    _server: uvicorn.Server = field(repr=False)
    _socket: socket.socket = field(repr=False)
    _task: asyncio.Task[Any] | None = field(default=None, repr=False)

    async def stop(self) -> None:
        await self.handler.aclose()
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        await self._server.shutdown(sockets=[self._socket])


def make_card(url: str, *, streaming: bool, token: str | None) -> AgentCard:
    card = AgentCard(
        name="shouter",
        description="Shouts back what it is told.",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=[AgentSkill(id="shout", name="shout", description="Upper-cases text.", tags=["test"])],
    )
    if token is not None:
        scheme = SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="Bearer"))
        card.security_schemes["bearer"].CopyFrom(scheme)
        card.security_requirements.append(SecurityRequirement(schemes={"bearer": StringList()}))
    return card


async def start_remote(*, streaming: bool = True, token: str | None = None) -> RemoteAgent:
    """Serve a :class:`Shouter` on 127.0.0.1, an ephemeral port; ``stop()`` it when done."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    card = make_card(url + "/", streaming=streaming, token=token)
    executor = Shouter()
    handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
    routes = [*create_agent_card_routes(card), *create_jsonrpc_routes(handler, rpc_url="/")]
    middleware = [Middleware(_BearerOnly, token=token)] if token is not None else []
    app = Starlette(routes=routes, middleware=middleware)
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])  # accepting connections when this returns
    remote = RemoteAgent(url, executor, handler, card, server, sock)
    remote._task = asyncio.create_task(server.main_loop())
    return remote
