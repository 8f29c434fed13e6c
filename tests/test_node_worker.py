"""A worker in another language: examples/node-worker (Node.js, only the `ws` package) on a
real host, called by a Python agent and subscribed to what Python agents publish.

Skipped, with the reason, only where `node` is not installed. The example's dependency is
installed with `npm ci` the first time (node_modules is not in git).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from autogen_core import AgentId, MessageContext, RoutedAgent, TopicId, TypeSubscription, message_handler

from autogen_http_runtime import HttpAgentServer

from .conftest import WorkerFactory
from .utils import TIMEOUT, Recorder, Text, bounded
from .wire_schemas import FrameRecorder, assert_valid

NODE = shutil.which("node")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "node-worker"

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed: the Node.js worker of examples/node-worker cannot run here"
)


@pytest.fixture(scope="module")
def node_modules() -> None:
    """The example's one dependency, installed from its package-lock.json when missing.

    Under a lock: `make test` runs the suite twice at once, and `npm ci` first removes the
    node_modules the other run may be using.
    """
    with open(EXAMPLE / ".npm-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (EXAMPLE / "node_modules" / "ws" / "package.json").is_file():
            return
        npm = shutil.which("npm")
        assert npm is not None, (
            "node is installed but npm is not: cannot install examples/node-worker's dependency"
        )
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=EXAMPLE,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"


class Relay(RoutedAgent):
    """A Python agent that calls the Node agent and publishes to its topic."""

    def __init__(self) -> None:
        super().__init__("relays to node")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        reply = await self.send_message(message, AgentId("node-echo", "from-python"))
        await self.publish_message(message, TopicId("node-news", "py"))
        assert isinstance(reply, Text)
        return reply


@pytest.fixture
async def node_worker(
    server: HttpAgentServer, node_modules: None
) -> AsyncIterator[asyncio.subprocess.Process]:
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(EXAMPLE / "worker.js"),
        server.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await bounded(process.wait())


async def line(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    text = await bounded(process.stdout.readline())
    assert text, "the node worker exited"
    record: dict[str, Any] = json.loads(text)
    return record


async def test_python_agents_call_and_publish_to_a_node_worker(
    server: HttpAgentServer,
    make_worker: WorkerFactory,
    node_worker: asyncio.subprocess.Process,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frames = FrameRecorder.install(server.service.core, monkeypatch)
    ready = (await line(node_worker))["ready"]
    assert ready["agent_type"] == "node-echo"

    heard: asyncio.Queue[tuple[AgentId, Any, MessageContext]] = asyncio.Queue()
    python = await make_worker(name="python")
    await Relay.register(python, "relay", Relay)
    await Recorder.register(python, "listener", lambda: Recorder(heard))
    await python.add_subscription(TypeSubscription("node-replies", "listener"))
    caller = await make_worker()

    # A Python agent calls the Node agent (and publishes to it) while handling this call.
    assert await bounded(caller.send_message(Text("hello"), AgentId("relay", "k"))) == Text(
        "node heard: hello"
    )
    event = (await line(node_worker))["event"]
    assert event["topic"] == "node-news" and event["recipient"] == "node-echo/py"
    assert event["data"] == {"content": "hello"}
    # The Node agent answered the event by publishing, and a Python agent got that.
    recipient, message, ctx = await bounded(heard.get())
    assert (recipient, message) == (AgentId("listener", "py"), Text("node saw: hello"))
    assert ctx.sender == AgentId("node-echo", "py") and ctx.topic_id == TopicId("node-replies", "py")

    # State, metadata and errors across languages.
    assert await bounded(caller.agent_save_state(AgentId("node-echo", "from-python"))) == {
        "calls": 1,
        "events": 0,
    }
    await bounded(caller.agent_load_state(AgentId("node-echo", "x"), {"calls": 41, "events": 1}))
    assert await bounded(caller.agent_save_state(AgentId("node-echo", "x"))) == {"calls": 41, "events": 1}
    assert (await bounded(caller.agent_metadata(AgentId("node-echo", "x"))))["type"] == "node-echo"

    # And over plain HTTP.
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT, trust_env=False) as http:
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "send",
            "params": {
                "recipient": {"type": "node-echo", "key": "web"},
                "payload": {"data_type": "Text", "data": {"content": "curl"}},
            },
        }
        answer = (await http.post("/v1/rpc", json=call)).json()
        assert answer["result"]["payload"]["data"] == {"content": "node heard: curl"}
        wrong = {**call, "params": {**call["params"], "payload": {"data_type": "Other", "data": {}}}}
        error = (await http.post("/v1/rpc", json=wrong)).json()["error"]
        assert error["code"] == -32003 and error["data"]["type"] == "TypeError"
        workers = (await http.get("/v1/workers")).json()["workers"]
        assert {w["name"]: w["agent_types"] for w in workers}["node-worker"] == ["node-echo"]

        # SIGTERM: the worker says bye and exits 0; the host frees its agent type at once.
        node_worker.send_signal(signal.SIGTERM)
        assert await bounded(node_worker.wait()) == 0
        assert "node-echo" not in (await http.get("/v1/agents")).json()["agent_types"]

    # Every frame the Node worker sent or received is one the schemas describe.
    seen = set()
    for record, name, frame in frames.classified():
        if record.session.name == "node-worker":
            assert_valid(name, frame)
            seen.add(name)
    assert {"ws/hello-request.json", "ws/send-response.json", "ws/event.json", "ws/bye-request.json"} <= seen
