"""An HTTP request as a peer of the routing core: the HTTP API's transport.

Each ``POST /v1/rpc`` and ``POST /v1/events`` opens a local session (no ``hello``, never
listed as a worker), hands the core the messages it decoded from the body, and reads the
answers, the message objects themselves, from the session's outbox. Closing it (the
request ending, however it ends) cancels whatever it still had in flight, so a caller
that hangs up leaves nothing behind.

:class:`AgentCall` is one call to one agent made that way and awaited (an A2A request's);
``POST /v1/rpc`` shares its answers for a deadline and a host shutting down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Final

from .._exceptions import ErrorCode
from .._host.core import RoutingCore
from .._host.security import Identity
from .._host.transport import Transport
from .._protocol import wire
from .._protocol.wire import JsonObject, Message, Method, RequestId

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

    def cancel(self, request_id: RequestId) -> None:
        """Give up on a call this session made: the host forgets it and tells the serving worker."""
        self.receive([wire.Notification(Method.CANCEL, {"id": request_id})])


def deadline_passed(request_id: RequestId | None, allowed: float) -> JsonObject:
    """The answer to a call whose deadline passed (and which was cancelled)."""
    return wire.error(
        request_id,
        ErrorCode.DEADLINE_EXCEEDED,
        f"The deadline of {allowed:g} s passed; the call was cancelled.",
    )


def host_shut_down(request_id: RequestId | None) -> JsonObject:
    """The answer to a call still open when the host shut down."""
    return wire.error(request_id, ErrorCode.SHUTTING_DOWN, "The host shut down before the call completed.")


class AgentCall:
    """One routed call (``send``, ...) made from inside the host, through the core, and its answer.

    Use as ``async with AgentCall(core, identity, ...) as call``: :meth:`start` routes the
    request, and :attr:`refused` is what the core answered at once (the access policy, the
    rate limit, no worker serving the type, ...); otherwise :meth:`answer` awaits the
    serving worker's answer. Leaving the block, however (a cancelled task included),
    cancels the call on the host and at the serving worker if it is still open.
    """

    #: The id of the call in its session: the only one.
    ID: Final = 0

    def __init__(self, core: RoutingCore, identity: Identity, *, slow_consumer_timeout: float) -> None:
        self._caller = LocalTransport(core, identity, slow_consumer_timeout=slow_consumer_timeout)
        self.refused: JsonObject | None = None

    async def start(self, method: str, params: JsonObject) -> None:
        """Route the request (waiting while the serving worker is behind); sets :attr:`refused`."""
        # A fresh session holds nothing back, so the core routes the request now, and what it
        # queued meanwhile is its own answer: a refusal. Only then wait for a worker behind.
        self._caller.receive([wire.Request(self.ID, method, params)])
        outbox = self._caller.session.outbox
        if not outbox.empty():
            self.refused = self._as_answer(outbox.get_nowait())
        await self._caller.readable()

    async def answer(self, timeout: float | None = None) -> JsonObject:
        """The answer, a JSON-RPC response or error object (id :attr:`ID`).

        After ``timeout`` seconds the call is cancelled and answered with ``DEADLINE_EXCEEDED``;
        if the host shuts down first, with ``SHUTTING_DOWN``.
        """
        if self.refused is not None:
            return self.refused
        try:
            item = await asyncio.wait_for(self._caller.session.outbox.get(), timeout)
        except asyncio.TimeoutError:
            assert timeout is not None
            self._caller.cancel(self.ID)
            return deadline_passed(self.ID, timeout)
        return self._as_answer(item)

    def _as_answer(self, item: object) -> JsonObject:
        # Anything but a message object is the session closing: the host shut down.
        return item if isinstance(item, dict) else host_shut_down(self.ID)

    async def __aenter__(self) -> AgentCall:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._caller.__aexit__(kind, exc, tb)
