"""Log lines: the text and JSON formats, call fields on lines about calls, none per message at INFO."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import pytest
from autogen_core import AgentId, TopicId, TypeSubscription

from autogen_http_runtime._host.core import RoutingCore
from autogen_http_runtime._logging import (
    JsonFormatter,
    TextFormatter,
    call_extra,
    configure_logging,
    trace_id,
)

from .conftest import WorkerFactory
from .test_routing import frames, greeted, rpc
from .utils import Recorder, Text, Upper, bounded

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
HOST_LOGGER = "autogen_http_runtime.host"


def record(message: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("kaboom")
        except ValueError:
            exc_info = sys.exc_info()
    made = logging.LogRecord(HOST_LOGGER, logging.WARNING, __file__, 1, message, args, exc_info)
    made.__dict__.update(extra)
    return made


def test_trace_id_is_read_from_a_traceparent() -> None:
    assert trace_id(TRACEPARENT) == TRACE_ID
    assert trace_id(None) is None and trace_id("garbage") is None and trace_id(42) is None
    assert call_extra(7, TRACEPARENT, event_id="e") == {
        "request_id": 7,
        "trace_id": TRACE_ID,
        "event_id": "e",
    }


def test_json_formatter_writes_one_object_per_line_with_the_call_fields() -> None:
    line = JsonFormatter().format(record("Call %s failed", "x", exc=True, **call_extra(7, TRACEPARENT)))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == HOST_LOGGER
    assert entry["message"] == "Call x failed"
    assert entry["request_id"] == 7 and entry["trace_id"] == TRACE_ID
    assert "ValueError: kaboom" in entry["exception"]
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"


def test_json_formatter_escapes_whatever_a_peer_sent() -> None:
    line = JsonFormatter().format(record("reported %s", "\ud800 é", request_id=object()))
    assert line.isascii()
    assert json.loads(line)["message"] == "reported \ud800 é"


def test_text_formatter_appends_fields_and_keeps_the_traceback_below() -> None:
    formatter = TextFormatter()
    plain = formatter.format(record("hello"))
    assert plain.endswith(f"WARNING {HOST_LOGGER} hello")
    with_fields = formatter.format(record("failed", exc=True, **call_extra(7, None)))
    first, *rest = with_fields.splitlines()
    assert first.endswith("failed request_id=7")  # trace_id None is left out
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: kaboom"


@pytest.mark.usefixtures("restore_root_logging")
def test_configure_logging_installs_one_stderr_handler() -> None:
    configure_logging("info", "json")
    root = logging.getLogger()
    assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
    assert root.level == logging.WARNING
    assert logging.getLogger("autogen_http_runtime").level == logging.INFO
    configure_logging("DEBUG", "text")
    assert isinstance(root.handlers[0].formatter, TextFormatter) and root.level == logging.DEBUG


def test_host_lines_about_a_call_carry_its_request_and_trace_ids(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=HOST_LOGGER)
    router = RoutingCore()
    caller, target = greeted(router), greeted(router, "b")
    payload = {"data_type": "T", "data": {}}
    rpc(
        router,
        caller,
        7,
        "send",
        recipient={"type": "nobody", "key": "k"},
        payload=payload,
        traceparent=TRACEPARENT,
    )
    [failed] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert failed.levelno == logging.DEBUG
    assert (failed.request_id, failed.trace_id) == (7, TRACE_ID)

    # A reply too large for the caller: a WARNING, with the caller's and the host's ids.
    small = router.open_session()
    rpc(router, small, 0, "hello", protocol="autogen-http/1", max_message_size=1024)
    frames(small)
    rpc(
        router,
        small,
        8,
        "send",
        recipient={"type": "b", "key": "k"},
        payload=payload,
        traceparent=TRACEPARENT,
    )
    [forwarded] = frames(target)
    router.handle_text(target, json.dumps({"jsonrpc": "2.0", "id": forwarded["id"], "result": "x" * 2000}))
    [too_large] = [r for r in caplog.records if "too large" in r.getMessage()]
    assert too_large.levelno == logging.WARNING
    fields = (too_large.request_id, too_large.host_request_id, too_large.trace_id)
    assert fields == (8, forwarded["id"], TRACE_ID)

    # A bad frame: its request id, and no trace id to give.
    rpc(router, caller, 9, "no_such_method")
    [bad] = [r for r in caplog.records if "sent a bad frame" in r.getMessage()]
    assert (bad.request_id, bad.trace_id) == (9, None)


async def test_no_line_per_message_at_info(
    caplog: pytest.LogCaptureFixture, make_worker: WorkerFactory
) -> None:
    caplog.set_level(logging.INFO, logger="autogen_http_runtime")
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    serving, caller = await make_worker(), await make_worker()
    await Upper.register(serving, "upper", Upper)
    await Recorder.register(serving, "recorder", lambda: Recorder(inbox))
    await serving.add_subscription(TypeSubscription(topic_type="news", agent_type="recorder"))
    caplog.clear()
    for n in range(20):
        assert await bounded(caller.send_message(Text(f"m{n}"), AgentId("upper", "k"))) == Text(f"M{n}")
        await bounded(caller.publish_message(Text("hi"), TopicId("news", "s")))
    for _ in range(20):
        await bounded(inbox.get())
    ours = [r for r in caplog.records if r.name.startswith("autogen_http_runtime")]
    assert ours == []


@pytest.mark.parametrize("path", ["direct", "asgi"])
async def test_a_connection_the_host_closed_is_logged_with_the_hosts_code(
    path: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime
    from autogen_http_runtime._http import server as _server

    if path == "asgi":
        monkeypatch.setattr(_server, "direct_protocol", lambda: None)
    caplog.set_level(logging.INFO, HOST_LOGGER)
    server = HttpAgentServer(port=0)
    await bounded(server.start())
    worker = HttpWorkerAgentRuntime(server.url, reconnect=None)
    try:
        await bounded(worker.start())
        await bounded(server.stop(grace=0.5))
    finally:
        await bounded(worker.stop())
        await bounded(server.stop())
    [line] = [r.getMessage() for r in caplog.records if " disconnected (" in r.getMessage()]
    assert "(closed by the host with code 1001: host shutting down)" in line
    assert "1005" not in line
