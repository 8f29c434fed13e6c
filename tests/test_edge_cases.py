"""Edge cases found in review: each was a hang, a lost error or a silently dropped connection."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from typing import Any

import pytest
from autogen_core import (
    AgentId,
    BaseAgent,
    MessageContext,
    MessageSerializer,
    RoutedAgent,
    TypeSubscription,
    message_handler,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from autogen_http_runtime import (
    HostConnectionError,
    HttpAgentServer,
    HttpAgentService,
    HttpWorkerAgentRuntime,
    RemoteAgentError,
)
from autogen_http_runtime._constants import PROTOCOL_VERSION, WORKER_WS_PATH
from autogen_http_runtime._worker.lifecycle import WorkerState

from .conftest import WorkerFactory
from .test_server import until
from .utils import SERIALIZERS, TIMEOUT, Text, Upper, bounded, owners

HELLO = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "hello", "params": {"protocol": PROTOCOL_VERSION}})


def ws_url(server: HttpAgentServer) -> str:
    return server.url.replace("http", "ws", 1) + WORKER_WS_PATH


async def next_frame(ws: Any) -> dict[str, Any]:
    frame = json.loads(await bounded(ws.recv()))
    assert isinstance(frame, dict)
    return frame


async def test_lone_surrogates_are_answered_not_fatal(server: HttpAgentServer) -> None:
    async with connect(ws_url(server), open_timeout=TIMEOUT) as ws:
        await ws.send(HELLO)
        await next_frame(ws)
        await ws.send('{"jsonrpc":"2.0","id":2,"method":"x\\ud800"}')
        reply = await next_frame(ws)
        assert reply["id"] == 2 and reply["error"]["code"] == -32601
        await ws.send('{"jsonrpc":"2.0","id":3,"method":"nosuch"}')
        assert (await next_frame(ws))["id"] == 3


async def test_event_with_an_invalid_topic_type_is_an_error_not_a_dropped_connection(
    server: HttpAgentServer,
) -> None:
    async with connect(ws_url(server), open_timeout=TIMEOUT) as ws:
        await ws.send(HELLO)
        await next_frame(ws)
        event = {"specversion": "1.0", "id": "e", "source": "s", "type": "news tech", "data": {}}
        await ws.send(json.dumps(event))
        reply = await next_frame(ws)
        assert reply["error"]["code"] == -32600 and "topic type" in reply["error"]["message"]
        await ws.send('{"jsonrpc":"2.0","id":3,"method":"nosuch"}')
        assert (await next_frame(ws))["id"] == 3


async def test_reply_holding_a_lone_surrogate_reaches_the_caller(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    caller = await make_worker()
    async with connect(ws_url(server), open_timeout=TIMEOUT) as ws:
        await ws.send(HELLO)
        await next_frame(ws)
        await ws.send('{"jsonrpc":"2.0","id":1,"method":"register_agent_type","params":{"type":"raw"}}')
        await next_frame(ws)
        call = asyncio.ensure_future(caller.send_message(Text("hi"), AgentId("raw", "k")))
        request = await next_frame(ws)
        payload = '{"data_type":"Text","data":{"content":"\\ud800"}}'
        await ws.send(f'{{"jsonrpc":"2.0","id":{request["id"]},"result":{{"payload":{payload}}}}}')
        assert await bounded(call) == Text("\ud800")


async def test_python_messages_with_lone_surrogates_round_trip(make_worker: WorkerFactory) -> None:
    serving, calling = await make_worker(), await make_worker()
    await Upper.register(serving, "upper", Upper)
    assert await bounded(calling.send_message(Text("a\ud800ü"), AgentId("upper", "k"))) == Text("A\ud800Ü")


class Fatal(BaseException):
    """Not an Exception: a handler may still raise it."""


class RaisesBaseException(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("raises a BaseException")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        raise Fatal("beyond Exception")


async def test_handler_raising_a_base_exception_still_answers(make_worker: WorkerFactory) -> None:
    serving, calling = await make_worker(), await make_worker()
    await RaisesBaseException.register(serving, "fatal", RaisesBaseException)
    with pytest.raises(RemoteAgentError) as caught:
        await bounded(calling.send_message(Text("x"), AgentId("fatal", "k")))
    assert caught.value.remote_type == "Fatal"


async def test_stop_during_start_wins(server: HttpAgentServer) -> None:
    worker = HttpWorkerAgentRuntime(server.url)
    await worker.register_factory("upper", Upper)
    starting = asyncio.ensure_future(worker.start())
    # stop() while start() is under way: on Python 3.12 bounded() runs stop() before the
    # start task has begun unless we wait for it.
    await until(lambda: worker._lifecycle.state is WorkerState.STARTING)
    await bounded(worker.stop())
    with pytest.raises(HostConnectionError):
        await bounded(starting)
    assert "upper" not in owners(server.service.core)
    with pytest.raises(HostConnectionError):
        await worker.send_message(Text("x"), AgentId("upper", "k"))


async def test_failed_start_can_be_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = HttpWorkerAgentRuntime(f"127.0.0.1:{port}", connect_timeout=TIMEOUT)
    worker.add_message_serializer(SERIALIZERS)
    await Upper.register(worker, "upper", Upper)
    with pytest.raises(HostConnectionError):
        await bounded(worker.start())
    async with HttpAgentServer("127.0.0.1", port=port) as server:
        await bounded(worker.start())
        assert "upper" in owners(server.service.core)
        assert await bounded(worker.send_message(Text("again"), AgentId("upper", "k"))) == Text("AGAIN")
        await bounded(worker.stop())


class FailsToBind(BaseAgent):
    def __init__(self) -> None:
        super().__init__("cannot be bound")

    async def bind_id_and_runtime(self, id: AgentId, runtime: Any) -> None:
        raise RuntimeError("bind failed")

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        return None


async def test_failed_instance_registration_leaves_nothing_on_the_host(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    first, second = await make_worker(), await make_worker()
    with pytest.raises(RuntimeError, match="bind failed"):
        await bounded(first.register_agent_instance(FailsToBind(), AgentId("shared", "k")))
    # Frames from one worker are handled in order: once this round trip returns, the host
    # has processed the undoing of the registration.
    await bounded(first.register_factory("marker", Upper))
    assert "shared" not in owners(server.service.core)
    await bounded(second.register_factory("shared", Upper))


async def test_registration_after_the_host_is_gone_fails(
    make_worker: WorkerFactory, server: HttpAgentServer
) -> None:
    worker = await make_worker(reconnect=None)
    await bounded(server.stop(grace=0))
    with pytest.raises(HostConnectionError):
        await bounded(worker.register_factory("late", Upper))
    with pytest.raises(HostConnectionError):
        await bounded(worker.add_subscription(TypeSubscription("t", "late")))
    assert "late" not in owners(server.service.core)


async def test_host_and_worker_wait_for_the_same_signal_in_one_process(server: HttpAgentServer) -> None:
    worker = HttpWorkerAgentRuntime(server.url)
    await bounded(worker.start())
    before = signal.getsignal(signal.SIGTERM)
    host_waiting = asyncio.ensure_future(server.stop_when_signal(grace=0, signals=(signal.SIGTERM,)))
    worker_waiting = asyncio.ensure_future(worker.stop_when_signal(signals=(signal.SIGTERM,)))
    await until(lambda: signal.getsignal(signal.SIGTERM) != before)
    loop_handlers: dict[int, Any] = getattr(asyncio.get_running_loop(), "_signal_handlers", {})
    await until(lambda: signal.SIGTERM in loop_handlers)
    os.kill(os.getpid(), signal.SIGTERM)
    await bounded(asyncio.gather(host_waiting, worker_waiting))
    assert signal.getsignal(signal.SIGTERM) == before


async def test_a_connection_that_never_says_hello_is_closed() -> None:
    async with HttpAgentServer(port=0, service=HttpAgentService(hello_timeout=0.2)) as server:
        async with connect(ws_url(server), open_timeout=TIMEOUT) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await bounded(ws.recv())
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


class NotReallyJson(MessageSerializer[Text]):
    """Claims application/json but writes plain text: it must still travel, untouched."""

    @property
    def data_content_type(self) -> str:
        return "application/json"

    @property
    def type_name(self) -> str:
        return "Text"

    def deserialize(self, payload: bytes) -> Text:
        return Text(payload.decode("utf-8").removeprefix("text:"))

    def serialize(self, message: Text) -> bytes:
        return ("text:" + message.content).encode("utf-8")


async def test_serializer_that_is_not_really_json(make_worker: WorkerFactory) -> None:
    serving, calling = await make_worker(), await make_worker()
    for worker in (serving, calling):
        worker.add_message_serializer(NotReallyJson())
    await serving.register_factory("upper", Upper)
    assert await bounded(calling.send_message(Text("raw"), AgentId("upper", "k"))) == Text("RAW")


def test_extra_grpc_config_is_accepted_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="extra_grpc_config"):
        HttpAgentServer("127.0.0.1:0", extra_grpc_config=[("grpc.max_send_message_length", 1)])
    with pytest.warns(UserWarning, match="extra_grpc_config"):
        HttpWorkerAgentRuntime("127.0.0.1:1", extra_grpc_config=[("grpc.max_send_message_length", 1)])
