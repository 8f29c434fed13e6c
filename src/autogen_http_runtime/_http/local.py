"""An HTTP request as a peer of the routing core: the HTTP API's transport.

Each ``POST /v1/rpc`` and ``POST /v1/events`` opens a local session (no ``hello``, never
listed as a worker), hands the core the messages it decoded from the body, and reads the
answers, the message objects themselves, from the session's outbox. Closing it (the
request ending, however it ends) cancels whatever it still had in flight, so a caller
that hangs up leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Final

from .._host.core import RoutingCore
from .._host.security import Identity
from .._host.transport import Transport
from .._protocol.wire import Message

#: The name the core's local sessions of the HTTP API carry.
LOCAL_NAME: Final = "http"


class LocalTransport(Transport):
    """One HTTP request's session; use as ``async with LocalTransport(...) as caller``."""

    def __init__(self, core: RoutingCore, identity: Identity, *, slow_consumer_timeout: float) -> None:
        super().__init__(
            core,
            core.open_session(local=LOCAL_NAME, identity=identity),
            slow_consumer_timeout=slow_consumer_timeout,
        )

    def pause_reading(self) -> None:
        pass  # send() awaits readable(): the next message waits there

    def resume_reading(self) -> None:
        pass

    async def send(self, messages: Sequence[Message]) -> None:
        """Route messages, then wait while a worker they went to is behind (back-pressure)."""
        self.receive(messages)
        await self.readable()

    async def __aenter__(self) -> LocalTransport:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        self.core.close_session(self.session, "HTTP request finished")
