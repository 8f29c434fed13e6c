"""The JSON Schemas shipped in the package against real traffic and against docs/protocol.md.

Every frame of a live exchange between a host and Python workers (every method, every
frame kind) and every body of real HTTP requests and answers must match its schema; so
must the JSON examples of the protocol page. A change to the wire that the schemas do not
describe fails here.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from autogen_core import (
    PROTOBUF_DATA_CONTENT_TYPE,
    AgentId,
    BaseAgent,
    CancellationToken,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
    message_handler,
    try_get_known_serializers_for_type,
)
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent
from google.protobuf.wrappers_pb2 import StringValue
from jsonschema import Draft202012Validator
from websockets.asyncio.client import connect

from autogen_http_runtime import (
    AgentNotFoundError,
    HttpAgentServer,
    RemoteAgentError,
    SubscriptionError,
)
from autogen_http_runtime._constants import PROTOCOL_VERSION, WORKER_WS_PATH
from autogen_http_runtime._protocol import schemas as _schemas

from .conftest import WorkerFactory
from .utils import TIMEOUT, Text, Upper, bounded
from .wire_schemas import AT_LEAST_ONCE_SCHEMAS, WS_FRAME_SCHEMAS, FrameRecorder, assert_valid, errors

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


class Anything(BaseAgent):
    """Accepts any message, protobuf ones included; answers None."""

    def __init__(self, inbox: asyncio.Queue[Any]) -> None:
        super().__init__("takes anything")
        self.inbox = inbox

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        self.inbox.put_nowait(message)
        return None


class Stateful(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("keeps a note")
        self.note = ""

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self.note = message.content
        return message

    async def save_state(self) -> dict[str, Any]:
        return {"note": self.note}

    async def load_state(self, state: Any) -> None:
        self.note = str(state["note"])


class Stalling(RoutedAgent):
    """Waits until its call is cancelled, then says so."""

    def __init__(self, started: asyncio.Event, cancelled: asyncio.Event) -> None:
        super().__init__("stalls")
        self.started, self.cancelled = started, cancelled

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self.started.set()
        ctx.cancellation_token.add_callback(self.cancelled.set)
        await self.cancelled.wait()
        return message


# -- the schema files themselves ---------------------------------------------------------------


def test_every_schema_is_valid_draft_2020_12_with_an_id_under_v1() -> None:
    schemas = _schemas.load_all()
    shipped = Path(_schemas.__file__).resolve().parent.parent / "schemas" / "v1"
    # Every file shipped loads, under its own id: common, ws/ (frames, frame, message), http/.
    assert len(schemas) == len(list(shipped.rglob("*.json")))
    for schema_id, schema in schemas.items():
        assert schema_id.startswith(_schemas.BASE_ID)
        Draft202012Validator.check_schema(schema)
    # ws/frame.json is the union of every other frame schema.
    union = _schemas.load("ws/frame.json")["anyOf"]
    assert sorted("ws/" + branch["$ref"] for branch in union) == WS_FRAME_SCHEMAS


def test_inlined_schemas_resolve_every_reference() -> None:
    for schema_id in _schemas.load_all():
        name = schema_id.removeprefix(_schemas.BASE_ID)
        assert "$ref" not in json.dumps(_schemas.inlined(name)), name
    # An inlined schema judges as the original does.
    event = {"specversion": "1.0", "id": "e", "source": "s", "type": "t", "agmsgtype": "T", "data": 1}
    inlined = Draft202012Validator(_schemas.inlined("http/cloudevent-batch.json"))
    assert inlined.is_valid([event]) and not errors("http/cloudevent-batch.json", [event])
    assert not inlined.is_valid([{**event, "source": ""}])
    assert errors("http/cloudevent-batch.json", [{**event, "source": ""}])


# -- frames of a live exchange -----------------------------------------------------------------


async def test_frames_of_a_live_exchange_match_the_schemas(
    server: HttpAgentServer, make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = FrameRecorder.install(server.service.core, monkeypatch)
    serving = await make_worker(name="serving")
    calling = await make_worker(payload_serialization_format=PROTOBUF_DATA_CONTENT_TYPE)
    calling.add_message_serializer(try_get_known_serializers_for_type(StringValue))
    serving.add_message_serializer(try_get_known_serializers_for_type(StringValue))

    inbox: asyncio.Queue[Any] = asyncio.Queue()
    started, cancelled = asyncio.Event(), asyncio.Event()
    await Upper.register(serving, "upper", Upper)
    await serving.register_a2a_skill(  # describe_agent_type
        "upper", name="Upper", description="Upper-cases text.", input_type=Text, output_type=Text
    )
    await Stateful.register(serving, "stateful", Stateful)
    await Stalling.register(serving, "stalling", lambda: Stalling(started, cancelled))
    await serving.register_factory("anything", lambda: Anything(inbox))
    await serving.add_subscription(TypeSubscription("greetings", "anything", id="greet"))
    await serving.add_subscription(TypePrefixSubscription("news.", "anything", id="news"))

    # Calls: a result, a None, a remote error, an unknown type, protobuf, state and metadata.
    assert await bounded(calling.send_message(Text("hi"), AgentId("upper", "k"))) == Text("HI")
    assert await bounded(calling.send_message(Text("none"), AgentId("upper", "k"))) is None
    with pytest.raises(RemoteAgentError):
        await bounded(calling.send_message(Text("boom"), AgentId("upper", "k")))
    with pytest.raises(AgentNotFoundError):
        await bounded(calling.send_message(Text("hi"), AgentId("nobody", "k")))
    assert await bounded(calling.send_message(StringValue(value="pb"), AgentId("anything", "k"))) is None
    stateful = AgentId("stateful", "k")
    await bounded(calling.send_message(Text("remember"), stateful))
    assert await bounded(calling.agent_save_state(stateful)) == {"note": "remember"}
    await bounded(calling.agent_load_state(stateful, {"note": "other"}))
    assert (await bounded(calling.agent_metadata(stateful)))["description"] == "keeps a note"

    # Durable agents: state.load (nothing saved yet, then a saved state) and state.save.
    durable = await make_worker(name="durable", persist_agent_state=True)
    await Stateful.register(durable, "durable", Stateful)
    await bounded(calling.send_message(Text("kept"), AgentId("durable", "k")))
    await bounded(durable.stop())
    durable = await make_worker(name="durable-2", persist_agent_state=True)
    await Stateful.register(durable, "durable", Stateful)
    assert await bounded(calling.agent_save_state(AgentId("durable", "k"))) == {"note": "kept"}

    # Subscriptions: a duplicate, a removal, a removal of nothing.
    with pytest.raises(SubscriptionError):
        await calling.add_subscription(TypeSubscription("greetings", "anything", id="greet"))
    await calling.add_subscription(TypeSubscription("gone", "upper", id="temporary"))
    await calling.remove_subscription("temporary")
    with pytest.raises(SubscriptionError):
        await calling.remove_subscription("temporary")

    # Events, JSON and protobuf.
    await calling.publish_message(StringValue(value="pb"), TopicId("news.pb", "lobby"))
    assert await bounded(inbox.get()) == StringValue(value="pb")  # the call's message
    assert await bounded(inbox.get()) == StringValue(value="pb")  # the event's
    calling.add_message_serializer(try_get_known_serializers_for_type(Text))
    await calling.publish_message(Text("hello"), TopicId("greetings", "lobby"))
    assert await bounded(inbox.get()) == Text("hello")

    # A cancelled call: cancel from the caller to the host, and from the host to the worker.
    token = CancellationToken()
    call = asyncio.ensure_future(
        calling.send_message(Text("wait"), AgentId("stalling", "k"), cancellation_token=token)
    )
    await bounded(started.wait())
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(call)
    await bounded(cancelled.wait())

    # A registration undone after the host accepted it: bind_id_and_runtime refuses a bound agent.
    instance = Stateful()
    await serving.register_agent_instance(instance, AgentId("instance-a", "k"))
    with pytest.raises(RuntimeError):
        await serving.register_agent_instance(instance, AgentId("instance-b", "k"))

    # Over HTTP too: a call and an event, through the host's local sessions.
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as http:
        answer = await http.post(
            "/v1/rpc",
            json={
                "jsonrpc": "2.0",
                "id": "h1",
                "method": "send",
                "params": {"recipient": {"type": "upper", "key": "k"}, "payload": _text("http")},
            },
        )
        assert answer.json()["result"]["payload"]["data"] == {"content": "HTTP"}
        binary = ce_http.to_binary_event(
            CloudEvent(
                attributes={"type": "greetings", "source": "web", "agmsgtype": "Text"},
                data={"content": "web"},
            )
        )
        assert (await http.post("/v1/events", headers=binary.headers, content=binary.body)).status_code == 202
    assert await bounded(inbox.get()) == Text("web")

    # A frame the host cannot read, from a raw client: an error with a null id.
    url = server.url.replace("http", "ws", 1) + WORKER_WS_PATH
    async with connect(url, open_timeout=TIMEOUT) as ws:
        await ws.send("not json")
        assert json.loads(await bounded(ws.recv()))["id"] is None
        await ws.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "hello", "params": {"protocol": PROTOCOL_VERSION}}
            )
        )
        await bounded(ws.recv())

    await bounded(calling.stop())  # says bye
    await bounded(serving.stop())

    seen: set[str] = set()
    for _, name, frame in recorder.classified():
        assert_valid(name, frame)
        assert_valid("ws/frame.json", frame)
        seen.add(name)
    expected = [name for name in WS_FRAME_SCHEMAS if name not in AT_LEAST_ONCE_SCHEMAS]
    assert sorted(seen) == expected, f"no frame seen for {set(expected) - seen}"


def _text(content: str) -> dict[str, Any]:
    return {"data_type": "Text", "data": {"content": content}}


# -- HTTP bodies -------------------------------------------------------------------------------


async def test_http_bodies_match_the_schemas(server: HttpAgentServer, make_worker: WorkerFactory) -> None:
    worker = await make_worker(name="py-a")
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    await Upper.register(worker, "upper", Upper)
    await worker.register_factory("anything", lambda: Anything(inbox))
    await worker.add_subscription(TypeSubscription("greetings", "anything"))
    await worker.add_subscription(TypePrefixSubscription("news.", "upper"))

    structured = ce_http.to_structured_event(
        CloudEvent(
            attributes={"type": "greetings", "source": "s", "agmsgtype": "Text"}, data={"content": "a"}
        )
    )
    event = json.loads(structured.body)
    batch = [event, {**event, "id": "second", "datacontenttype": "text/plain", "data": "plain"}]
    rpc_batch: list[dict[str, Any]] = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "send",
            "params": {"recipient": {"type": "upper", "key": "k"}, "payload": _text("x")},
        },
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "send",
            "params": {"recipient": {"type": "upper", "key": "k"}, "payload": _text("none")},
        },
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "send",
            "params": {"recipient": {"type": "upper", "key": "k"}, "payload": _text("boom")},
        },
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "agent_metadata",
            "params": {"recipient": {"type": "upper", "key": "k"}},
        },
        {
            "jsonrpc": "2.0",
            "id": "5",
            "method": "agent_load_state",
            "params": {"recipient": {"type": "nobody", "key": "k"}, "state": {}},
        },
        {
            "jsonrpc": "2.0",
            "method": "send",
            "params": {"recipient": {"type": "upper", "key": "k"}, "payload": _text("quiet")},
        },
    ]
    assert_valid("http/cloudevent.json", event)
    assert_valid("http/cloudevent-batch.json", batch)
    assert_valid("http/rpc-request.json", rpc_batch)
    assert_valid("http/rpc-request.json", rpc_batch[0])

    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as http:
        accepted = await http.post("/v1/events", headers=structured.headers, content=structured.body)
        assert accepted.status_code == 202
        assert_valid("http/events-accepted.json", accepted.json())
        accepted = await http.post(
            "/v1/events", headers={"content-type": "application/cloudevents-batch+json"}, json=batch
        )
        assert accepted.status_code == 202 and accepted.json()["ids"] == [event["id"], "second"]
        problems = [
            await http.post(
                "/v1/events", headers={"content-type": "application/cloudevents+json"}, content=b"{"
            ),
            await http.post(
                "/v1/events",
                headers={"content-type": "application/cloudevents-batch+json"},
                json=[event, {**event, "source": ""}],
            ),
            await http.post(
                "/v1/events", headers={"content-type": "application/cloudevents+xml"}, content=b"<e/>"
            ),
            await http.post("/v1/rpc", headers={"x-deadline": "soon"}, json=rpc_batch[0]),
        ]
        assert [p.status_code for p in problems] == [400, 400, 415, 400]
        for problem in problems:
            assert problem.headers["content-type"] == "application/problem+json"
            assert_valid("http/problem.json", problem.json())

        single = await http.post("/v1/rpc", json=rpc_batch[0])
        assert_valid("http/rpc-response.json", single.json())
        answers = (await http.post("/v1/rpc", json=rpc_batch)).json()
        assert [a["id"] for a in answers] == [1, 2, 3, 4, "5"]
        assert_valid("http/rpc-response.json", answers)
        for broken in ("[]", "{", "[1]"):
            assert_valid("http/rpc-response.json", (await http.post("/v1/rpc", content=broken)).json())

        for path, name in [
            ("/v1/agents", "http/agents.json"),
            ("/v1/subscriptions", "http/subscriptions.json"),
            ("/v1/workers", "http/workers.json"),
        ]:
            listing = await http.get(path)
            assert listing.status_code == 200
            assert_valid(name, listing.json())
    for _ in range(2):
        await bounded(inbox.get())


# -- docs/protocol.md --------------------------------------------------------------------------


def _json_lines(text: str) -> list[Any]:
    found = []
    for block in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL):
        found.extend(json.loads(line) for line in block.splitlines() if line.strip())
    return found


def _http_schema_for(example: dict[str, Any]) -> str:
    if "ids" in example:
        return "http/events-accepted.json"
    if str(example.get("type", "")).startswith("urn:autogen-http:problem:"):
        return "http/problem.json"
    if "jsonrpc" in example:
        return "http/rpc-response.json"
    if "agent_types" in example:
        return "http/agents.json"
    if "subscriptions" in example:
        return "http/subscriptions.json"
    if "dead_letters" in example:
        return "http/dead-letters.json"
    assert "protocol" in example, example
    return "http/workers.json"


def test_the_protocol_page_examples_match_the_schemas() -> None:
    text = DOC.read_text("utf-8")
    websocket_part, http_part = text.split("\n## HTTP API\n", 1)
    frames = _json_lines(websocket_part)
    assert len(frames) > 25
    for frame in frames:
        # The payloads section shows payload objects on their own; "Batches" shows a batch.
        if isinstance(frame, list):
            assert_valid("ws/message.json", frame)
        else:
            assert_valid("common.json#/$defs/payload" if "data_type" in frame else "ws/frame.json", frame)
    bodies = _json_lines(http_part)
    assert len(bodies) >= 9
    for body in bodies:
        assert_valid(_http_schema_for(body), body)


def test_the_protocol_page_python_snippet_validates_a_frame() -> None:
    http_part = DOC.read_text("utf-8").split("\n## JSON Schemas\n", 1)[1]
    [snippet] = re.findall(r"```python\n(.*?)```", http_part, flags=re.DOTALL)
    exec(compile(snippet, str(DOC), "exec"), {})
