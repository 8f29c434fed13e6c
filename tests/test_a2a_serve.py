"""The host as an A2A server (HttpAgentServer(a2a=True)): a real host, a real worker over a real
WebSocket, and the A2A SDK's own client discovering the cards and calling the agents."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientCallContext
from a2a.client.errors import A2AClientError, AgentCardResolutionError
from a2a.helpers import new_raw_part
from a2a.types import CancelTaskRequest, GetTaskRequest, TaskState
from a2a.utils.errors import InvalidParamsError, TaskNotCancelableError

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime, SerializationError
from autogen_http_runtime._http.a2a_cards import AGENT_TYPES_EXTENSION, SCHEMAS_EXTENSION

from .a2a_serving import (
    Echo,
    Seen,
    StringSerializer,
    artifact_value,
    client,
    data,
    events,
    request,
    serve_agents,
    stream,
    task_of,
    text,
)
from .utils import SERIALIZERS, TIMEOUT, bounded


@pytest.fixture
async def host() -> AsyncIterator[HttpAgentServer]:
    server = HttpAgentServer("127.0.0.1", port=0, a2a=True)
    await bounded(server.start())
    try:
        yield server
    finally:
        await bounded(server.stop(grace=1))


@pytest.fixture
async def seen() -> Seen:
    return Seen()


@pytest.fixture
async def worker(host: HttpAgentServer, seen: Seen) -> AsyncIterator[HttpWorkerAgentRuntime]:
    runtime = HttpWorkerAgentRuntime(host.url)
    runtime.add_message_serializer(SERIALIZERS)
    await bounded(runtime.start())
    await serve_agents(runtime, seen)
    try:
        yield runtime
    finally:
        await bounded(runtime.stop())


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
        yield client


# -- cards -----------------------------------------------------------------------------------


async def test_each_described_type_has_a_card_the_sdk_reads(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime, http: httpx.AsyncClient
) -> None:
    url = f"{host.url}/a2a/till"
    card = await bounded(A2ACardResolver(http, url).get_agent_card())
    assert (card.name, card.description, card.version) == ("Till", "Rings up orders.", "1.0.0")
    assert [(i.url, i.protocol_binding, i.protocol_version) for i in card.supported_interfaces] == [
        (url, "JSONRPC", "1.0"),
        (url, "JSONRPC", "0.3"),
    ]
    assert card.capabilities.streaming
    assert [skill.id for skill in card.skills] == ["till"]
    assert list(card.default_output_modes) == ["application/json"]
    assert not card.security_schemes  # no authenticator: nothing to declare
    [extension] = card.capabilities.extensions
    assert extension.uri == SCHEMAS_EXTENSION
    schemas = dict(extension.params)
    assert schemas["input_type"] == "Order" and schemas["output_type"] == "Receipt"
    assert sorted(schemas["input_schema"]["required"]) == ["item", "qty"]


async def test_the_host_card_lists_the_described_types_only(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime, http: httpx.AsyncClient
) -> None:
    card = await bounded(A2ACardResolver(http, host.url).get_agent_card())
    assert [skill.id for skill in card.skills] == ["shout", "till"]  # not "plain"
    assert [i.url for i in card.supported_interfaces] == [f"{host.url}/a2a/shout", f"{host.url}/a2a/till"]
    [extension] = card.capabilities.extensions
    assert extension.uri == AGENT_TYPES_EXTENSION
    assert dict(extension.params["agent_cards"]) == {
        t: f"{host.url}/a2a/{t}/.well-known/agent-card.json" for t in ("shout", "till")
    }
    with pytest.raises(AgentCardResolutionError) as caught:
        await bounded(A2ACardResolver(http, f"{host.url}/a2a/plain").get_agent_card())
    assert caught.value.status_code == 404


async def test_no_card_without_a_described_type(host: HttpAgentServer, http: httpx.AsyncClient) -> None:
    for url in (host.url, f"{host.url}/a2a/nobody"):
        answer = await http.get(url + "/.well-known/agent-card.json")
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"


# -- calls -----------------------------------------------------------------------------------


async def test_a_text_part_becomes_the_input_type_and_the_context_the_agent_key(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime, http: httpx.AsyncClient, seen: Seen
) -> None:
    sdk = await client(http, f"{host.url}/a2a/shout")
    task = await task_of(sdk, text("hello"))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_value(task) == {"content": "HELLO"}  # Text("hello") in, Text("HELLO") out
    assert task.artifacts[0].name == "Text"
    assert seen.keys == [task.context_id]  # a new context: a fresh agent key
    again = await task_of(sdk, text("again", context_id=task.context_id))
    assert artifact_value(again) == {"content": "AGAIN"}
    assert seen.keys == [task.context_id] * 2
    await task_of(sdk, text("mine", context_id="conversation-7"))
    assert seen.keys[-1] == "conversation-7"
    # Finished tasks are kept for GetTask.
    assert (
        await bounded(sdk.get_task(GetTaskRequest(id=task.id)))
    ).status.state == TaskState.TASK_STATE_COMPLETED


async def test_a_data_part_becomes_a_model_and_the_reply_a_data_part(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime, http: httpx.AsyncClient
) -> None:
    sdk = await client(http, f"{host.url}/a2a/till")
    task = await task_of(sdk, data({"item": "tea", "qty": 2}))
    assert artifact_value(task) == {"item": "tea", "qty": 2, "total": 3}
    assert task.artifacts[0].parts[0].WhichOneof("content") == "data"
    # A text part holding JSON too, for a type with more than one field.
    task = await task_of(sdk, text('{"item": "cake", "qty": 1}'))
    assert artifact_value(task) == {"item": "cake", "qty": 1, "total": 1.5}


async def test_a_reply_of_none_completes_without_an_artifact(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime, http: httpx.AsyncClient
) -> None:
    task = await task_of(await client(http, f"{host.url}/a2a/shout"), text("none"))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED and not task.artifacts


async def test_a_str_agent_takes_and_gives_text(host: HttpAgentServer, http: httpx.AsyncClient) -> None:
    runtime = HttpWorkerAgentRuntime(host.url)
    # The host sends A2A input as JSON: a str needs a JSON serializer, and says so.
    with pytest.raises(SerializationError, match="has no JSON serializer"):
        await runtime.register_a2a_skill("echo", name="Echo", description="Echoes.", input_type=str)
    runtime.add_message_serializer(StringSerializer())
    await runtime.register_a2a_skill(
        "echo", name="Echo", description="Echoes.", input_type=str, output_type=str
    )
    await runtime.register_factory("echo", Echo)  # the skill first, the type after, both before start
    await bounded(runtime.start())
    try:
        sdk = await client(http, f"{host.url}/a2a/echo")
        assert list(sdk._card.default_output_modes) == ["text/plain"]  # type: ignore[attr-defined]
        task = await task_of(sdk, text("hi"))
        assert [part.text for part in task.artifacts[0].parts] == ["echo: hi"]
    finally:
        await bounded(runtime.stop())


async def test_the_agents_exception_fails_the_task_saying_why(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime, http: httpx.AsyncClient
) -> None:
    sdk = await client(http, f"{host.url}/a2a/shout")
    task = await task_of(sdk, text("boom"))
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert [part.text for part in task.status.message.parts] == ["ValueError: kaboom"]
    assert artifact_value(await task_of(sdk, text("still here"))) == {"content": "STILL HERE"}


@pytest.mark.parametrize(
    ("agent_type", "message", "says"),
    [
        ("till", data({"item": "tea", "qty": "lots"}), "Not a valid 'Order' at 'qty'"),
        ("till", data({"item": "tea"}), "'qty' is a required property"),
        ("shout", data({"content": "hi", "extra": 1}), "Additional properties are not allowed"),
        ("till", text("two teas please"), "the text is not JSON"),
        ("shout", request(new_raw_part(b"\x00")), "Expected a data or text part"),
        ("shout", text("hi", context_id="k" * 257), "contextId is longer than 256"),
    ],
    ids=["wrong-type", "missing-field", "unknown-field", "text-not-json", "raw-part", "long-context"],
)
async def test_bad_input_is_invalid_params_before_any_task(
    host: HttpAgentServer,
    worker: HttpWorkerAgentRuntime,
    http: httpx.AsyncClient,
    seen: Seen,
    agent_type: str,
    message: object,
    says: str,
) -> None:
    sdk = await client(http, f"{host.url}/a2a/{agent_type}")
    with pytest.raises(InvalidParamsError, match=says):
        await events(sdk, message)  # type: ignore[arg-type]
    assert seen.keys == []  # the agent never saw it
    assert host.service.core.pending_calls == 0


async def test_an_unknown_type_is_404_at_its_endpoint(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime, http: httpx.AsyncClient
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}}
    for agent_type in ("nobody", "plain"):  # unknown, and known but not described
        answer = await http.post(f"{host.url}/a2a/{agent_type}", json=body, headers={"A2A-Version": "1.0"})
        assert answer.status_code == 404
        assert agent_type in answer.json()["detail"]
    # The SDK's client, pointed at a type that went away, gets the HTTP error.
    sdk = await client(http, f"{host.url}/a2a/shout")
    await bounded(worker.stop())
    with pytest.raises(A2AClientError, match="404"):
        await events(sdk, text("hello"))


async def test_a_deadline_fails_the_task_and_cancels_the_handler(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime, http: httpx.AsyncClient, seen: Seen
) -> None:
    sdk = await client(http, f"{host.url}/a2a/shout")
    deadline = ClientCallContext(service_parameters={"X-Deadline": "0.2"})
    task = await task_of(sdk, text("wait"), deadline)
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert "deadline of 0.2 s passed" in task.status.message.parts[0].text
    await bounded(seen.cancelled.wait())  # the handler's cancellation token
    answer = await http.post(f"{host.url}/a2a/shout", json={}, headers={"X-Deadline": "soon"})
    assert answer.status_code == 400 and "X-Deadline" in answer.json()["detail"]


async def test_cancel_task_cancels_the_handler(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime, http: httpx.AsyncClient, seen: Seen
) -> None:
    sdk = await client(http, f"{host.url}/a2a/shout", streaming=True)
    running = stream(sdk, text("wait"))
    first = await running.next()
    assert first.WhichOneof("payload") == "task"  # the task's id comes first
    await bounded(seen.started.wait())
    cancelled = await bounded(sdk.cancel_task(CancelTaskRequest(id=first.task.id)))
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    await bounded(seen.cancelled.wait())
    with pytest.raises(TaskNotCancelableError):
        await bounded(sdk.cancel_task(CancelTaskRequest(id=first.task.id)))
    await bounded(running.iterator.aclose())  # type: ignore[attr-defined]
    assert host.service.core.pending_calls == 0


async def test_streaming_sends_the_task_its_progress_and_the_reply(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime, http: httpx.AsyncClient
) -> None:
    sdk = await client(http, f"{host.url}/a2a/shout", streaming=True)
    received = await events(sdk, text("hello"))
    assert [e.WhichOneof("payload") for e in received] == [
        "task",
        "status_update",
        "artifact_update",
        "status_update",
    ]
    assert received[1].status_update.status.state == TaskState.TASK_STATE_WORKING
    assert [p.data.struct_value["content"] for p in received[2].artifact_update.artifact.parts] == ["HELLO"]
    assert received[3].status_update.status.state == TaskState.TASK_STATE_COMPLETED


async def test_the_0_3_method_names_on_the_same_endpoint(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime, http: httpx.AsyncClient
) -> None:
    """A 0.3 client: ``message/send``, ``kind`` on parts, no ``A2A-Version`` header."""
    message = {
        "role": "user",
        "messageId": "m",
        "kind": "message",
        "parts": [{"kind": "text", "text": "old"}],
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}
    result = (await http.post(f"{host.url}/a2a/shout", json=body)).json()["result"]
    assert result["status"]["state"] == "completed"
    assert result["artifacts"][0]["parts"][0]["data"] == {"content": "OLD"}
    card = (await http.get(f"{host.url}/a2a/shout/.well-known/agent-card.json")).json()
    assert card["url"] == f"{host.url}/a2a/shout"  # the 0.3 card members
    # A 1.0 name needs the header.
    body["method"] = "SendMessage"
    assert (await http.post(f"{host.url}/a2a/shout", json=body)).json()["error"]["code"] == -32009


async def test_a_body_over_the_size_limit_is_413(
    host: HttpAgentServer, worker: HttpWorkerAgentRuntime
) -> None:
    limit = host.service.core.max_message_size
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
        answer = await http.post(f"{host.url}/a2a/shout", content=b"x" * (limit + 1))
    assert answer.status_code == 413
