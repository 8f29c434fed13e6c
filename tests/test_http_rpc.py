"""POST /v1/rpc: calling agents with JSON-RPC 2.0 over plain HTTP, on a real host.

Deadlines cancel the call on the serving worker, a client that hangs up leaves nothing
behind on the host, and every malformed request gets a precise JSON-RPC error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
from autogen_core import MessageContext, RoutedAgent, message_handler
from fastapi import FastAPI

from autogen_http_runtime import HttpAgentServer, HttpAgentService, HttpWorkerAgentRuntime

from .conftest import WorkerFactory
from .utils import SERIALIZERS, TIMEOUT, Recorder, Text, Upper, bounded

JsonObject = dict[str, Any]


class Stalling(RoutedAgent):
    """Answers 'fast' at once; anything else waits until the call is cancelled."""

    def __init__(self, started: asyncio.Queue[str], cancelled: asyncio.Queue[str]) -> None:
        super().__init__("stalls")
        self.started, self.cancelled = started, cancelled

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        if message.content == "fast":
            return Text("fast")
        self.started.put_nowait(message.content)
        stop = asyncio.Event()
        ctx.cancellation_token.add_callback(stop.set)
        await stop.wait()
        self.cancelled.put_nowait(message.content)
        return message


class Noted(RoutedAgent):
    """Keeps the last text it got and who sent it; that is its state."""

    def __init__(self) -> None:
        super().__init__("keeps notes")
        self.note = ""

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self.note = message.content
        return Text(str(ctx.sender))

    async def save_state(self) -> Mapping[str, Any]:
        return {"note": self.note}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.note = str(state["note"])


def send(request_id: Any, agent_type: str, content: str, **params: Any) -> JsonObject:
    body: JsonObject = {
        "jsonrpc": "2.0",
        "method": "send",
        "params": {
            "recipient": {"type": agent_type, "key": "k"},
            "payload": {"data_type": "Text", "data": {"content": content}},
            **params,
        },
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def content_of(answer: JsonObject) -> Any:
    payload = answer["result"]["payload"]
    return None if payload is None else payload["data"]["content"]


@pytest.fixture
async def http(server: HttpAgentServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as client:
        yield client


@pytest.fixture
async def stalls(make_worker: WorkerFactory) -> tuple[asyncio.Queue[str], asyncio.Queue[str]]:
    """Agent types 'upper', 'noted' and 'stalling' on one worker; the stalling agent's queues."""
    started: asyncio.Queue[str] = asyncio.Queue()
    cancelled: asyncio.Queue[str] = asyncio.Queue()
    worker = await make_worker()
    await Upper.register(worker, "upper", Upper)
    await Noted.register(worker, "noted", Noted)
    await Stalling.register(worker, "stalling", lambda: Stalling(started, cancelled))
    return started, cancelled


def local_sessions(server: HttpAgentServer) -> list[Any]:
    return [s for s in server.service.core.sessions.values() if s.local]


async def test_a_call_returns_the_agents_reply(http: httpx.AsyncClient, stalls: Any) -> None:
    answer = await http.post("/v1/rpc", json=send(1, "upper", "hi"))
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "payload": {
                "data_type": "Text",
                "data_content_type": "application/json",
                "data": {"content": "HI"},
            }
        },
    }
    assert content_of((await http.post("/v1/rpc", json=send("s", "upper", "none"))).json()) is None


async def test_remote_failures_are_json_rpc_errors(http: httpx.AsyncClient, stalls: Any) -> None:
    failed = (await http.post("/v1/rpc", json=send(1, "upper", "boom"))).json()
    assert failed["id"] == 1 and failed["error"]["code"] == -32003
    assert failed["error"]["data"]["type"] == "ValueError" and failed["error"]["data"]["message"] == "kaboom"
    missing = (await http.post("/v1/rpc", json=send(2, "nobody", "x"))).json()
    assert missing["id"] == 2 and missing["error"]["code"] == -32001


