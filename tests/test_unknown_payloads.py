"""Payloads a serving worker cannot read: an unknown type, or data that does not fit its type.

A call is answered -32602 naming the type (and, for data that does not fit, a short reason,
never a traceback), from the HTTP API and over the WebSocket alike. An event has nobody to
answer: the receiving worker logs a WARNING once per type (then DEBUG), and its agent gets
autogen-core's ``UnknownPayload`` (an event whose data does not fit is dropped).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from autogen_core import (
    MessageContext,
    RoutedAgent,
    TypeSubscription,
    UnknownPayload,
    message_handler,
)
from pydantic import BaseModel
from websockets.asyncio.client import connect

from autogen_http_runtime import HttpAgentServer
from autogen_http_runtime._constants import PROTOCOL_VERSION, WORKER_LOGGER, WORKER_WS_PATH
from autogen_http_runtime._exceptions import ErrorCode

from .conftest import WorkerFactory
from .utils import TIMEOUT, Text, Upper, bounded

JsonObject = dict[str, Any]


class Reading(BaseModel):
    sensor: str
    value: float


class Meter(RoutedAgent):
    """Answers a Reading with its value doubled."""

    def __init__(self) -> None:
        super().__init__("reads meters")

    @message_handler
    async def on_reading(self, message: Reading, ctx: MessageContext) -> Reading:
        return Reading(sensor=message.sensor, value=2 * message.value)


class Anything(RoutedAgent):
    """Puts whatever it receives, handled or not, in ``inbox``."""

    def __init__(self, inbox: asyncio.Queue[Any]) -> None:
        super().__init__("takes anything")
        self.inbox = inbox

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        self.inbox.put_nowait(message)

    async def on_unhandled_message(self, message: Any, ctx: MessageContext) -> None:
        self.inbox.put_nowait(message)


def call(agent_type: str, data_type: str, data: Any) -> JsonObject:
    payload = {"data_type": data_type, "data": data}
    return {
        "jsonrpc": "2.0",
        "id": "c1",
        "method": "send",
        "params": {"recipient": {"type": agent_type, "key": "k"}, "payload": payload},
    }


def assert_no_internals(error: JsonObject) -> None:
    assert "data" not in error  # no traceback, no exception details
    assert "Traceback" not in error["message"] and ".py" not in error["message"]


@pytest.mark.parametrize(
    ("agent_type", "data_type", "data", "expected"),
    [
        pytest.param(
            "upper",
            "Txt",
            {"content": "hi"},
            "Message type 'Txt' (application/json) is unknown to the worker serving upper/k: no "
            "serializer is registered for it there; the call was not delivered.",
            id="unknown-type",
        ),
        pytest.param(
            "upper",
            "Text",
            {"contnt": "hi"},
            "The payload's data does not fit message type 'Text': TypeError: "
            "Text.__init__() got an unexpected keyword argument 'contnt'",
            id="dataclass-misfit",
        ),
        pytest.param(
            "meter",
            "Reading",
            {"sensor": "s1", "value": "high"},
            "The payload's data does not fit message type 'Reading': value: Input should be a valid "
            "number, unable to parse string as a number",
            id="model-misfit",
        ),
    ],
)
async def test_a_call_with_a_payload_the_worker_cannot_read_is_invalid_params(
    server: HttpAgentServer,
    make_worker: WorkerFactory,
    agent_type: str,
    data_type: str,
    data: Any,
    expected: str,
) -> None:
    serving = await make_worker()
    await Upper.register(serving, "upper", Upper)
    await Meter.register(serving, "meter", Meter)
    request = call(agent_type, data_type, data)

    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as http:
        over_http = (await bounded(http.post("/v1/rpc", json=request))).json()
    url = server.url.replace("http", "ws", 1) + WORKER_WS_PATH
    async with connect(url, open_timeout=TIMEOUT) as ws:
        hello = {"jsonrpc": "2.0", "id": 0, "method": "hello", "params": {"protocol": PROTOCOL_VERSION}}
        await ws.send(json.dumps(hello))
        await bounded(ws.recv())
        await ws.send(json.dumps(request))
        over_websocket = json.loads(await bounded(ws.recv()))

    for answer in (over_http, over_websocket):
        assert answer["id"] == "c1"
        assert answer["error"]["code"] == ErrorCode.INVALID_PARAMS
        assert answer["error"]["message"] == expected
        assert_no_internals(answer["error"])
    # The worker is fine: a good call still works.
    good = call("meter", "Reading", {"sensor": "s1", "value": 2})
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as http:
        answer = (await bounded(http.post("/v1/rpc", json=good))).json()
    assert answer["result"]["payload"]["data"] == {"sensor": "s1", "value": 4.0}


async def test_an_event_of_an_unknown_type_reaches_the_agent_and_is_logged_once(
    server: HttpAgentServer, make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, WORKER_LOGGER)
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    serving = await make_worker()
    await serving.register_factory("anything", lambda: Anything(inbox))
    await serving.add_subscription(TypeSubscription("news", "anything"))

    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as http:
        for n in range(3):
            event = {"specversion": "1.0", "id": f"e{n}", "source": "s", "type": "news", "agmsgtype": "Txt"}
            answer = await bounded(
                http.post(
                    "/v1/events",
                    json={**event, "data": {"content": str(n)}},
                    headers={"Content-Type": "application/cloudevents+json"},
                )
            )
            # The host cannot know worker payload types: 'delivered' counts the copies queued.
            assert answer.json() == {"ids": [f"e{n}"], "delivered": 1}
            received = await bounded(inbox.get())
            assert isinstance(received, UnknownPayload) and received.type_name == "Txt"

    about = [r for r in caplog.records if "'Txt'" in r.getMessage()]
    assert [r.levelno for r in about] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "e0" in about[0].getMessage() and "news" in about[0].getMessage()
    assert "UnknownPayload" in about[0].getMessage()


async def test_an_event_whose_data_does_not_fit_is_dropped_with_a_warning(
    server: HttpAgentServer, make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, WORKER_LOGGER)
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    serving = await make_worker()
    await serving.register_factory("anything", lambda: Anything(inbox))
    await serving.add_subscription(TypeSubscription("news", "anything"))

    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as http:
        for data in ({"contnt": "bad"}, {"contnt": "bad again"}, {"content": "good"}):
            event = {"specversion": "1.0", "id": "e", "source": "s", "type": "news", "agmsgtype": "Text"}
            answer = await bounded(
                http.post(
                    "/v1/events",
                    json={**event, "data": data},
                    headers={"Content-Type": "application/cloudevents+json"},
                )
            )
            assert answer.status_code == 202
    assert await bounded(inbox.get()) == Text("good")  # the bad ones never reached the agent
    assert inbox.empty()
    dropped = [r for r in caplog.records if r.getMessage().startswith("Dropped event")]
    assert [r.levelno for r in dropped] == [logging.WARNING, logging.DEBUG]
    assert "does not fit message type 'Text'" in dropped[0].getMessage()
    assert all(r.exc_info is None for r in dropped)  # no traceback in the log either
