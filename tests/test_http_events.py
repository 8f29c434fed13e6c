"""POST /v1/events: CloudEvents over HTTP in binary, structured and batched mode.

The codec (``_http_events``) is tested on its own, then the route over a real host, with
events made by the official ``cloudevents`` SDK and received by Python agents.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from autogen_core import (
    PROTOBUF_DATA_CONTENT_TYPE,
    AgentId,
    MessageContext,
    TopicId,
    TypeSubscription,
    try_get_known_serializers_for_type,
)
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1 import conversion as ce_v1_conversion
from cloudevents.v1.http import CloudEvent as CloudEventV1
from fastapi import FastAPI
from google.protobuf import any_pb2
from google.protobuf.wrappers_pb2 import StringValue

from autogen_http_runtime import HttpAgentServer, HttpAgentService
from autogen_http_runtime._http.cloudevents import events_from_http
from autogen_http_runtime._http.problems import Problem

from .conftest import WorkerFactory
from .utils import TIMEOUT, Recorder, Text, bounded

Inbox = asyncio.Queue[tuple[AgentId, Any, MessageContext]]
LIMIT = 1 << 20

BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "e1",
    "ce-source": "lobby",
    "ce-type": "greetings",
    "ce-agmsgtype": "Text",
    "content-type": "application/json",
}
EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "e1",
    "source": "lobby",
    "type": "greetings",
    "agmsgtype": "Text",
    "data": {"content": "hi"},
}
STRUCTURED = {"content-type": "application/cloudevents+json"}
BATCH = {"content-type": "application/cloudevents-batch+json"}


def parse(headers: dict[str, str], body: bytes | str | Any) -> list[dict[str, Any]]:
    raw = (
        body
        if isinstance(body, bytes)
        else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
    )
    return [event.attributes for event in events_from_http(headers, raw, max_frame_size=LIMIT)]


def problem(headers: dict[str, str], body: bytes | str | Any) -> Problem:
    with pytest.raises(Problem) as caught:
        parse(headers, body)
    return caught.value


# -- the codec ---------------------------------------------------------------------------------


def test_binary_mode_becomes_the_event_frame_a_worker_sends() -> None:
    [frame] = parse({**BINARY, "content-type": "application/json; charset=utf-8"}, b'{"content":"hi"}')
    assert frame == {**EVENT, "datacontenttype": "application/json"}


def test_binary_mode_header_values_are_percent_decoded_and_names_case_free() -> None:
    headers = {
        "CE-SpecVersion": "1.0",
        "Ce-Id": "x",
        "ce-source": "caf%C3%A9%20bar",
        "ce-type": "t",
        "ce-agmsgtype": "T",
    }
    [frame] = parse(headers, b"[1]")  # no Content-Type: the body must then be JSON
    assert (frame["source"], frame["datacontenttype"], frame["data"]) == ("café bar", "application/json", [1])


def test_binary_mode_carries_other_content_types_as_base64() -> None:
    body = StringValue(value="pb").SerializeToString()
    [frame] = parse({**BINARY, "content-type": PROTOBUF_DATA_CONTENT_TYPE}, body)
    assert frame["datacontenttype"] == PROTOBUF_DATA_CONTENT_TYPE
    assert base64.b64decode(frame["data_base64"]) == body and "data" not in frame


def test_dataschema_stands_in_for_agmsgtype_and_agrecipient_is_dropped() -> None:
    headers = {k: v for k, v in BINARY.items() if k != "ce-agmsgtype"}
    [frame] = parse({**headers, "ce-dataschema": "Text", "ce-agrecipient": "x/y"}, b"{}")
    assert frame["agmsgtype"] == "Text" and "agrecipient" not in frame


@pytest.mark.parametrize(
    ("headers", "body", "detail"),
    [
        ({"content-type": "application/json"}, b"{}", "Not a CloudEvent"),
        ({**BINARY, "ce-specversion": "0.3"}, b"{}", "'1.0'"),
        ({k: v for k, v in BINARY.items() if k != "ce-id"}, b"{}", "'id'"),
        ({**BINARY, "ce-source": ""}, b"{}", "'source'"),
        ({**BINARY, "ce-type": "no spaces"}, b"{}", "topic type"),
        ({k: v for k, v in BINARY.items() if k != "ce-agmsgtype"}, b"{}", "agmsgtype"),
        ({**BINARY, "ce-agmsgtype": ""}, b"{}", "agmsgtype"),
        ({**BINARY, "ce-agsender": "nobody"}, b"{}", "agsender"),
        ({**BINARY, "ce-bad_name": "x"}, b"{}", "ce-bad_name"),
        (BINARY, b"", "no data"),
        (BINARY, b"{not json", "not JSON"),
        ({k: v for k, v in BINARY.items() if k != "content-type"}, b"plain text", "no Content-Type"),
    ],
)
def test_binary_mode_refuses_invalid_events_precisely(
    headers: dict[str, str], body: bytes, detail: str
) -> None:
    found = problem(headers, body)
    assert (found.status, found.kind) == (400, "invalid-event")
    assert detail in found.detail


def test_structured_mode_normalises_data_as_the_websocket_protocol_carries_it() -> None:
    [plain] = parse(STRUCTURED, EVENT)
    assert plain == {**EVENT, "datacontenttype": "application/json"}
    encoded = base64.b64encode(b'{"content":"hi"}').decode()
    [from_base64] = parse(
        STRUCTURED,
        {
            **{k: v for k, v in EVENT.items() if k != "data"},
            "data_base64": encoded,
            "datacontenttype": "application/json",
        },
    )
    assert from_base64["data"] == {"content": "hi"} and "data_base64" not in from_base64
    [text] = parse(STRUCTURED, {**EVENT, "datacontenttype": "text/plain", "data": "héllo"})
    assert base64.b64decode(text["data_base64"]) == "héllo".encode()
    [vendor_json] = parse(STRUCTURED, {**EVENT, "datacontenttype": "application/vnd.x+json", "data": "s"})
    assert base64.b64decode(vendor_json["data_base64"]) == b'"s"'
    [unlabelled_bytes] = parse(
        STRUCTURED, {**{k: v for k, v in EVENT.items() if k != "data"}, "data_base64": "AAE="}
    )
    assert unlabelled_bytes["datacontenttype"] == "application/octet-stream"
    [extensions] = parse(STRUCTURED, {**EVENT, "time": "2025-01-01T00:00:00Z", "priority": 3, "gone": None})
    assert (
        extensions["time"] == "2025-01-01T00:00:00Z"
        and extensions["priority"] == 3
        and "gone" not in extensions
    )


@pytest.mark.parametrize(
    ("event", "detail"),
    [
        ({**EVENT, "specversion": "1.1"}, "'1.0'"),
        ({**EVENT, "id": 5}, "'id' must be a string"),
        ({**EVENT, "data_base64": "AAE="}, "not both"),
        ({k: v for k, v in EVENT.items() if k != "data"}, "no data"),
        ({**EVENT, "data": None}, "null"),
        ({**EVENT, "agmsgtype": None}, "'agmsgtype' must be a string"),
        ({**{k: v for k, v in EVENT.items() if k != "data"}, "data_base64": "not base64!"}, "base64"),
        (
            {
                **{k: v for k, v in EVENT.items() if k != "data"},
                "data_base64": "AAE=",
                "datacontenttype": "application/json",
            },
            "no JSON",
        ),
        ({**EVENT, "Upper": "x"}, "'Upper'"),
        ({**EVENT, "nested": {"a": 1}}, "'nested' must be a string, an integer or a boolean"),
        ({**EVENT, "dataschema": False}, "'dataschema' must be a string"),
    ],
)
def test_structured_mode_refuses_invalid_events_precisely(event: dict[str, Any], detail: str) -> None:
    found = problem(STRUCTURED, event)
    assert (found.status, found.kind) == (400, "invalid-event")
    assert detail in found.detail, found.detail


def test_a_batch_is_checked_whole_and_every_bad_event_is_listed() -> None:
    frames = parse(BATCH, [EVENT, {**EVENT, "id": "e2"}])
    assert [f["id"] for f in frames] == ["e1", "e2"]
    assert parse(BATCH, []) == []
    found = problem(BATCH, [EVENT, {**EVENT, "source": ""}, 7])
    assert found.status == 400
    assert [e["index"] for e in found.errors] == [1, 2]
    assert found.detail.startswith("2 of 3 events are invalid; none was published. Event 1:")
    assert problem(BATCH, {"not": "a list"}).status == 400
    assert "not JSON" in problem(STRUCTURED, b"{").detail


def test_size_limits_and_other_formats() -> None:
    big = {**EVENT, "data": {"content": "x" * LIMIT}}
    assert (problem(STRUCTURED, big).status, problem(STRUCTURED, big).kind) == (413, "too-large")
    assert problem(BATCH, [big]).status == 413
    assert problem(BATCH, [big, {**EVENT, "id": ""}]).status == 400
    found = problem({"content-type": "application/cloudevents+avro"}, b"\x00")
    assert (found.status, found.kind) == (415, "unsupported-event-format")


# -- the route, on a real host -----------------------------------------------------------------


@pytest.fixture
async def http(server: HttpAgentServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as client:
        yield client


@pytest.fixture
async def inbox(make_worker: WorkerFactory) -> Inbox:
    """Agent type 'recorder' on a worker, subscribed to topic type 'greetings'."""
    queue: Inbox = asyncio.Queue()
    worker = await make_worker()
    await Recorder.register(worker, "recorder", lambda: Recorder(queue))
    await worker.add_subscription(TypeSubscription("greetings", "recorder"))
    return queue


async def received(inbox: Inbox) -> tuple[AgentId, Any, MessageContext]:
    return await bounded(inbox.get())


async def test_events_from_the_cloudevents_sdk_reach_subscribed_agents(
    http: httpx.AsyncClient, inbox: Inbox
) -> None:
    current = CloudEvent(
        attributes={"type": "greetings", "source": "lobby", "agmsgtype": "Text"}, data={"content": "a"}
    )
    legacy = CloudEventV1({"type": "greetings", "source": "hall", "agmsgtype": "Text"}, {"content": "b"})
    sent: list[tuple[dict[str, str], bytes, str, str, Text]] = []
    for message in (ce_http.to_binary_event(current), ce_http.to_structured_event(current)):
        sent.append((message.headers, message.body, current.get_id(), "lobby", Text("a")))
    for headers, body in (ce_v1_conversion.to_binary(legacy), ce_v1_conversion.to_structured(legacy)):
        sent.append((headers, body, legacy["id"], "hall", Text("b")))

    for headers, body, event_id, source, expected in sent:
        answer = await http.post("/v1/events", headers=headers, content=body)
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"ids": [event_id], "delivered": 1}
        recipient, message, ctx = await received(inbox)
        assert (recipient, message) == (AgentId("recorder", source), expected)
        assert ctx.topic_id == TopicId("greetings", source) and ctx.sender is None and not ctx.is_rpc
        assert ctx.message_id == event_id


async def test_a_batch_is_delivered_in_order(http: httpx.AsyncClient, inbox: Inbox) -> None:
    events = [{**EVENT, "id": f"e{i}", "data": {"content": str(i)}} for i in range(20)]
    answer = await http.post("/v1/events", headers=BATCH, json=events)
    assert answer.status_code == 202
    assert answer.json() == {"ids": [f"e{i}" for i in range(20)], "delivered": 20}
    assert [(await received(inbox))[1] for _ in range(20)] == [Text(str(i)) for i in range(20)]


async def test_a_refused_batch_publishes_nothing(http: httpx.AsyncClient, inbox: Inbox) -> None:
    refused = await http.post("/v1/events", headers=BATCH, json=[EVENT, {**EVENT, "type": "bad type"}])
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"
    body = refused.json()
    assert body["type"] == "urn:autogen-http:problem:invalid-event" and body["status"] == 400
    assert body["errors"] == [{"index": 1, "detail": body["errors"][0]["detail"]}]
    # The next event is the first to arrive: the refused batch left nothing behind.
    marker = {**EVENT, "id": "marker", "data": {"content": "marker"}}
    assert (await http.post("/v1/events", headers=STRUCTURED, json=marker)).status_code == 202
    assert (await received(inbox))[1] == Text("marker")


async def test_a_protobuf_event_in_binary_mode(http: httpx.AsyncClient, make_worker: WorkerFactory) -> None:
    queue: Inbox = asyncio.Queue()
    worker = await make_worker()
    worker.add_message_serializer(try_get_known_serializers_for_type(StringValue))
    await worker.register_factory("pb", lambda: _AnyRecorder(queue))
    await worker.add_subscription(TypeSubscription("pb-topic", "pb"))
    headers = {
        **BINARY,
        "ce-type": "pb-topic",
        "ce-agmsgtype": "google.protobuf.StringValue",
        "content-type": PROTOBUF_DATA_CONTENT_TYPE,
    }
    packed = any_pb2.Any()  # autogen-core's protobuf serializer wraps messages in an Any
    packed.Pack(StringValue(value="pb"))
    answer = await http.post("/v1/events", headers=headers, content=packed.SerializeToString())
    assert answer.status_code == 202
    assert (await received(queue))[1] == StringValue(value="pb")


async def test_the_sender_named_by_agsender_does_not_get_its_own_event(
    http: httpx.AsyncClient, inbox: Inbox
) -> None:
    own = {**EVENT, "id": "own", "source": "me", "agsender": "recorder/me"}
    answer = await http.post("/v1/events", headers=STRUCTURED, json=own)
    assert answer.status_code == 202 and answer.json()["delivered"] == 0
    other = {**EVENT, "id": "other", "source": "you", "agsender": "recorder/me"}
    assert (await http.post("/v1/events", headers=STRUCTURED, json=other)).json()["delivered"] == 1
    recipient, message, ctx = await received(inbox)
    assert recipient == AgentId("recorder", "you") and ctx.sender == AgentId("recorder", "me")


async def test_no_subscriber_is_not_an_error(http: httpx.AsyncClient) -> None:
    answer = await http.post("/v1/events", headers=STRUCTURED, json={**EVENT, "type": "nobody-listens"})
    assert (answer.status_code, answer.json()) == (202, {"ids": ["e1"], "delivered": 0})


async def test_too_large_bodies_and_a_stopping_host_are_refused() -> None:
    app = FastAPI()
    service = HttpAgentService(max_message_size=4096)
    app.include_router(service.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        big = await client.post("/v1/events", headers=STRUCTURED, json={**EVENT, "data": "x" * 5000})
        assert big.status_code == 413 and big.json()["type"] == "urn:autogen-http:problem:too-large"
        assert (await client.post("/v1/events", headers=STRUCTURED, json=EVENT)).status_code == 202
        await bounded(service.close(grace=0))
        stopping = await client.post("/v1/events", headers=STRUCTURED, json=EVENT)
        assert stopping.status_code == 503
        assert stopping.json()["type"] == "urn:autogen-http:problem:shutting-down"
    assert not service.core.sessions, "every request's local session was closed"


class _AnyRecorder(Recorder):
    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        self.inbox.put_nowait((self.id, message, ctx))
        return None