async def test_a_batch_answers_each_call_in_order_and_not_notifications(
    http: httpx.AsyncClient, make_worker: WorkerFactory, stalls: Any
) -> None:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    worker = await make_worker()
    await Recorder.register(worker, "recorder", lambda: Recorder(inbox))
    batch = [
        send("a", "upper", "one"),
        send(None, "recorder", "notified"),
        send(7, "nobody", "x"),
        send("a", "upper", "two"),  # ids are the caller's business, even repeated ones
        {
            "jsonrpc": "2.0",
            "id": 9,
            "method": "agent_metadata",
            "params": {"recipient": {"type": "noted", "key": "k"}},
        },
    ]
    answers = (await http.post("/v1/rpc", json=batch)).json()
    assert [a["id"] for a in answers] == ["a", 7, "a", 9]
    assert content_of(answers[0]) == "ONE" and content_of(answers[2]) == "TWO"
    assert answers[1]["error"]["code"] == -32001
    assert answers[3]["result"] == {"metadata": {"type": "noted", "key": "k", "description": "keeps notes"}}
    _, message, ctx = await bounded(inbox.get())
    assert message == Text("notified") and ctx.sender is None and ctx.is_rpc

    only_notifications = await http.post("/v1/rpc", json=[send(None, "recorder", "quiet")])
    assert only_notifications.status_code == 204 and only_notifications.content == b""
    assert (await bounded(inbox.get()))[1] == Text("quiet")


async def test_state_metadata_and_sender(http: httpx.AsyncClient, stalls: Any) -> None:
    recipient = {"type": "noted", "key": "k"}
    sent = await http.post("/v1/rpc", json=send(1, "noted", "remember", sender={"type": "web", "key": "ui"}))
    assert content_of(sent.json()) == "web/ui"
    calls = [
        {"jsonrpc": "2.0", "id": 1, "method": "agent_save_state", "params": {"recipient": recipient}},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "agent_load_state",
            "params": {"recipient": recipient, "state": {"note": "new"}},
        },
    ]
    saved, loaded = (await http.post("/v1/rpc", json=calls)).json()
    assert saved["result"] == {"state": {"note": "remember"}} and loaded["result"] == {}
    again = await http.post("/v1/rpc", json={**calls[0], "id": 3})
    assert again.json()["result"] == {"state": {"note": "new"}}


def _request(request_id: Any, method: str, params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()


_TO_A = {"recipient": {"type": "a", "key": "k"}}


#: (body, expected error code, expected id)
MALFORMED: list[tuple[bytes, int, Any]] = [
    (b"{not json", -32700, None),
    (b"[]", -32600, None),
    (b"[1]", -32600, None),
    (b'"text"', -32600, None),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "send"}', -32600, 1),
    (b'{"jsonrpc": "2.0", "id": 1.5, "method": "send"}', -32600, None),
    (b'{"jsonrpc": "2.0", "id": 1, "result": {}}', -32600, None),
    (b'{"specversion": "1.0", "id": "e", "source": "s", "type": "t"}', -32600, None),
    (_request(1, "hello", {}), -32601, 1),
    (_request(1, "register_agent_type", {"type": "x"}), -32601, 1),
    (_request(1, "send", []), -32602, 1),
    (_request(1, "send", {}), -32602, 1),
    (_request(2, "send", {"recipient": {"type": "a b", "key": "k"}}), -32602, 2),
    (_request(3, "send", _TO_A), -32602, 3),
    (_request(4, "send", {**_TO_A, "payload": {"data_type": "T", "data": 1}, "timeout": -1}), -32602, 4),
    (_request(5, "send", {**_TO_A, "payload": {"data_type": "T", "data_base64": "!!"}}), -32602, 5),
    (
        _request("m", "send", {**_TO_A, "payload": {"data_type": "T", "data": 1}, "message_id": 5}),
        -32602,
        "m",
    ),
    (_request(6, "agent_load_state", {**_TO_A, "state": [1]}), -32602, 6),
]


