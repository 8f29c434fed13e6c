"""Payload formats and sizes over a real host: protobuf, pydantic, and 16 MiB messages."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from autogen_core import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    AgentId,
    BaseAgent,
    DefaultTopicId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    default_subscription,
    message_handler,
    try_get_known_serializers_for_type,
)
from google.protobuf.wrappers_pb2 import BytesValue, StringValue
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime
from autogen_http_runtime._constants import PROTOCOL_VERSION, WORKER_WS_PATH

from .conftest import WorkerFactory
from .utils import SERIALIZERS, TIMEOUT, Text, Upper, bounded

MIB = 1024 * 1024
PROTO_SERIALIZERS = [
    *try_get_known_serializers_for_type(StringValue),
    *try_get_known_serializers_for_type(BytesValue),
]


class ProtoUpper(RoutedAgent):
    """Upper-cases StringValues; answers a BytesValue with its bytes reversed."""

    def __init__(self) -> None:
        super().__init__("protobuf agent")

    @message_handler
    async def on_string(self, message: StringValue, ctx: MessageContext) -> StringValue:
        return StringValue(value=message.value.upper())

    @message_handler
    async def on_bytes(self, message: BytesValue, ctx: MessageContext) -> BytesValue:
        return BytesValue(value=message.value[::-1])


class Inbox(BaseAgent):
    """Puts every message it receives, with its context, into a queue."""

    def __init__(self, inbox: asyncio.Queue[tuple[Any, MessageContext]]) -> None:
        super().__init__("records anything")
        self.inbox = inbox

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> None:
        self.inbox.put_nowait((message, ctx))


async def protobuf_worker(make_worker: WorkerFactory) -> HttpWorkerAgentRuntime:
    worker = await make_worker(payload_serialization_format=PROTOBUF_DATA_CONTENT_TYPE)
    worker.add_message_serializer(PROTO_SERIALIZERS)
    return worker


@contextlib.asynccontextmanager
async def raw_client(server: HttpAgentServer) -> AsyncIterator[ClientConnection]:
    """A hand-driven worker connection, to see payloads exactly as they travel."""
    url = server.url.replace("http", "ws", 1) + WORKER_WS_PATH
    async with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        await bounded(
            ws.send(
                json.dumps(
                    {"jsonrpc": "2.0", "id": 0, "method": "hello", "params": {"protocol": PROTOCOL_VERSION}}
                )
            )
        )
        assert "result" in json.loads(await bounded(ws.recv()))
        yield ws


async def raw_call(ws: ClientConnection, request_id: int, method: str, params: dict[str, Any]) -> Any:
    await bounded(
        ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
    )
    reply = json.loads(await bounded(ws.recv()))
    assert reply == {"jsonrpc": "2.0", "id": request_id, "result": reply.get("result")}, reply
    return reply["result"]


# -- protobuf ---------------------------------------------------------------------------------


async def test_protobuf_rpc_between_workers(make_worker: WorkerFactory) -> None:
    serving = await protobuf_worker(make_worker)
    calling = await protobuf_worker(make_worker)
    await ProtoUpper.register(serving, "proto", ProtoUpper)
    reply = await bounded(calling.send_message(StringValue(value="proto"), AgentId("proto", "k")))
    assert reply == StringValue(value="PROTO")
    # A JSON-only message type falls back to JSON on a protobuf-preferring worker.
    await Upper.register(serving, "upper", Upper)
    assert await bounded(calling.send_message(Text("json"), AgentId("upper", "k"))) == Text("JSON")


async def test_protobuf_publish_between_workers(make_worker: WorkerFactory) -> None:
    inbox: asyncio.Queue[tuple[Any, MessageContext]] = asyncio.Queue()
    subscriber = await protobuf_worker(make_worker)
    publisher = await protobuf_worker(make_worker)
    await subscriber.register_factory("inbox", lambda: Inbox(inbox))
    await subscriber.add_subscription(TypeSubscription("proto-news", "inbox"))
    await bounded(publisher.publish_message(StringValue(value="headline"), TopicId("proto-news", "src")))
    message, ctx = await bounded(inbox.get())
    assert message == StringValue(value="headline")
    assert ctx.topic_id == TopicId("proto-news", "src")
    assert ctx.is_rpc is False


async def test_protobuf_travels_as_protobuf_on_the_wire(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    (string_serializer,) = try_get_known_serializers_for_type(StringValue)
    calling = await protobuf_worker(make_worker)
    async with raw_client(server) as ws:
        await raw_call(ws, 1, "register_agent_type", {"type": "raw"})
        sub = {"id": "raw-sub", "kind": "type", "agent_type": "raw", "topic": "wire"}
        await raw_call(ws, 2, "add_subscription", {"subscription": sub})

        call = asyncio.ensure_future(calling.send_message(StringValue(value="abc"), AgentId("raw", "k")))
        forwarded = json.loads(await bounded(ws.recv()))
        assert forwarded["method"] == "send"
        payload = forwarded["params"]["payload"]
        assert payload["data_content_type"] == PROTOBUF_DATA_CONTENT_TYPE
        assert payload["data_type"] == string_serializer.type_name
        assert "data" not in payload
        assert string_serializer.deserialize(base64.b64decode(payload["data_base64"])) == StringValue(
            value="abc"
        )
        answer = {
            "data_type": string_serializer.type_name,
            "data_content_type": PROTOBUF_DATA_CONTENT_TYPE,
            "data_base64": base64.b64encode(
                string_serializer.serialize(StringValue(value="raw says hi"))
            ).decode(),
        }
        await bounded(
            ws.send(json.dumps({"jsonrpc": "2.0", "id": forwarded["id"], "result": {"payload": answer}}))
        )
        assert await bounded(call) == StringValue(value="raw says hi")

        await bounded(calling.publish_message(StringValue(value="event"), TopicId("wire", "s")))
        event = json.loads(await bounded(ws.recv()))
        assert event["specversion"] == "1.0"
        assert event["datacontenttype"] == PROTOBUF_DATA_CONTENT_TYPE
        assert event["agmsgtype"] == string_serializer.type_name
        assert event["agrecipient"] == "raw/s"
        assert string_serializer.deserialize(base64.b64decode(event["data_base64"])) == StringValue(
            value="event"
        )


async def test_json_travels_as_embedded_json_on_the_wire(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    calling = await make_worker()
    async with raw_client(server) as ws:
        await raw_call(ws, 1, "register_agent_type", {"type": "raw"})
        call = asyncio.ensure_future(calling.send_message(Text("plain"), AgentId("raw", "k")))
        forwarded = json.loads(await bounded(ws.recv()))
        payload = forwarded["params"]["payload"]
        assert payload["data_content_type"] == JSON_DATA_CONTENT_TYPE
        assert payload["data"] == {"content": "plain"}
        reply = {
            "data_type": "Text",
            "data_content_type": JSON_DATA_CONTENT_TYPE,
            "data": {"content": "back"},
        }
        await bounded(
            ws.send(json.dumps({"jsonrpc": "2.0", "id": forwarded["id"], "result": {"payload": reply}}))
        )
        assert await bounded(call) == Text("back")


# -- large payloads ----------------------------------------------------------------------------


async def test_16_mib_json_payload_by_default(make_worker: WorkerFactory) -> None:
    serving = await make_worker()
    calling = await make_worker()
    await Upper.register(serving, "upper", Upper)
    reply = await bounded(calling.send_message(Text("a" * (16 * MIB)), AgentId("upper", "k")))
    assert isinstance(reply, Text)
    assert len(reply.content) == 16 * MIB
    assert reply.content == "A" * (16 * MIB)


async def test_compression_needs_the_host_to_allow_it_and_messages_arrive_intact(
    make_worker: WorkerFactory,
) -> None:
    def negotiated(worker: HttpWorkerAgentRuntime) -> list[str]:
        return worker._lifecycle.link.connection._ws.extensions  # type: ignore[union-attr]

    asking = await make_worker(compression=True)  # the default host does not allow it
    assert negotiated(asking) == []
    host = HttpAgentServer("127.0.0.1", port=0, compression=True)
    await bounded(host.start())
    workers = [HttpWorkerAgentRuntime(host.url, compression=on) for on in (True, True, False)]
    try:
        for worker in workers:
            worker.add_message_serializer(SERIALIZERS)
            await bounded(worker.start())
        serving, calling, plain = workers
        assert [negotiated(w) for w in workers] == [["permessage-deflate"], ["permessage-deflate"], []]
        await Upper.register(serving, "upper", Upper)
        text = "compressible " * (MIB // 8)
        for caller in (calling, plain):
            reply = await bounded(caller.send_message(Text(text), AgentId("upper", "k")))
            assert reply == Text(text.upper())
    finally:
        for worker in workers:
            await bounded(worker.stop())
        await bounded(host.stop(grace=1))


async def test_16_mib_protobuf_payload_by_default(make_worker: WorkerFactory) -> None:
    serving = await protobuf_worker(make_worker)
    calling = await protobuf_worker(make_worker)
    await ProtoUpper.register(serving, "proto", ProtoUpper)
    data = os.urandom(16 * MIB)
    reply = await bounded(calling.send_message(BytesValue(value=data), AgentId("proto", "k")))
    assert isinstance(reply, BytesValue)
    assert reply.value == data[::-1]


# -- pydantic ------------------------------------------------------------------------------------


class LineItem(BaseModel):
    sku: str
    quantity: int


class Order(BaseModel):
    customer: str
    items: list[LineItem]
    note: str | None = None


class Receipt(BaseModel):
    customer: str
    total_quantity: int
    skus: list[str]


PYDANTIC_SERIALIZERS = [
    *try_get_known_serializers_for_type(Order),
    *try_get_known_serializers_for_type(Receipt),
]


@default_subscription
class Cashier(RoutedAgent):
    def __init__(self, seen: asyncio.Queue[Order]) -> None:
        super().__init__("turns orders into receipts")
        self._seen = seen

    @message_handler
    async def on_order(self, message: Order, ctx: MessageContext) -> Receipt:
        self._seen.put_nowait(message)
        return Receipt(
            customer=message.customer,
            total_quantity=sum(item.quantity for item in message.items),
            skus=[item.sku for item in message.items],
        )


async def test_pydantic_models_rpc_and_publish(make_worker: WorkerFactory) -> None:
    seen: asyncio.Queue[Order] = asyncio.Queue()
    serving = await make_worker()
    calling = await make_worker()
    for worker in (serving, calling):
        worker.add_message_serializer(PYDANTIC_SERIALIZERS)
    await Cashier.register(serving, "cashier", lambda: Cashier(seen))
    order = Order(
        customer="ada", items=[LineItem(sku="x1", quantity=2), LineItem(sku="y2", quantity=3)], note="ü"
    )
    reply = await bounded(calling.send_message(order, AgentId("cashier", "default")))
    assert reply == Receipt(customer="ada", total_quantity=5, skus=["x1", "y2"])
    assert isinstance(reply, Receipt)
    assert await bounded(seen.get()) == order

    published = Order(customer="bob", items=[])
    await bounded(calling.publish_message(published, DefaultTopicId()))
    received = await bounded(seen.get())
    assert received == published
    assert isinstance(received, Order)
