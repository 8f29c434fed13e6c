"""A stopping worker: ``drain``, its handlers' grace period, then ``bye`` (docs/protocol.md, ``drain``).

Workers that are stopped or interrupted run in their own processes (``tests/procs/worker.py``,
whose handler answers only when told to on stdin); their callers and the host are real
runtimes on real sockets in this process.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest
from autogen_core import AgentId, CancellationToken, MessageContext, RoutedAgent, message_handler
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection

from autogen_http_runtime import (
    AgentNotFoundError,
    CallCancelledError,
    HostConnectionError,
    HttpAgentServer,
    WorkerDisconnectedError,
)
from autogen_http_runtime._constants import PROTOCOL_VERSION, WORKER_WS_PATH
from autogen_http_runtime._exceptions import ErrorCode
from autogen_http_runtime._host.control import Control
from autogen_http_runtime._protocol.wire import MessageError, Request

from .conftest import WorkerFactory
from .test_processes import Child, spawn
from .test_server import until
from .test_websocket_client import answer, fake_host, frames_of, worker
from .utils import TIMEOUT, Text, Upper, bounded, owners, subscriptions


async def tell(child: Child, line: str) -> None:
    assert child.proc.stdin is not None
    child.proc.stdin.write(line.encode() + b"\n")
    await bounded(child.proc.stdin.drain())


async def test_stop_lets_a_running_handler_answer_its_caller(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    core = server.service.core
    caller = await make_worker()
    async with spawn("worker", server.url, "slowpoke", "--until", "stdin") as child:
        await child.expect("READY")
        session = owners(core)["slowpoke"]
        call = asyncio.ensure_future(caller.send_message(Text("x"), AgentId("slowpoke", "k")))
        await child.expect("started x")

        await tell(child, "stop")
        # The host takes the worker out of placement at once, and keeps its session for the answer.
        await until(lambda: session.draining)
        assert "slowpoke" not in owners(core)
        assert [s for s in subscriptions(core) if s.agent_type == "slowpoke"] == []
        assert session.worker_id in core.sessions
        # A new call is not routed to the draining worker: nobody else serves the type.
        with pytest.raises(AgentNotFoundError):
            await bounded(caller.send_message(Text("late"), AgentId("slowpoke", "k")))
        assert not call.done()

        await tell(child, "release")
        assert await bounded(call) == Text("X")
        await child.expect("STOPPED")
        assert await bounded(child.proc.wait()) == 0
    assert session.worker_id not in core.sessions
    assert core.pending_calls == 0


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_stop_when_signal_drains_and_another_worker_takes_the_type_meanwhile(
    server: HttpAgentServer, make_worker: WorkerFactory, stop_signal: signal.Signals
) -> None:
    core = server.service.core
    caller = await make_worker()
    async with spawn("worker", server.url, "handover") as child:
        await child.expect("READY")
        session = owners(core)["handover"]
        old_call = asyncio.ensure_future(caller.send_message(Text("old"), AgentId("handover", "k")))
        await child.expect("started old")

        child.proc.send_signal(stop_signal)
        await until(lambda: session.draining)
        # The type is free at once: another worker registers it, and new calls go there.
        taker = await make_worker()
        await Upper.register(taker, "handover", Upper)
        assert await bounded(caller.send_message(Text("new"), AgentId("handover", "k"))) == Text("NEW")

        await tell(child, "release")
        assert await bounded(old_call) == Text("OLD")  # answered by the draining worker
        await child.expect("STOPPED")
        assert await bounded(child.proc.wait()) == 0
    assert owners(core)["handover"] is not session
    assert await bounded(caller.send_message(Text("after"), AgentId("handover", "k"))) == Text("AFTER")


@pytest.mark.parametrize("how", ["stop", "SIGINT"])
async def test_a_handler_longer_than_stop_grace_gets_a_typed_error(
    server: HttpAgentServer, make_worker: WorkerFactory, how: str
) -> None:
    core = server.service.core
    caller = await make_worker()
    until_ = ["--until", "stdin"] if how == "stop" else []
    async with spawn("worker", server.url, "stubborn", *until_, "--stop-grace", "0.5") as child:
        await child.expect("READY")
        session = owners(core)["stubborn"]
        call = asyncio.ensure_future(caller.send_message(Text("x"), AgentId("stubborn", "key")))
        await child.expect("started x")

        loop = asyncio.get_running_loop()
        asked = loop.time()
        if how == "stop":
            await tell(child, "stop")
        else:
            child.proc.send_signal(signal.SIGINT)
        with pytest.raises(WorkerDisconnectedError) as caught:
            await bounded(call)
        assert loop.time() - asked >= 0.45  # it had its grace period
        assert caught.value.code == ErrorCode.WORKER_DISCONNECTED
        assert str(caught.value) == (
            "The worker 'child-stubborn' serving stubborn/key stopped before the handler finished "
            "(stop_grace of 0.5 s ran out)."
        )
        await child.expect("STOPPED")
        assert await bounded(child.proc.wait()) == 0
    assert session.worker_id not in core.sessions
    assert core.pending_calls == 0


async def test_ctrl_c_without_stop_when_signal_names_the_call_and_the_worker(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    caller = await make_worker()
    async with spawn("worker", server.url, "plain", "--until", "interrupt") as child:
        await child.expect("READY")
        call = asyncio.ensure_future(caller.send_message(Text("x"), AgentId("plain", "k")))
        await child.expect("started x")

        child.proc.send_signal(signal.SIGINT)  # asyncio.run() cancels every task, as on Ctrl-C
        with pytest.raises(CallCancelledError) as caught:
            await bounded(call)
        assert str(caught.value) == (
            "The call to plain/k was cancelled on the worker 'child-plain' serving it (it is shutting down)."
        )
        assert await bounded(child.proc.wait()) != 0  # KeyboardInterrupt: not a clean stop


class Waiting(RoutedAgent):
    """Answers once ``release`` is set; ``started`` is set when a handler begins."""

    def __init__(self, started: asyncio.Event, release: asyncio.Event) -> None:
        super().__init__("waits")
        self._started, self._release = started, release

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self._started.set()
        await self._release.wait()
        return Text(message.content.upper())


async def test_stop_twice_waits_for_the_one_stop(server: HttpAgentServer, make_worker: WorkerFactory) -> None:
    core = server.service.core
    caller = await make_worker()
    serving = await make_worker(stop_grace=TIMEOUT)
    started, release = asyncio.Event(), asyncio.Event()
    await serving.register_factory("waiting", lambda: Waiting(started, release))
    session = owners(core)["waiting"]
    drains = 0
    remove_worker = core.directory.remove_worker

    def counting(worker_session: Any) -> None:
        nonlocal drains
        if worker_session is session:
            drains += 1
        remove_worker(worker_session)

    core.directory.remove_worker = counting  # type: ignore[method-assign]
    call = asyncio.ensure_future(caller.send_message(Text("x"), AgentId("waiting", "k")))
    await bounded(started.wait())

    first = asyncio.ensure_future(serving.stop())
    second = asyncio.ensure_future(serving.stop())
    await until(lambda: session.draining)
    assert not first.done() and not second.done()  # both wait for the handler
    release.set()
    await bounded(asyncio.gather(first, second))
    assert await bounded(call) == Text("X")
    await bounded(serving.stop())  # a third, after the fact, returns at once
    assert session.worker_id not in core.sessions
    # Taken out of the directory once, at 'drain': closing the drained session did not do it again.
    assert drains == 1


async def test_stop_does_not_wait_for_a_handler_whose_caller_gave_up(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    core = server.service.core
    caller = await make_worker()
    serving = await make_worker(stop_grace=TIMEOUT)
    started, never = asyncio.Event(), asyncio.Event()
    await serving.register_factory("waiting", lambda: Waiting(started, never))  # ignores its token
    session = owners(core)["waiting"]
    token = CancellationToken()
    call = asyncio.ensure_future(
        caller.send_message(Text("x"), AgentId("waiting", "k"), cancellation_token=token)
    )
    await bounded(started.wait())
    stopping = asyncio.ensure_future(serving.stop())
    await until(lambda: session.draining)  # the stop waits for the handler...
    loop = asyncio.get_running_loop()
    began = loop.time()
    token.cancel()  # ...until its caller gives up: its answer would reach nobody
    with pytest.raises(asyncio.CancelledError):
        await bounded(call)
    await bounded(stopping)
    assert loop.time() - began < TIMEOUT / 2


async def test_stop_called_by_a_handler_does_not_wait_for_that_handler(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    serving = await make_worker(stop_grace=TIMEOUT)
    caller = await make_worker()
    stopped = asyncio.Event()

    class StopsItsRuntime(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("stops the worker it runs on")

        @message_handler
        async def on_text(self, message: Text, ctx: MessageContext) -> Text:
            try:
                await serving.stop()
            finally:
                stopped.set()
            return message

    await serving.register_factory("stopper", StopsItsRuntime)
    call = asyncio.ensure_future(caller.send_message(Text("x"), AgentId("stopper", "k")))
    loop = asyncio.get_running_loop()
    began = loop.time()
    await bounded(stopped.wait())
    assert loop.time() - began < TIMEOUT / 2  # not the whole stop_grace
    with pytest.raises(WorkerDisconnectedError):
        await bounded(call)


async def test_a_host_that_does_not_know_drain_stops_the_worker_as_before(
    server: HttpAgentServer, make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An older host: 'drain' is a method it has never heard of.
    def unknown(self: Control, session: Any, req: Request) -> None:
        raise MessageError(ErrorCode.METHOD_NOT_FOUND, f"Method '{req.method}' not found.", req.id)

    monkeypatch.setattr(Control, "drain", unknown)
    caller = await make_worker()
    serving = await make_worker(stop_grace=TIMEOUT)
    started, release = asyncio.Event(), asyncio.Event()
    await serving.register_factory("waiting", lambda: Waiting(started, release))
    call = asyncio.ensure_future(caller.send_message(Text("x"), AgentId("waiting", "k")))
    await bounded(started.wait())

    loop = asyncio.get_running_loop()
    began = loop.time()
    await bounded(serving.stop())
    assert loop.time() - began < TIMEOUT / 2  # no grace period: the host would route new calls here
    with pytest.raises(WorkerDisconnectedError, match=r"said bye"):
        await bounded(call)
    assert "waiting" not in owners(server.service.core)


async def test_a_call_on_the_wire_when_the_worker_drains_is_answered() -> None:
    """The host forwarded a call just before it read the worker's ``drain``: the worker serves it."""
    seen: list[str] = []

    async def host(ws: ServerConnection) -> None:
        async for message in ws:
            for frame in frames_of(message):
                if "method" not in frame:  # the worker's answer to our call
                    seen.append(f"answer {json.dumps(frame['result'])}")
                    continue
                seen.append(frame["method"])
                if frame["method"] == "drain":
                    payload = {"data_type": "Text", "data": {"content": "late"}}
                    call = {"recipient": {"type": "upper", "key": "k"}, "payload": payload}
                    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 77, "method": "send", "params": call}))
                await ws.send(json.dumps(answer(frame)))

    async with fake_host(host) as port:
        runtime = worker(port, stop_grace=TIMEOUT)
        await Upper.register(runtime, "upper", Upper)
        await bounded(runtime.start())
        await bounded(runtime.stop())
    late = {"data_type": "Text", "data_content_type": "application/json", "data": {"content": "LATE"}}
    assert seen[-3:] == ["drain", "answer " + json.dumps({"payload": late}), "bye"]


