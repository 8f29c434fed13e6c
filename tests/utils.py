"""Helpers shared by the tests: bounded waits and the agents and messages the tests use."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from autogen_core import (
    AgentId,
    BaseAgent,
    MessageContext,
    RoutedAgent,
    message_handler,
    try_get_known_serializers_for_type,
)
from autogen_core.exceptions import CantHandleException

from autogen_http_runtime._host.core import RoutingCore
from autogen_http_runtime._host.session import WorkerSession
from autogen_http_runtime._protocol.subscriptions import SubscriptionSpec

T = TypeVar("T")

#: Seconds for any single wait in the tests; scale with AUTOGEN_HTTP_TEST_TIMEOUT on slow machines.
TIMEOUT = float(os.environ.get("AUTOGEN_HTTP_TEST_TIMEOUT", "10"))


async def bounded(awaitable: Awaitable[T], seconds: float = TIMEOUT) -> T:
    """Await with a deadline, so that no test can hang."""
    return await asyncio.wait_for(awaitable, timeout=seconds)


@dataclass
class Text:
    content: str


@dataclass
class Ping:
    n: int


SERIALIZERS = [*try_get_known_serializers_for_type(Text), *try_get_known_serializers_for_type(Ping)]


class Upper(RoutedAgent):
    """Replies with the upper-cased text; 'boom' raises ValueError; 'none' returns None."""

    def __init__(self) -> None:
        super().__init__("upper-cases text")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text | None:
        if message.content == "boom":
            raise ValueError("kaboom")
        if message.content == "none":
            return None
        return Text(message.content.upper())


class Recorder(BaseAgent):
    """Puts (message, ctx) of everything it receives into a queue shared per test."""

    def __init__(self, inbox: asyncio.Queue[tuple[AgentId, Any, MessageContext]]) -> None:
        super().__init__("records messages")
        self.inbox = inbox

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        if isinstance(message, Text | Ping):
            self.inbox.put_nowait((self.id, message, ctx))
            return None
        raise CantHandleException(f"Recorder cannot handle {type(message).__name__}")


def owners(core: RoutingCore) -> dict[str, WorkerSession]:
    """Each agent type registered with ``core`` and the (first) worker session serving it."""
    return {agent_type: sessions[0] for agent_type, sessions in core.directory.agent_types().items()}


def subscriptions(core: RoutingCore) -> list[SubscriptionSpec]:
    """The subscriptions stored in ``core``, in the order they were added."""
    return [entry.spec for entry in core.directory.subscriptions()]


def connected_workers(core: RoutingCore) -> list[WorkerSession]:
    """The workers connected to ``core`` (that said hello)."""
    return list(core.directory.workers())
