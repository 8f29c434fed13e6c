"""Point-to-point calls between agents over a real host and real WebSockets."""

from __future__ import annotations

import asyncio

import pytest
from autogen_core import AgentId, CancellationToken, MessageContext, RoutedAgent, message_handler

from autogen_http_runtime import (
    AgentNotFoundError,
    AgentTypeConflictError,
    CallTimeoutError,
    HttpAgentServer,
    HttpRuntimeError,
    RemoteAgentError,
    SerializationError,
)

from .conftest import WorkerFactory
from .utils import Text, Upper, bounded, owners

#: Each test that uses ``server`` runs on both WebSocket paths (conftest.py).
BOTH_PATHS = True


async def test_call_between_workers(make_worker: WorkerFactory) -> None:
    serving = await make_worker()
    calling = await make_worker()
    await Upper.register(serving, "upper", Upper)
    reply = await bounded(calling.send_message(Text("hello"), AgentId("upper", "default")))
    assert reply == Text("HELLO")


async def test_call_on_same_worker(make_worker: WorkerFactory) -> None:
    worker = await make_worker()
    await Upper.register(worker, "upper", Upper)
    assert await bounded(worker.send_message(Text("same"), AgentId("upper", "k1"))) == Text("SAME")


async def test_handler_returning_none_answers_none(make_worker: WorkerFactory) -> None:
    serving = await make_worker()
    calling = await make_worker()
    await Upper.register(serving, "upper", Upper)
    assert await bounded(calling.send_message(Text("none"), AgentId("upper", "default"))) is None


async def test_remote_exception_reaches_caller_typed(make_worker: WorkerFactory) -> None:
    serving = await make_worker()
    calling = await make_worker()
    await Upper.register(serving, "upper", Upper)
    with pytest.raises(RemoteAgentError) as caught:
        await bounded(calling.send_message(Text("boom"), AgentId("upper", "default")))
    assert caught.value.remote_type == "ValueError"
    assert caught.value.remote_message == "kaboom"
    assert "kaboom" in str(caught.value)
    assert caught.value.remote_traceback is not None and "ValueError" in caught.value.remote_traceback
    # The worker and host keep serving after a failing handler.
    assert await bounded(calling.send_message(Text("ok"), AgentId("upper", "default"))) == Text("OK")


async def test_factory_exception_reaches_caller(make_worker: WorkerFactory) -> None:
    serving = await make_worker()
    calling = await make_worker()

    def broken_factory() -> Upper:
        raise RuntimeError("cannot build the agent")

    await serving.register_factory("broken", broken_factory)
    with pytest.raises(RemoteAgentError) as caught:
        await bounded(calling.send_message(Text("x"), AgentId("broken", "default")))
    assert caught.value.remote_type == "RuntimeError"
    assert "cannot build the agent" in caught.value.remote_message


async def test_unknown_agent_type_is_lookup_error(make_worker: WorkerFactory) -> None:
    calling = await make_worker()
    with pytest.raises(LookupError) as caught:
        await bounded(calling.send_message(Text("x"), AgentId("nobody", "default")))
    assert isinstance(caught.value, AgentNotFoundError)
    assert "nobody" in str(caught.value)


async def test_unserializable_message_fails_at_once(make_worker: WorkerFactory) -> None:
    serving = await make_worker()
    await Upper.register(serving, "upper", Upper)

    class NotRegistered:
        pass

    with pytest.raises(SerializationError, match="No serializer"):
        await bounded(serving.send_message(NotRegistered(), AgentId("upper", "default")))


async def test_replies_reach_their_own_callers(make_worker: WorkerFactory) -> None:
    serving = await make_worker()
    await Upper.register(serving, "upper", Upper)
    callers = [await make_worker() for _ in range(3)]
    calls = [
        caller.send_message(Text(f"c{c}-m{i}"), AgentId("upper", str(i % 4)))
        for c, caller in enumerate(callers)
        for i in range(40)
    ]
    replies = await bounded(asyncio.gather(*calls))
    expected = [Text(f"C{c}-M{i}") for c in range(len(callers)) for i in range(40)]
    assert replies == expected