async def test_the_host_refuses_registrations_from_a_draining_worker_and_drains_once(
    server: HttpAgentServer,
) -> None:
    url = server.url.replace("http", "ws", 1) + WORKER_WS_PATH
    core = server.service.core
    async with connect(url, open_timeout=TIMEOUT) as ws:

        async def request(n: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": n, "method": method, "params": params}))
            reply: dict[str, Any] = json.loads(await bounded(ws.recv()))
            return reply

        await request(1, "hello", {"protocol": PROTOCOL_VERSION})
        assert (await request(2, "register_agent_type", {"type": "raw"}))["result"] == {}
        assert (await request(3, "drain", {}))["result"] == {}
        assert "raw" not in owners(core)
        assert (await request(4, "drain", {}))["result"] == {}  # idempotent
        refused = await request(5, "register_agent_type", {"type": "raw"})
        assert refused["error"]["code"] == ErrorCode.INVALID_REQUEST
        assert "drain" in refused["error"]["message"]
        subscription = {"id": "s", "kind": "type", "agent_type": "raw", "topic": "t"}
        refused = await request(6, "add_subscription", {"subscription": subscription})
        assert refused["error"]["code"] == ErrorCode.INVALID_REQUEST
        assert subscriptions(core) == []
        assert (await request(7, "bye", {}))["result"] == {}
    assert core.sessions == {} or all(s.local for s in core.sessions.values())


async def test_handlers_call_out_while_draining_and_the_workers_own_calls_fail_at_close(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    serving = await make_worker(stop_grace=TIMEOUT)
    other = await make_worker()
    await Upper.register(other, "upper", Upper)
    slow_started, never = asyncio.Event(), asyncio.Event()
    await other.register_factory("slow", lambda: Waiting(slow_started, never))
    outer_started, release = asyncio.Event(), asyncio.Event()

    class CallsOut(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("calls out once released")

        @message_handler
        async def on_text(self, message: Text, ctx: MessageContext) -> Text:
            outer_started.set()
            await release.wait()
            reply: Text = await self.send_message(message, AgentId("upper", "k"))
            return reply

    await serving.register_factory("outer", CallsOut)
    caller = await make_worker()
    call = asyncio.ensure_future(caller.send_message(Text("x"), AgentId("outer", "k")))
    # A call the stopping worker makes itself, outside any handler, that is never answered.
    own = asyncio.ensure_future(serving.send_message(Text("y"), AgentId("slow", "k")))
    await bounded(outer_started.wait())
    await bounded(slow_started.wait())

    stopping = asyncio.ensure_future(serving.stop())
    await until(lambda: owners(server.service.core).get("outer") is None)
    release.set()  # the handler calls another worker during the grace period, and answers
    assert await bounded(call) == Text("X")
    await bounded(stopping)
    with pytest.raises(HostConnectionError):  # as before: it fails when the connection closes
        await bounded(own)


class Closable(RoutedAgent):
    """Records its close() in ``closed``; the agent keyed "bad" raises there."""

    def __init__(self, closed: list[str]) -> None:
        super().__init__("records its close")
        self._closed = closed

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        return message

    async def close(self) -> None:
        self._closed.append(self.id.key)
        if self.id.key == "bad":
            raise RuntimeError("bad close")


async def test_close_stops_the_worker_and_closes_every_agent_made_or_registered_here(
    server: HttpAgentServer, make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # As SingleThreadedAgentRuntime.close: stop, then Agent.close() on every agent here; one
    # agent's error does not keep the others open, and is raised at the end.
    closed: list[str] = []
    worker = await make_worker()
    await Closable.register(worker, "closable", lambda: Closable(closed))
    for key in ("a", "bad", "b"):
        assert await bounded(worker.send_message(Text(key), AgentId("closable", key))) == Text(key)
    # Registered instances are closed too; one never sent a message still is.
    await bounded(worker.register_agent_instance(Closable(closed), AgentId("instance", "i")))
    assert closed == []

    with pytest.raises(RuntimeError, match="bad close"):
        await bounded(worker.close())
    assert sorted(closed) == ["a", "b", "bad", "i"]
    assert "Agent closable/bad failed to close: RuntimeError('bad close')" in caplog.text
    assert "closable" not in owners(server.service.core)  # stopped: the host freed its type
    with pytest.raises(HostConnectionError):
        await bounded(worker.send_message(Text("late"), AgentId("closable", "a")))
    # A second close() stops nothing more, and closes the agents again (as autogen-core's does).
    with pytest.raises(RuntimeError, match="bad close"):
        await bounded(worker.close())
    assert len(closed) == 8
