"""What the tests of the host's A2A endpoints share: the agents they serve, and the A2A SDK's
own client to call them (nothing of ours on the client side)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from a2a.client import Client, ClientCallContext, ClientConfig, create_client
from a2a.helpers import new_data_part, new_text_part
from a2a.types import Message, Part, Role, SendMessageRequest, StreamResponse, Task
from autogen_core import MessageContext, MessageSerializer, RoutedAgent, message_handler
from pydantic import BaseModel

from autogen_http_runtime import HttpWorkerAgentRuntime
from autogen_http_runtime.a2a._parts import from_parts

from .utils import Text, bounded


class Order(BaseModel):
    item: str
    qty: int


class Receipt(BaseModel):
    item: str
    qty: int
    total: float


@dataclass
class Seen:
    """What the test agents saw: the keys they were called with, and their handlers' fate."""

    keys: list[str] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


class Shout(RoutedAgent):
    """``Text`` in, ``Text`` upper-cased out; ``boom`` raises ValueError("kaboom"), ``none``
    answers None, ``wait`` runs until its cancellation token is cancelled."""

    def __init__(self, seen: Seen) -> None:
        super().__init__("Shouts back.")
        self._seen = seen

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text | None:
        self._seen.keys.append(self.id.key)
        if message.content == "boom":
            raise ValueError("kaboom")
        if message.content == "none":
            return None
        if message.content == "wait":
            token = asyncio.Event()
            ctx.cancellation_token.add_callback(token.set)
            self._seen.started.set()
            await token.wait()
            self._seen.cancelled.set()
            raise asyncio.CancelledError
        return Text(message.content.upper())


class Till(RoutedAgent):
    """``Order`` in, ``Receipt`` out, at 1.5 a piece."""

    def __init__(self) -> None:
        super().__init__("Rings up orders.")

    @message_handler
    async def on_order(self, message: Order, ctx: MessageContext) -> Receipt:
        return Receipt(item=message.item, qty=message.qty, total=1.5 * message.qty)


class StringSerializer(MessageSerializer[str]):
    """A ``str`` as a JSON string (as in samples/string_serializer.py)."""

    @property
    def data_content_type(self) -> str:
        return "application/json"

    @property
    def type_name(self) -> str:
        return "str"

    def deserialize(self, payload: bytes) -> str:
        value = json.loads(payload)
        assert isinstance(value, str)
        return value

    def serialize(self, message: str) -> bytes:
        return json.dumps(message).encode()


class Echo(RoutedAgent):
    """``str`` in, ``str`` out."""

    def __init__(self) -> None:
        super().__init__("Echoes.")

    @message_handler
    async def on_str(self, message: str, ctx: MessageContext) -> str:
        return f"echo: {message}"


async def serve_agents(worker: HttpWorkerAgentRuntime, seen: Seen) -> None:
    """``shout`` (Text), ``till`` (Order) described for A2A, and ``plain``, which is not."""
    await Shout.register(worker, "shout", lambda: Shout(seen))
    await worker.register_a2a_skill(
        "shout", name="Shout", description="Shouts back.", input_type=Text, output_type=Text
    )
    await Till.register(worker, "till", Till)
    await worker.register_a2a_skill(
        "till", name="Till", description="Rings up orders.", input_type=Order, output_type=Receipt
    )
    await Shout.register(worker, "plain", lambda: Shout(seen))


def request(*parts: Part, context_id: str = "", message_id: str = "m-1") -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(role=Role.ROLE_USER, message_id=message_id, context_id=context_id, parts=list(parts))
    )


def text(value: str, **kwargs: Any) -> SendMessageRequest:
    return request(new_text_part(value), **kwargs)


def data(value: Any, **kwargs: Any) -> SendMessageRequest:
    return request(new_data_part(value), **kwargs)


async def client(http: httpx.AsyncClient, url: str, *, streaming: bool = False) -> Client:
    """The SDK's client for the agent at ``url``, from its Agent Card."""
    return await bounded(
        create_client(url, client_config=ClientConfig(httpx_client=http, streaming=streaming))
    )


async def events(
    sdk: Client, message: SendMessageRequest, context: ClientCallContext | None = None
) -> list[StreamResponse]:
    async def collect() -> list[StreamResponse]:
        return [event async for event in sdk.send_message(message, context=context)]

    return await bounded(collect())


async def task_of(sdk: Client, message: SendMessageRequest, context: ClientCallContext | None = None) -> Task:
    """The one answer of a call that is not streamed: a task."""
    [event] = await events(sdk, message, context)
    assert event.WhichOneof("payload") == "task", event
    return event.task


def artifact_value(task: Task) -> Any:
    """The value of the task's one artifact, as our own rule reads parts (whole numbers as int)."""
    [artifact] = task.artifacts
    return from_parts(artifact.parts)


@dataclass
class Stream:
    """A streamed call's events, read one at a time."""

    iterator: AsyncIterator[StreamResponse]

    async def next(self) -> StreamResponse:
        return await bounded(anext(self.iterator))


def stream(sdk: Client, message: SendMessageRequest) -> Stream:
    return Stream(aiter(sdk.send_message(message)))
