"""The host's routing core on its own: in-memory sessions, no sockets, no web framework."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from autogen_core import AgentId, TopicId

from autogen_http_runtime._constants import PROTOCOL_VERSION
from autogen_http_runtime._host.core import RoutingCore
from autogen_http_runtime._host.session import CLOSE_GOING_AWAY, WorkerSession
from autogen_http_runtime._protocol.wire import ErrorCode

from .utils import bounded, connected_workers, owners, subscriptions


def frames(session: WorkerSession) -> list[Any]:
    """Everything queued for ``session`` so far, decoded; ``None`` stands for 'close'."""
    out: list[Any] = []
    while not session.outbox.empty():
        item = session.outbox.get_nowait()
        # A local session gets the messages themselves; a worker's session, their text.
        out.append(item if item is None or isinstance(item, dict) else json.loads(item))
    return out


def rpc(
    session_router: RoutingCore, session: WorkerSession, request_id: int, method: str, **params: Any
) -> None:
    message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    session_router.handle_text(session, json.dumps(message))


def greeted(router: RoutingCore, *agent_types: str) -> WorkerSession:
    session = router.open_session()
    rpc(router, session, 0, "hello", protocol=PROTOCOL_VERSION)
    for n, agent_type in enumerate(agent_types, start=1):
        rpc(router, session, n, "register_agent_type", type=agent_type)
    assert [f.get("error") for f in frames(session)] == [None] * (1 + len(agent_types))
    return session


SEND = {"recipient": {"type": "b", "key": "k"}, "payload": {"data_type": "T", "data": {"x": 1}}}


def test_forward_rewrites_ids_both_ways() -> None:
    router = RoutingCore()
    caller, target = greeted(router), greeted(router, "b")
    rpc(router, caller, 7, "send", **SEND)
    [forwarded] = frames(target)
    assert forwarded["method"] == "send" and forwarded["params"] == SEND
    host_id = forwarded["id"]
    assert isinstance(host_id, int) and router.pending_calls == 1
    router.handle_text(target, json.dumps({"jsonrpc": "2.0", "id": host_id, "result": {"payload": None}}))
    assert frames(caller) == [{"jsonrpc": "2.0", "id": 7, "result": {"payload": None}}]
    assert router.pending_calls == 0


def test_answer_from_the_wrong_worker_is_dropped() -> None:
    router = RoutingCore()
    caller, target, intruder = greeted(router), greeted(router, "b"), greeted(router)
    rpc(router, caller, 1, "send", **SEND)
    host_id = frames(target)[0]["id"]
    router.handle_text(intruder, json.dumps({"jsonrpc": "2.0", "id": host_id, "result": "forged"}))
    assert frames(caller) == [] and router.pending_calls == 1


def test_closing_the_target_fails_its_calls_and_frees_its_types() -> None:
    router = RoutingCore()
    caller, target = greeted(router), greeted(router, "b")
    rpc(
        router,
        target,
        5,
        "add_subscription",
        subscription={"id": "s", "kind": "type", "agent_type": "b", "topic": "t"},
    )
    rpc(router, caller, 1, "send", **SEND)
    router.close_session(target, "test")
    [reply] = frames(caller)
    assert reply["id"] == 1 and reply["error"]["code"] == ErrorCode.WORKER_DISCONNECTED
    assert owners(router) == {} and len(subscriptions(router)) == 0 and router.pending_calls == 0


def test_closing_the_caller_cancels_at_the_target() -> None:
    router = RoutingCore()
    caller, target = greeted(router), greeted(router, "b")
    rpc(router, caller, 1, "send", **SEND)
    host_id = frames(target)[0]["id"]
    router.close_session(caller, "test")
    assert frames(target) == [{"jsonrpc": "2.0", "method": "cancel", "params": {"id": host_id}}]
    assert router.pending_calls == 0


def test_events_go_once_to_each_subscriber_but_not_the_sender() -> None:
    router = RoutingCore()
    a, b = greeted(router, "a"), greeted(router, "b")
    for n, agent_type in enumerate(("a", "b")):
        sub = {"id": f"s{n}", "kind": "type_prefix", "agent_type": agent_type, "topic": "news"}
        rpc(router, a, 10 + n, "add_subscription", subscription=sub)
    assert router.directory.recipients(TopicId("news.x", "src")) == [
        AgentId("a", "src"),
        AgentId("b", "src"),
    ]
    event = {
        "specversion": "1.0",
        "id": "e1",
        "source": "src",
        "type": "news.x",
        "data": 1,
        "agsender": "a/src",
    }
    router.handle_text(a, json.dumps(event))
    assert [f for f in frames(a) if "specversion" in f] == []
    [delivered] = frames(b)
    assert delivered["agrecipient"] == "b/src" and delivered["agsender"] == "a/src"


def test_subscription_cache_follows_changes() -> None:
    router = RoutingCore()
    a = greeted(router, "a")
    topic = TopicId("t", "s")
    assert router.directory.recipients(topic) == []
    rpc(
        router,
        a,
        1,
        "add_subscription",
        subscription={"id": "x", "kind": "type", "agent_type": "a", "topic": "t"},
    )
    assert router.directory.recipients(topic) == [AgentId("a", "s")]
    rpc(router, a, 2, "remove_subscription", id="x")
    assert router.directory.recipients(topic) == []


async def test_drain_fails_what_is_left_and_closes_everyone() -> None:
    router = RoutingCore()
    caller, target = greeted(router), greeted(router, "b")
    rpc(router, caller, 1, "send", **SEND)
    host_id = frames(target)[0]["id"]
    await bounded(router.drain(grace=0.01))
    caller_frames = frames(caller)
    assert caller_frames[0]["error"]["code"] == ErrorCode.SHUTTING_DOWN and caller_frames[-1] is None
    # The serving worker is told to stop working on the call before its socket closes.
    assert frames(target) == [{"jsonrpc": "2.0", "method": "cancel", "params": {"id": host_id}}, None]
    assert caller.close_code == CLOSE_GOING_AWAY and target.closed
    assert not router.accepting


async def test_drain_waits_for_calls_that_finish_in_time() -> None:
    router = RoutingCore()
    caller, target = greeted(router), greeted(router, "b")
    rpc(router, caller, 1, "send", **SEND)
    host_id = frames(target)[0]["id"]
    router.handle_text(target, json.dumps({"jsonrpc": "2.0", "id": host_id, "result": {"payload": None}}))
    await bounded(router.drain(grace=5))
    assert frames(caller)[0] == {"jsonrpc": "2.0", "id": 1, "result": {"payload": None}}
    rpc_after = {"jsonrpc": "2.0", "id": 2, "method": "send", "params": SEND}
    router.handle_text(caller, json.dumps(rpc_after))
    assert frames(caller) == []  # closed sessions get nothing more


def test_a_reconnection_replaces_the_stale_connection_of_the_same_worker() -> None:
    router = RoutingCore()
    stale = router.open_session()
    rpc(router, stale, 0, "hello", protocol=PROTOCOL_VERSION, instance="w1")
    rpc(router, stale, 1, "register_agent_type", type="a")
    fresh = router.open_session()
    rpc(router, fresh, 0, "hello", protocol=PROTOCOL_VERSION, instance="w1")
    assert stale.closed and stale.worker_id not in router.sessions
    assert "a" not in owners(router)
    rpc(router, fresh, 1, "register_agent_type", type="a")
    assert owners(router)["a"] is fresh
    # Another worker's hello with a different instance id replaces nothing.
    other = router.open_session()
    rpc(router, other, 0, "hello", protocol=PROTOCOL_VERSION, instance="w2")
    assert not fresh.closed


def test_a_worker_that_falls_behind_holds_back_its_senders_then_is_dropped() -> None:
    router = RoutingCore(max_message_size=1024, max_queued_bytes=4096)
    publisher, reader = greeted(router, "p"), greeted(router, "r")
    sub = {"id": "s", "kind": "type", "agent_type": "r", "topic": "t"}
    rpc(router, reader, 9, "add_subscription", subscription=sub)
    frames(reader)
    event = json.dumps({"specversion": "1.0", "id": "e", "source": "s", "type": "t", "data": "x" * 600})
    behind = None
    while behind is None:
        behind = router.handle_text(publisher, event)
    # Past high water the transport is told to wait for the reader before reading more.
    assert behind is reader and not reader.drained.is_set() and not reader.closed
    # The reader catching up (its transport writing what was queued) releases the senders.
    while not reader.outbox.empty():
        text = reader.outbox.get_nowait()
        assert text is not None
        reader.sent(text)
    assert reader.drained.is_set()
    # Past max_queued_bytes it is dropped: what it did not read is let go.
    while not reader.closed:
        router.handle_text(publisher, event)
    assert reader.close_code == 1008 and "too slow" in reader.close_reason
    assert reader.queued_bytes == 0 and frames(reader) == [None]


def test_local_sessions_call_like_workers_but_are_not_listed() -> None:
    router = RoutingCore()
    target = greeted(router, "b")
    http = router.open_session(local="http")
    assert connected_workers(router) == [target]
    rpc(router, http, 1, "send", **SEND)  # no hello needed
    host_id = frames(target)[0]["id"]
    router.handle_text(target, json.dumps({"jsonrpc": "2.0", "id": host_id, "result": {"payload": None}}))
    assert frames(http) == [{"jsonrpc": "2.0", "id": 1, "result": {"payload": None}}]
    router.close_session(http, "done")
    assert http.worker_id not in router.sessions
    assert router.stats.calls_routed == router.stats.calls_answered == 1


def test_a_flood_of_stray_frames_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    router = RoutingCore()
    session = greeted(router)
    with caplog.at_level(logging.DEBUG, logger="autogen_http_runtime.host"):
        for n in range(50):
            router.handle_text(session, json.dumps({"jsonrpc": "2.0", "method": f"nosuch{n}", "params": {}}))
            error = {"jsonrpc": "2.0", "id": None, "error": {"code": -1, "message": "stray"}}
            router.handle_text(session, json.dumps(error))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "more from it are logged at DEBUG" in warnings[0].getMessage()
    assert session.bad_frames == 100