async def test_agent_type_unique_across_workers(make_worker: WorkerFactory, server: HttpAgentServer) -> None:
    first = await make_worker()
    second = await make_worker()
    await Upper.register(first, "upper", Upper)
    with pytest.raises(AgentTypeConflictError, match="already registered"):
        await bounded(second.register_factory("upper", Upper))
    assert isinstance(AgentTypeConflictError("x"), ValueError)
    # The rejected registration left nothing behind on the second worker: it can register
    # the type once the first worker is gone.
    await bounded(first.stop())
    await bounded(second.register_factory("upper", Upper))
    assert set(owners(server.service.core)) == {"upper"}


async def test_duplicate_type_on_one_worker_is_value_error(make_worker: WorkerFactory) -> None:
    worker = await make_worker()
    await worker.register_factory("upper", Upper)
    with pytest.raises(ValueError, match="already exists"):
        await worker.register_factory("upper", Upper)


async def test_registration_before_start_is_acknowledged_by_start(
    make_worker: WorkerFactory, server: HttpAgentServer
) -> None:
    worker = await make_worker(start=False)
    await Upper.register(worker, "upper", Upper)
    assert "upper" not in owners(server.service.core)
    await bounded(worker.start())
    assert "upper" in owners(server.service.core)
    calling = await make_worker()
    assert await bounded(calling.send_message(Text("a"), AgentId("upper", "default"))) == Text("A")


async def test_register_instance_twice_for_one_type(make_worker: WorkerFactory) -> None:
    worker = await make_worker()
    calling = await make_worker()
    await Upper().register_instance(worker, AgentId("upper", "a"))
    await Upper().register_instance(worker, AgentId("upper", "b"))
    assert await bounded(calling.send_message(Text("b"), AgentId("upper", "b"))) == Text("B")


class Slow(RoutedAgent):
    def __init__(self, started: asyncio.Event, cancelled: asyncio.Event) -> None:
        super().__init__("waits until cancelled")
        self._started = started
        self._cancelled = cancelled

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self._started.set()
        seen = asyncio.Event()
        ctx.cancellation_token.add_callback(seen.set)
        await seen.wait()
        self._cancelled.set()
        return Text("too late")


async def test_cancellation_reaches_remote_handler(
    make_worker: WorkerFactory, server: HttpAgentServer
) -> None:
    serving = await make_worker()
    calling = await make_worker()
    started, cancelled = asyncio.Event(), asyncio.Event()
    await serving.register_factory("slow", lambda: Slow(started, cancelled))
    token = CancellationToken()
    call = asyncio.ensure_future(
        calling.send_message(Text("x"), AgentId("slow", "default"), cancellation_token=token)
    )
    await bounded(started.wait())
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(call)
    await bounded(cancelled.wait())
    # The host forwarded the cancel before the handler saw it, so it holds nothing for the call.
    assert server.service.core.pending_calls == 0


async def test_per_call_deadline(make_worker: WorkerFactory) -> None:
    serving = await make_worker()
    calling = await make_worker()
    started, cancelled = asyncio.Event(), asyncio.Event()
    await serving.register_factory("slow", lambda: Slow(started, cancelled))
    with pytest.raises(CallTimeoutError) as caught:
        await bounded(calling.send_message(Text("x"), AgentId("slow", "default"), timeout=0.2))
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, HttpRuntimeError)
    # The deadline also cancels the remote handler.
    await bounded(cancelled.wait())


class Relay(RoutedAgent):
    """Answers by calling another agent first: the inner reply comes back on the same connection."""

    def __init__(self) -> None:
        super().__init__("relays to upper")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        inner = await self.send_message(Text(message.content + "!"), AgentId("upper", "default"))
        assert isinstance(inner, Text)
        return Text("relayed " + inner.content)


async def test_handler_may_call_back_over_same_connection(make_worker: WorkerFactory) -> None:
    worker = await make_worker()
    await Upper.register(worker, "upper", Upper)
    await Relay.register(worker, "relay", Relay)
    calling = await make_worker()
    reply = await bounded(calling.send_message(Text("hi"), AgentId("relay", "default")))
    assert reply == Text("relayed HI!")
