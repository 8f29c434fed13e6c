"""describe_agent_type: a worker's A2A skill reaches the host, is told again after a reconnection,
and goes with the type (unregistered, its worker stopped, its worker process killed)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from a2a.types import TaskState
from websockets.asyncio.client import ClientConnection, connect

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime
from autogen_http_runtime._constants import PROTOCOL_VERSION, WORKER_WS_PATH
from autogen_http_runtime._exceptions import ErrorCode
from autogen_http_runtime._host import views
from autogen_http_runtime._host.control import Control
from autogen_http_runtime._protocol.wire import MessageError

from .a2a_serving import Seen, client, serve_agents, stream, task_of, text
from .redis_server import free_port
from .test_processes import PROMPT, spawn
from .utils import SERIALIZERS, TIMEOUT, Upper, bounded


@pytest.fixture
async def host() -> AsyncIterator[HttpAgentServer]:
    server = HttpAgentServer("127.0.0.1", port=0, a2a=True)
    await bounded(server.start())
    try:
        yield server
    finally:
        await bounded(server.stop(grace=1))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
        yield client


def described(server: HttpAgentServer) -> list[str]:
    return list(views.a2a_skills(server.service.core))


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (every 10 ms, at most TIMEOUT seconds): a reconnection has no event to await."""

    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - a deadline poll: the reconnection signals nothing
            await asyncio.sleep(0.01)

    await bounded(poll())


# -- on the wire -------------------------------------------------------------------------------


