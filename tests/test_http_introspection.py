"""GET /v1/agents, /v1/subscriptions and /v1/workers, and the whole HTTP API mounted in a
user's FastAPI app behind its own middleware (auth, CORS) under a prefix."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
import uvicorn
from autogen_core import AgentId, CancellationToken, TypePrefixSubscription, TypeSubscription
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.client import connect

from autogen_http_runtime import HttpAgentServer, HttpAgentService, HttpWorkerAgentRuntime
from autogen_http_runtime._constants import WORKER_WS_PATH

from .conftest import WorkerFactory
from .test_http_rpc import Stalling, send
from .utils import SERIALIZERS, TIMEOUT, Recorder, Text, Upper, bounded, connected_workers, owners


@pytest.fixture
async def http(server: HttpAgentServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as client:
        yield client


async def test_agents_lists_each_type_and_its_worker(
    http: httpx.AsyncClient, server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    empty = {"agent_types": {}, "workers": 0, "replicas": False, "types": []}
    assert (await http.get("/v1/agents")).json() == empty
    first, second = await make_worker(), await make_worker()
    await Upper.register(first, "upper", Upper)
    await second.register_factory("other", Upper)
    core = server.service.core
    other, upper = owners(core)["other"].worker_id, owners(core)["upper"].worker_id
    assert (await http.get("/v1/agents")).json() == {
        "agent_types": {"other": other, "upper": upper},
        "workers": 2,
        "replicas": False,
        "types": [
            {"type": "other", "replicas": [{"worker_id": other, "name": "", "calls": 0, "agent_ids": None}]},
            {"type": "upper", "replicas": [{"worker_id": upper, "name": "", "calls": 0, "agent_ids": None}]},
        ],
    }


async def test_subscriptions_lists_each_with_the_worker_that_added_it(
    http: httpx.AsyncClient, server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    first, second = await make_worker(), await make_worker()
    await first.add_subscription(TypeSubscription("news", "reader", id="b-exact"))
    await second.add_subscription(TypePrefixSubscription("news.", "reader", id="a-prefix"))
    await second.add_subscription(TypeSubscription("gone", "reader", id="c-gone"))
    await second.remove_subscription("c-gone")
    ids = {s.worker_id for s in connected_workers(server.service.core)}
    listing = (await http.get("/v1/subscriptions")).json()["subscriptions"]
    owner = {entry["id"]: entry.pop("worker_id") for entry in listing}
    assert listing == [
        {"id": "a-prefix", "kind": "type_prefix", "agent_type": "reader", "topic": "news."},
        {"id": "b-exact", "kind": "type", "agent_type": "reader", "topic": "news"},
    ]
    assert owner["a-prefix"] != owner["b-exact"] and set(owner.values()) == ids

    await bounded(second.stop())  # its subscriptions go with it
    assert [s["id"] for s in (await http.get("/v1/subscriptions")).json()["subscriptions"]] == ["b-exact"]


async def test_workers_lists_connected_workers_with_their_traffic(
    http: httpx.AsyncClient, server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    before = time.time()
    serving = await make_worker(name="serving")
    calling = await make_worker(name="calling")
    started: asyncio.Queue[str] = asyncio.Queue()
    await Stalling.register(serving, "stalling", lambda: Stalling(started, asyncio.Queue()))
    await Upper.register(serving, "upper", Upper)

    url = server.url.replace("http", "ws", 1) + WORKER_WS_PATH
    async with connect(url, open_timeout=TIMEOUT):  # connected but silent: not a worker yet
        first = (await http.get("/v1/workers")).json()
    assert first["protocol"] == "autogen-http/1"
    assert [w["name"] for w in first["workers"]] == ["serving", "calling"]  # oldest first
    entry = first["workers"][0]
    assert (
        entry["agent_types"] == ["stalling", "upper"] and entry["subscriptions"] == 2
    )  # register() adds them
    assert (
        before - 1
        <= datetime.fromisoformat(entry["connected_at"].replace("Z", "+00:00")).timestamp()
        <= time.time()
    )
    assert entry["instance"] and entry["max_message_size"] > 0

    for i in range(3):
        assert await bounded(calling.send_message(Text(f"{i}"), AgentId("upper", "k"))) == Text(f"{i}")
    token = CancellationToken()
    stalled = asyncio.ensure_future(
        calling.send_message(Text("wait"), AgentId("stalling", "k"), cancellation_token=token)
    )
    await bounded(started.get())
    http_call = asyncio.ensure_future(http.post("/v1/rpc", json=send(1, "stalling", "wait too")))
    await bounded(started.get())
    during = {w["name"]: w for w in (await http.get("/v1/workers")).json()["workers"]}
    assert set(during) == {"serving", "calling"}, "an HTTP caller is not a worker"
    assert during["serving"]["calls_serving"] == 2 and during["calling"]["calls_in_flight"] == 1
    # Totals since they connected, answered or not, next to those in flight.
    assert (during["calling"]["calls_made"], during["calling"]["calls_served"]) == (4, 0)
    assert (during["serving"]["calls_made"], during["serving"]["calls_served"]) == (0, 5)
    grown, old = during["calling"], {w["name"]: w for w in first["workers"]}["calling"]
    for counter in ("messages_in", "messages_out", "bytes_in", "bytes_out"):
        assert grown[counter] >= old[counter] + 3, counter
    token.cancel()
    http_call.cancel()
    for pending in (stalled, http_call):
        with contextlib.suppress(asyncio.CancelledError):
            await pending


# -- mounted in a user's app -------------------------------------------------------------------

TOKEN = "Bearer let-me-in"
ORIGIN = "https://ui.example"


class RequireToken:
    """The user's own auth: every HTTP request and WebSocket needs the bearer token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != TOKEN.encode():
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = json.dumps({"detail": "unauthorized"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    config = uvicorn.Config(
        app,
        lifespan="off",
        ws="websockets-sansio",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    config.load()
    user_server = uvicorn.Server(config)
    user_server.lifespan = config.lifespan_class(config)
    await bounded(user_server.startup(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        await bounded(user_server.shutdown(sockets=[sock]))


async def test_the_http_api_mounted_behind_a_users_auth_and_cors_under_a_prefix() -> None:
    app = FastAPI()
    service = HttpAgentService()
    app.include_router(service.router, prefix="/api/agents")

    @app.middleware("http")  # a BaseHTTPMiddleware in the chain as well
    async def tag(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["x-served-by"] = "user-app"
        return response

    app.add_middleware(RequireToken)
    app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN], allow_methods=["*"], allow_headers=["*"])
    paths = set(app.openapi()["paths"])
    assert {"/api/agents/v1/events", "/api/agents/v1/rpc", "/api/agents/v1/workers"} <= paths

    async with serve(app) as port:
        base = f"http://127.0.0.1:{port}/api/agents"
        worker = HttpWorkerAgentRuntime(base, headers={"Authorization": TOKEN})
        worker.add_message_serializer(SERIALIZERS)
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        started: asyncio.Queue[str] = asyncio.Queue()
        cancelled: asyncio.Queue[str] = asyncio.Queue()
        try:
            await bounded(worker.start())
            await Upper.register(worker, "upper", Upper)
            await Recorder.register(worker, "recorder", lambda: Recorder(inbox))
            await Stalling.register(worker, "stalling", lambda: Stalling(started, cancelled))
            await worker.add_subscription(TypeSubscription("greetings", "recorder"))

            async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT, trust_env=False) as anonymous:
                assert (await anonymous.get("/v1/workers")).status_code == 401
                assert (await anonymous.post("/v1/rpc", json=send(1, "upper", "x"))).status_code == 401
                preflight = await anonymous.options(
                    "/v1/rpc",
                    headers={
                        "Origin": ORIGIN,
                        "Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": "content-type, x-deadline",
                    },
                )
                assert preflight.status_code == 200
                assert preflight.headers["access-control-allow-origin"] == ORIGIN

            headers = {"Authorization": TOKEN, "Origin": ORIGIN}
            async with httpx.AsyncClient(
                base_url=base, headers=headers, timeout=TIMEOUT, trust_env=False
            ) as http:
                called = await http.post(
                    "/v1/rpc", json=send(1, "upper", "mounted"), headers={"X-Deadline": "5"}
                )
                assert called.json()["result"]["payload"]["data"] == {"content": "MOUNTED"}
                assert called.headers["x-served-by"] == "user-app"
                assert called.headers["access-control-allow-origin"] == ORIGIN
                event = {
                    "specversion": "1.0",
                    "id": "m1",
                    "source": "s",
                    "type": "greetings",
                    "agmsgtype": "Text",
                }
                published = await http.post(
                    "/v1/events",
                    headers={"content-type": "application/cloudevents+json"},
                    json={**event, "data": {"content": "m"}},
                )
                assert published.json() == {"ids": ["m1"], "delivered": 1}
                assert (await bounded(inbox.get()))[1] == Text("m")
                assert [w["agent_types"] for w in (await http.get("/v1/workers")).json()["workers"]] == [
                    ["recorder", "stalling", "upper"]
                ]
                assert len((await http.get("/v1/subscriptions")).json()["subscriptions"]) == 4
                assert (await http.get("/v1/agents")).json()["workers"] == 1

                # A caller that hangs up, through both middleware styles: its call is cancelled.
                call = asyncio.ensure_future(http.post("/v1/rpc", json=send(2, "stalling", "left")))
                assert await bounded(started.get()) == "left"
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call
                assert await bounded(cancelled.get()) == "left"
            assert not [s for s in service.core.sessions.values() if s.local]
        finally:
            await bounded(worker.stop())
            await bounded(service.close(grace=1.0))
