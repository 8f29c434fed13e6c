"""Protocol violations against the real host, from a raw WebSocket client, and size limits.

The raw client speaks the wire protocol by hand over a real socket, so these tests see
exactly what the host answers. Each ends by checking that the host keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from autogen_core import AgentId, MessageContext, RoutedAgent, TopicId, TypeSubscription, message_handler
from websockets.asyncio.client import ClientConnection, connect

from autogen_http_runtime import HttpAgentServer, MessageTooLargeError
from autogen_http_runtime._constants import PROTOCOL_VERSION, WORKER_WS_PATH

from .conftest import WorkerFactory
from .utils import TIMEOUT, Recorder, Text, Upper, bounded, owners, subscriptions

#: Each test that uses ``server`` runs on both WebSocket paths (conftest.py).
BOTH_PATHS = True

JsonObject = dict[str, Any]

# -- a raw client -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_client(server: HttpAgentServer) -> AsyncIterator[ClientConnection]:
    url = server.url.replace("http", "ws", 1) + WORKER_WS_PATH
    async with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        yield ws


async def receive(ws: ClientConnection) -> JsonObject:
    text = await bounded(ws.recv())
    assert isinstance(text, str), "the host answers in text frames"
    frame = json.loads(text)
    assert isinstance(frame, dict)
    return frame


async def exchange(ws: ClientConnection, frame: JsonObject | str | bytes) -> JsonObject:
    await bounded(ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame)))
    return await receive(ws)


def request(request_id: Any, method: str, params: Any) -> JsonObject:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


async def say_hello(ws: ClientConnection, **extra: Any) -> JsonObject:
    reply = await exchange(ws, request("hello", "hello", {"protocol": PROTOCOL_VERSION, **extra}))
    assert reply["id"] == "hello" and "result" in reply, reply
    result = reply["result"]
    assert isinstance(result, dict)
    return result


def assert_error(reply: JsonObject, code: int, request_id: Any) -> None:
    assert reply["jsonrpc"] == "2.0"
    assert "result" not in reply
    assert reply["id"] == request_id, reply
    assert reply["error"]["code"] == code, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]


def text_payload(content: str) -> JsonObject:
    return {"data_type": "Text", "data_content_type": "application/json", "data": {"content": content}}


async def assert_host_routes(make_worker: WorkerFactory) -> None:
    """Two real workers can still call each other through the host."""
    serving = await make_worker()
    calling = await make_worker()
    await Upper.register(serving, "upper", Upper)
    assert await bounded(calling.send_message(Text("still here"), AgentId("upper", "k"))) == Text(
        "STILL HERE"
    )


# -- frames the host rejects ----------------------------------------------------------------

#: (frame sent, expected error code, expected id) for a connection that has not said hello.
BEFORE_HELLO: list[tuple[str, JsonObject | str | bytes, int, Any]] = [
    ("malformed JSON", '{"jsonrpc": "2.0", "id": 1,', -32700, None),
    ("empty text", "", -32700, None),
    ("empty batch", "[]", -32600, None),
    ("JSON, not JSON-RPC", {"hello": "world"}, -32600, None),
    ("wrong jsonrpc version", {"jsonrpc": "1.0", "id": 4, "method": "hello"}, -32600, 4),
    ("bad id type", {"jsonrpc": "2.0", "id": 1.5, "method": "hello"}, -32600, None),
    ("request before hello", request(2, "register_agent_type", {"type": "a"}), -32600, 2),
    ("send before hello", request("s", "send", {"recipient": {"type": "a", "key": "k"}}), -32600, "s"),
    (
        "publish before hello",
        {"specversion": "1.0", "id": "e", "source": "s", "type": "t", "data": {}},
        -32600,
        None,
    ),
    ("binary frame", b'{"jsonrpc": "2.0", "id": 3, "method": "hello"}', -32600, None),
]

#: The same, for a connection that has said hello.
AFTER_HELLO: list[tuple[str, JsonObject | str | bytes, int, Any]] = [
    ("unknown method", request(10, "no_such_method", {}), -32601, 10),
    ("unknown method, string id", request("r-11", "teleport", {"to": "mars"}), -32601, "r-11"),
    ("params not an object", request(12, "register_agent_type", ["upper"]), -32602, 12),
    ("type not a string", request(13, "register_agent_type", {"type": 5}), -32602, 13),
    ("type missing", request(14, "register_agent_type", {}), -32602, 14),
    ("type not a valid name", request(25, "register_agent_type", {"type": "no spaces/here"}), -32602, 25),
    (
        "bad subscription kind",
        request(
            15,
            "add_subscription",
            {"subscription": {"id": "s", "kind": "x", "agent_type": "a", "topic": "t"}},
        ),
        -32602,
        15,
    ),
    ("subscription not an object", request(16, "add_subscription", {"subscription": "s"}), -32602, 16),
    ("subscription id not a string", request(17, "remove_subscription", {"id": 3}), -32602, 17),
    ("recipient as a string", request(18, "send", {"recipient": "upper/default"}), -32602, 18),
    (
        "recipient key not a string",
        request(19, "send", {"recipient": {"type": "upper", "key": 1}}),
        -32602,
        19,
    ),
    ("recipient missing", request(20, "agent_metadata", {}), -32602, 20),
    ("hello protocol not a string", request(21, "hello", {"protocol": 1}), -32602, 21),
    (
        "hello size not a number",
        request(22, "hello", {"protocol": PROTOCOL_VERSION, "max_message_size": "big"}),
        -32602,
        22,
    ),
    ("remove an unknown subscription", request(23, "remove_subscription", {"id": "nope"}), -32006, 23),
    (
        "send to an unknown type",
        request(24, "send", {"recipient": {"type": "nobody", "key": "k"}}),
        -32001,
        24,
    ),
    ("malformed JSON", "{]", -32700, None),
    ("binary frame", b"\x00\x01", -32600, None),
]


@pytest.mark.parametrize(
    ("frame", "code", "request_id"),
    [case[1:] for case in BEFORE_HELLO],
    ids=[case[0] for case in BEFORE_HELLO],
)
async def test_bad_frame_before_hello(
    server: HttpAgentServer, frame: JsonObject | str | bytes, code: int, request_id: Any
) -> None:
    async with raw_client(server) as ws:
        assert_error(await exchange(ws, frame), code, request_id)
        # The connection stays open and can still say hello.
        await say_hello(ws)


@pytest.mark.parametrize(
    ("frame", "code", "request_id"),
    [case[1:] for case in AFTER_HELLO],
    ids=[case[0] for case in AFTER_HELLO],
)
async def test_bad_frame_after_hello(
    server: HttpAgentServer, frame: JsonObject | str | bytes, code: int, request_id: Any
) -> None:
    async with raw_client(server) as ws:
        await say_hello(ws)
        assert_error(await exchange(ws, frame), code, request_id)
        # Nothing was registered by the rejected frame, and the session still works.
        assert owners(server.service.core) == {}
        assert len(subscriptions(server.service.core)) == 0
        reply = await exchange(ws, request("ok", "register_agent_type", {"type": "raw_agent"}))
        assert reply == {"jsonrpc": "2.0", "id": "ok", "result": {}}
        assert "raw_agent" in owners(server.service.core)


async def test_a_batch_is_handled_frame_by_frame(server: HttpAgentServer) -> None:
    hello = request(2, "hello", {"protocol": PROTOCOL_VERSION})
    batch = [request(1, "register_agent_type", {"type": "early"}), 7, hello]
    async with raw_client(server) as ws:
        await bounded(ws.send(json.dumps(batch)))
        # In order, one answer per frame; a bad frame spoils none of the others. This
        # client did not say "batch": true, so the answers come one message each.
        assert_error(await receive(ws), -32600, 1)
        assert_error(await receive(ws), -32600, None)
        assert (await receive(ws))["id"] == 2
        assert owners(server.service.core) == {}


async def test_hello_reports_protocol_worker_id_and_limit(server: HttpAgentServer) -> None:
    async with raw_client(server) as ws:
        result = await say_hello(ws, name="raw", max_message_size=5000)
        assert result["protocol"] == PROTOCOL_VERSION
        assert result["worker_id"] in server.service.core.sessions
        assert result["max_message_size"] == 5000
        assert server.service.core.sessions[result["worker_id"]].name == "raw"


async def test_hello_with_wrong_protocol_version(server: HttpAgentServer) -> None:
    async with raw_client(server) as ws:
        reply = await exchange(ws, request(1, "hello", {"protocol": "autogen-http/0"}))
        assert_error(reply, -32600, 1)
        assert "autogen-http/0" in reply["error"]["message"]
        assert PROTOCOL_VERSION in reply["error"]["message"]
        # The refused hello did not greet the session.
        assert_error(await exchange(ws, request(2, "register_agent_type", {"type": "a"})), -32600, 2)
        await say_hello(ws)


async def test_response_to_unknown_id_is_ignored(server: HttpAgentServer) -> None:
    async with raw_client(server) as ws:
        await say_hello(ws)
        await bounded(ws.send(json.dumps({"jsonrpc": "2.0", "id": 999, "result": {"payload": None}})))
        await bounded(ws.send(json.dumps({"jsonrpc": "2.0", "id": "x", "result": 1})))
        await bounded(
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 998, "error": {"code": 1, "message": "m"}}))
        )
        await bounded(ws.send(json.dumps({"jsonrpc": "2.0", "method": "cancel", "params": {"id": 12345}})))
        await bounded(ws.send(json.dumps({"jsonrpc": "2.0", "method": "unknown_notification", "params": {}})))
        # Frames are handled in order, so the next frame the host sends is the answer to
        # this request: the stray responses and notifications produced nothing.
        reply = await exchange(ws, request("after", "register_agent_type", {"type": "raw_agent"}))
        assert reply == {"jsonrpc": "2.0", "id": "after", "result": {}}
        assert server.service.core.pending_calls == 0


class Gate(RoutedAgent):
    """Holds every call until the test opens the gate."""

    def __init__(self, entered: asyncio.Event, release: asyncio.Event) -> None:
        super().__init__("waits for the gate")
        self._entered = entered
        self._release = release

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self._entered.set()
        await self._release.wait()
        return Text("released " + message.content)


async def test_request_id_reused_while_in_flight(server: HttpAgentServer, make_worker: WorkerFactory) -> None:
    serving = await make_worker()
    entered, release = asyncio.Event(), asyncio.Event()
    await serving.register_factory("gate", lambda: Gate(entered, release))
    async with raw_client(server) as ws:
        await say_hello(ws)
        params = {"recipient": {"type": "gate", "key": "k"}, "payload": text_payload("first")}
        await bounded(ws.send(json.dumps(request(5, "send", params))))
        await bounded(entered.wait())
        duplicate = {"recipient": {"type": "gate", "key": "k"}, "payload": text_payload("second")}
        reply = await exchange(ws, request(5, "send", duplicate))
        assert_error(reply, -32600, 5)
        assert "already in flight" in reply["error"]["message"]
        assert server.service.core.pending_calls == 1
        release.set()
        # The first call is unaffected and answered under its id.
        answer = await receive(ws)
        assert answer["id"] == 5
        assert answer["result"]["payload"]["data"] == {"content": "released first"}
        assert server.service.core.pending_calls == 0
        # Once answered, the id may be used again.
        again = await exchange(ws, request(5, "send", duplicate))
        assert again["result"]["payload"]["data"] == {"content": "released second"}


async def test_malformed_payload_is_reported_by_the_serving_worker(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    serving = await make_worker()
    await Upper.register(serving, "upper", Upper)
    async with raw_client(server) as ws:
        await say_hello(ws)
        bad = {"data_type": "Text", "data_content_type": "application/x-protobuf", "data_base64": "%%"}
        reply = await exchange(
            ws, request(1, "send", {"recipient": {"type": "upper", "key": "k"}, "payload": bad})
        )
        assert_error(reply, -32602, 1)
        good = await exchange(
            ws,
            request(2, "send", {"recipient": {"type": "upper", "key": "k"}, "payload": text_payload("ok")}),
        )
        assert good["result"]["payload"]["data"] == {"content": "OK"}


async def test_host_survives_protocol_abuse(server: HttpAgentServer, make_worker: WorkerFactory) -> None:
    async with raw_client(server) as ws:
        for _, frame, code, request_id in BEFORE_HELLO:
            assert_error(await exchange(ws, frame), code, request_id)
        assert_error(await exchange(ws, request(1, "hello", {"protocol": "nope"})), -32600, 1)
        await say_hello(ws)
        for _, frame, code, request_id in AFTER_HELLO:
            assert_error(await exchange(ws, frame), code, request_id)
        await bounded(ws.send(json.dumps({"jsonrpc": "2.0", "id": 77, "result": None})))

        await assert_host_routes(make_worker)

        # The abusive connection itself is still being served.
        reply = await exchange(ws, request("last", "register_agent_type", {"type": "raw_agent"}))
        assert reply == {"jsonrpc": "2.0", "id": "last", "result": {}}
        assert len(server.service.core.sessions) == 3
        assert set(owners(server.service.core)) == {"upper", "raw_agent"}


# -- message size limits --------------------------------------------------------------------

SMALL_LIMIT = 4096


async def test_message_over_the_senders_limit(server: HttpAgentServer, make_worker: WorkerFactory) -> None:
    serving = await make_worker()
    await Upper.register(serving, "upper", Upper)
    sender = await make_worker(max_message_size=SMALL_LIMIT)
    with pytest.raises(MessageTooLargeError, match=str(SMALL_LIMIT)) as caught:
        await bounded(sender.send_message(Text("x" * 2 * SMALL_LIMIT), AgentId("upper", "k")))
    assert caught.value.code == -32008
    with pytest.raises(MessageTooLargeError):
        await bounded(sender.publish_message(Text("y" * 2 * SMALL_LIMIT), TopicId("news", "s")))
    assert server.service.core.pending_calls == 0
    # The same worker, on the same connection, still works for a small message.
    assert await bounded(sender.send_message(Text("small"), AgentId("upper", "k"))) == Text("SMALL")
    assert len(server.service.core.sessions) == 2


async def test_host_refuses_to_forward_past_the_recipients_limit(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    serving = await make_worker(max_message_size=SMALL_LIMIT)
    await Upper.register(serving, "upper", Upper)
    caller = await make_worker()
    with pytest.raises(MessageTooLargeError, match=str(SMALL_LIMIT)):
        await bounded(caller.send_message(Text("x" * 2 * SMALL_LIMIT), AgentId("upper", "k")))
    assert server.service.core.pending_calls == 0
    # Both workers keep their connections and keep serving.
    assert await bounded(caller.send_message(Text("small"), AgentId("upper", "k"))) == Text("SMALL")
    assert len(server.service.core.sessions) == 2


class Grow(RoutedAgent):
    """Answers with a reply much larger than the request."""

    def __init__(self) -> None:
        super().__init__("answers big")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        return Text(message.content * 2 * SMALL_LIMIT)


async def test_reply_past_the_callers_limit(server: HttpAgentServer, make_worker: WorkerFactory) -> None:
    serving = await make_worker()
    await Grow.register(serving, "grow", Grow)
    caller = await make_worker(max_message_size=SMALL_LIMIT)
    with pytest.raises(MessageTooLargeError, match=str(SMALL_LIMIT)):
        await bounded(caller.send_message(Text("ab"), AgentId("grow", "k")))
    assert server.service.core.pending_calls == 0
    assert len(server.service.core.sessions) == 2
    assert await bounded(caller.send_message(Text(""), AgentId("grow", "k"))) == Text("")


async def test_reply_past_the_serving_workers_own_limit(make_worker: WorkerFactory) -> None:
    serving = await make_worker(max_message_size=SMALL_LIMIT)
    await Grow.register(serving, "grow", Grow)
    caller = await make_worker()
    # The request fits the serving worker's limit, its reply does not: the caller learns
    # why with the precise error type, not as a handler failure.
    with pytest.raises(MessageTooLargeError, match="reply is too large"):
        await bounded(caller.send_message(Text("ab"), AgentId("grow", "k")))
    assert await bounded(caller.send_message(Text(""), AgentId("grow", "k"))) == Text("")


async def test_event_past_a_subscribers_limit_is_not_delivered(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    inbox: asyncio.Queue[tuple[AgentId, Any, MessageContext]] = asyncio.Queue()
    subscriber = await make_worker(max_message_size=SMALL_LIMIT)
    await subscriber.register_factory("rec", lambda: Recorder(inbox))
    await subscriber.add_subscription(TypeSubscription("news", "rec"))
    publisher = await make_worker()
    await bounded(publisher.publish_message(Text("x" * 2 * SMALL_LIMIT), TopicId("news", "s")))
    await bounded(publisher.publish_message(Text("small"), TopicId("news", "s")))
    # Order from one publisher is kept, so the first delivery would be the large one.
    _, message, _ = await bounded(inbox.get())
    assert message == Text("small")
    assert inbox.empty()
    assert len(server.service.core.sessions) == 2