async def test_malformed_requests_get_precise_errors(
    http: httpx.AsyncClient, server: HttpAgentServer
) -> None:
    for body, code, request_id in MALFORMED:
        answer = await http.post("/v1/rpc", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 200, body
        error = answer.json()
        if body.startswith(b"[1"):
            [error] = error  # a batch gets a batch
        assert error["jsonrpc"] == "2.0" and "result" not in error, body
        assert (error["id"], error["error"]["code"]) == (request_id, code), (body, error)
        assert error["error"]["message"], body
    assert not local_sessions(server)


async def test_an_invalid_notification_gets_no_answer(http: httpx.AsyncClient) -> None:
    quiet = await http.post("/v1/rpc", json=[{"jsonrpc": "2.0", "method": "hello", "params": {}}])
    assert quiet.status_code == 204


async def test_a_bad_deadline_header_is_a_problem(http: httpx.AsyncClient) -> None:
    for value in ["soon", "-1", "nan", "inf", ""]:
        answer = await http.post("/v1/rpc", json=send(1, "upper", "x"), headers={"X-Deadline": value})
        assert answer.status_code == 400, value
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"] == "urn:autogen-http:problem:invalid-deadline"


async def test_the_deadline_header_cancels_the_call_on_the_serving_worker(
    http: httpx.AsyncClient, server: HttpAgentServer, stalls: tuple[asyncio.Queue[str], asyncio.Queue[str]]
) -> None:
    started, cancelled = stalls
    batch = [send(1, "stalling", "slow"), send(2, "stalling", "fast")]
    answers = (await http.post("/v1/rpc", json=batch, headers={"X-Deadline": "0.2"})).json()
    assert answers[0]["error"] == {
        "code": -32007,
        "message": "The deadline of 0.2 s passed; the call was cancelled.",
    }
    assert content_of(answers[1]) == "fast"
    assert await bounded(started.get()) == "slow"
    assert await bounded(cancelled.get()) == "slow"  # the host told the worker, which cancelled the handler
    assert server.service.core.pending_calls == 0 and not local_sessions(server)


async def test_a_timeout_param_bounds_one_call(
    http: httpx.AsyncClient, stalls: tuple[asyncio.Queue[str], asyncio.Queue[str]]
) -> None:
    _, cancelled = stalls
    batch = [send(1, "stalling", "slow", timeout=0.1), send(2, "upper", "x")]
    answers = (await http.post("/v1/rpc", json=batch, headers={"X-Deadline": "30"})).json()
    assert answers[0]["error"]["code"] == -32007 and "0.1 s" in answers[0]["error"]["message"]
    assert content_of(answers[1]) == "X"
    assert await bounded(cancelled.get()) == "slow"
    zero = (await http.post("/v1/rpc", json=send(3, "stalling", "zero"), headers={"X-Deadline": "0"})).json()
    assert zero["error"]["code"] == -32007


async def test_a_client_that_hangs_up_leaves_nothing_behind(
    server: HttpAgentServer, stalls: tuple[asyncio.Queue[str], asyncio.Queue[str]]
) -> None:
    started, cancelled = stalls
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as client:
        call = asyncio.ensure_future(client.post("/v1/rpc", json=send(1, "stalling", "abandoned")))
        assert await bounded(started.get()) == "abandoned"
        assert len(local_sessions(server)) == 1 and server.service.core.pending_calls == 1
        call.cancel()  # closes the connection
        with pytest.raises(asyncio.CancelledError):
            await call
    # Closing the request's session cancels its call: the handler hears of it.
    assert await bounded(cancelled.get()) == "abandoned"
    assert not local_sessions(server) and server.service.core.pending_calls == 0


async def test_a_call_open_when_the_host_stops_gets_shutting_down() -> None:
    started: asyncio.Queue[str] = asyncio.Queue()
    host = HttpAgentServer("127.0.0.1", port=0)
    await bounded(host.start())
    try:
        worker = HttpWorkerAgentRuntime(host.url, reconnect=None)
        worker.add_message_serializer(SERIALIZERS)
        await bounded(worker.start())
        await Stalling.register(worker, "stalling", lambda: Stalling(started, asyncio.Queue()))
        async with httpx.AsyncClient(base_url=host.url, timeout=TIMEOUT, trust_env=False) as client:
            call = asyncio.ensure_future(client.post("/v1/rpc", json=send(1, "stalling", "forever")))
            await bounded(started.get())
            await bounded(host.stop(grace=0.1))
            answer = (await bounded(call)).json()
        assert answer["id"] == 1 and answer["error"]["code"] == -32010
        await bounded(worker.stop())
    finally:
        await bounded(host.stop(grace=0))


async def test_many_concurrent_http_callers_each_get_their_own_reply(
    http: httpx.AsyncClient, stalls: Any
) -> None:
    async def one(i: int) -> Any:
        return content_of((await http.post("/v1/rpc", json=send(i, "upper", f"m{i}"))).json())

    assert await bounded(asyncio.gather(*(one(i) for i in range(50)))) == [f"M{i}" for i in range(50)]


async def test_a_body_over_the_limit_is_refused() -> None:
    app = FastAPI()
    service = HttpAgentService(max_message_size=2048)
    app.include_router(service.router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host") as client:
        answer = await client.post("/v1/rpc", json=send(1, "upper", "x" * 3000))
        assert answer.status_code == 413 and answer.json()["type"] == "urn:autogen-http:problem:too-large"
    await bounded(service.close(grace=0))