async def call(ws: ClientConnection, request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
    answer: dict[str, Any] = json.loads(await bounded(ws.recv()))
    assert answer["id"] == request_id
    return answer


SKILL = {"name": "Upper", "description": "Upper-cases.", "input_type": "Text"}


async def test_describe_on_the_wire(host: HttpAgentServer) -> None:
    url = host.url.replace("http", "ws", 1) + WORKER_WS_PATH
    async with connect(url, open_timeout=TIMEOUT) as ws:
        await call(ws, 1, "hello", {"protocol": PROTOCOL_VERSION})
        refused = await call(ws, 2, "describe_agent_type", {"type": "upper", "a2a": SKILL})
        assert refused["error"]["code"] == ErrorCode.INVALID_PARAMS  # not registered by this worker
        assert "register it first" in refused["error"]["message"]
        assert (await call(ws, 3, "register_agent_type", {"type": "upper"}))["result"] == {}
        for bad, says in [
            ({**SKILL, "name": ""}, "'a2a.name' must be a non-empty string."),
            ({**SKILL, "input_schema": "{}"}, "'a2a.input_schema' must be a JSON Schema object."),
            ([SKILL], "'a2a' must be an object or null."),
        ]:
            answer = await call(ws, 4, "describe_agent_type", {"type": "upper", "a2a": bad})
            assert answer["error"] == {"code": ErrorCode.INVALID_PARAMS, "message": says}
        assert described(host) == []
        assert (await call(ws, 5, "describe_agent_type", {"type": "upper", "a2a": SKILL}))["result"] == {}
        skill = views.a2a_skill(host.service.core, "upper")
        assert skill is not None and (skill.name, skill.input_type, skill.version) == (
            "Upper",
            "Text",
            "1.0.0",
        )
        await call(ws, 6, "describe_agent_type", {"type": "upper", "a2a": None})  # taken back
        assert described(host) == []
        await call(ws, 7, "describe_agent_type", {"type": "upper", "a2a": SKILL})
        await call(ws, 8, "unregister_agent_type", {"type": "upper"})  # goes with the type
        assert described(host) == []
        await call(ws, 9, "register_agent_type", {"type": "upper"})
        await call(ws, 10, "describe_agent_type", {"type": "upper", "a2a": SKILL})
        assert described(host) == ["upper"]
    await until(lambda: described(host) == [])  # and with the connection


# -- a worker's skills -------------------------------------------------------------------------


async def test_a_skill_goes_when_its_worker_stops_and_not_to_the_next_one(
    host: HttpAgentServer, http: httpx.AsyncClient
) -> None:
    first = HttpWorkerAgentRuntime(host.url)
    first.add_message_serializer(SERIALIZERS)
    await bounded(first.start())
    await serve_agents(first, Seen())
    assert described(host) == ["shout", "till"]
    await bounded(first.stop())  # bye: the host forgets before stop() returns
    assert described(host) == []
    assert (await http.get(f"{host.url}/.well-known/agent-card.json")).status_code == 404

    second = HttpWorkerAgentRuntime(host.url)
    second.add_message_serializer(SERIALIZERS)
    await bounded(second.start())
    try:
        await Upper.register(second, "shout", Upper)  # the same type, not described by this worker
        assert described(host) == []
        assert (await http.get(f"{host.url}/a2a/shout/.well-known/agent-card.json")).status_code == 404
    finally:
        await bounded(second.stop())


async def test_the_worker_describes_again_after_reconnecting(http: httpx.AsyncClient) -> None:
    port = free_port()
    first = HttpAgentServer("127.0.0.1", port=port, a2a=True)
    await bounded(first.start())
    worker = HttpWorkerAgentRuntime(first.url)
    worker.add_message_serializer(SERIALIZERS)
    try:
        await bounded(worker.start())
        await serve_agents(worker, Seen())
        await bounded(first.stop(grace=0))  # the worker loses its host and reconnects
        second = HttpAgentServer("127.0.0.1", port=port, a2a=True)
        await bounded(second.start())
        try:
            await until(lambda: described(second) == ["shout", "till"])
            task = await task_of(await client(http, f"{second.url}/a2a/shout"), text("back"))
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
        finally:
            await bounded(second.stop(grace=1))
    finally:
        await bounded(worker.stop())


async def test_a_host_without_describe_agent_type_still_serves_the_type(
    host: HttpAgentServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A host from before this method answers -32601: the worker says so once and goes on."""

    def unknown(self: Control, session: object, req: Any) -> None:
        raise MessageError(ErrorCode.METHOD_NOT_FOUND, f"Method '{req.method}' not found.", req.id)

    monkeypatch.setattr(Control, "describe_type", unknown)
    worker = HttpWorkerAgentRuntime(host.url)
    worker.add_message_serializer(SERIALIZERS)
    await bounded(worker.start())
    try:
        with caplog.at_level(logging.WARNING, "autogen_http_runtime.worker"):
            await serve_agents(worker, Seen())
        refused = [r.getMessage() for r in caplog.records if "not offered over A2A" in r.getMessage()]
        assert len(refused) == 2  # shout and till
        assert described(host) == []
        assert "shout" in {view.agent_type for view in views.agent_type_views(host.service.core)}
    finally:
        await bounded(worker.stop())


async def test_a_killed_worker_process_fails_its_a2a_task_and_loses_its_card(
    host: HttpAgentServer, http: httpx.AsyncClient
) -> None:
    async with spawn("worker", host.url, "blocker", "--a2a") as child:
        await child.expect("READY")
        assert described(host) == ["blocker"]
        sdk = await client(http, f"{host.url}/a2a/blocker", streaming=True)
        running = stream(sdk, text("stuck"))
        assert (await running.next()).WhichOneof("payload") == "task"
        await child.expect("started stuck")
        child.proc.kill()
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        last = await running.next()
        while last.WhichOneof("payload") != "status_update" or last.status_update.status.state in (
            TaskState.TASK_STATE_WORKING,
        ):
            last = await running.next()
        assert loop.time() - killed_at < PROMPT
        assert last.status_update.status.state == TaskState.TASK_STATE_FAILED
        assert "disconnected" in last.status_update.status.message.parts[0].text
        assert await bounded(child.proc.wait()) == -signal.SIGKILL
    assert described(host) == []
    assert (await http.get(f"{host.url}/a2a/blocker/.well-known/agent-card.json")).status_code == 404
