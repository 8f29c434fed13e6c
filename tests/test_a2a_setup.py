"""Turning A2A serving on: `serve --a2a` as a real process, HttpAgentServer(a2a=...), and a clear
ImportError naming the extra when the A2A SDK is not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import httpx
import pytest
from a2a.types import TaskState

from autogen_http_runtime import HttpAgentServer, HttpAgentService, HttpWorkerAgentRuntime
from autogen_http_runtime._cli.main import build_parser

from .a2a_serving import Seen, artifact_value, client, serve_agents, task_of, text
from .test_cli import ready_url, serve
from .utils import SERIALIZERS, TIMEOUT, bounded


async def test_serve_a2a_serves_the_described_types() -> None:
    async with serve(sys.executable, "-m", "autogen_http_runtime", "serve", "--port", "0", "--a2a") as proc:
        url = await ready_url(proc)
        worker = HttpWorkerAgentRuntime(url)
        worker.add_message_serializer(SERIALIZERS)
        try:
            await bounded(worker.start())
            await serve_agents(worker, Seen())
            async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
                task = await task_of(await client(http, f"{url}/a2a/shout"), text("from the cli"))
                assert task.status.state == TaskState.TASK_STATE_COMPLETED
                assert artifact_value(task) == {"content": "FROM THE CLI"}
        finally:
            await bounded(worker.stop())


async def test_without_a2a_there_are_no_a2a_routes() -> None:
    async with HttpAgentServer("127.0.0.1", port=0) as server:
        assert not server.service.a2a
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
            assert (await http.get(f"{server.url}/.well-known/agent-card.json")).status_code == 404
            assert (await http.post(f"{server.url}/a2a/anything", json={})).status_code == 404


def test_a_switch_is_on_when_given_alone() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve", "--a2a", "--compression"]).a2a == "on"
    assert parser.parse_args(["serve", "--a2a", "off"]).a2a == "off"
    assert "a2a" not in vars(parser.parse_args(["serve"]))  # not given: the environment or the default


def test_a2a_goes_to_the_service_a_server_is_given() -> None:
    with pytest.raises(ValueError, match="give a2a=True to the service"):
        HttpAgentServer(service=HttpAgentService(), a2a=True)
    assert HttpAgentServer(service=HttpAgentService(a2a=True), a2a=True).service.a2a


def test_without_the_a2a_sdk_a2a_is_a_clear_import_error() -> None:
    program = textwrap.dedent(
        """
        import sys
        sys.modules["a2a"] = None  # as if the [a2a] extra were not installed
        from autogen_http_runtime import HttpAgentServer, HttpAgentService, HttpWorkerAgentRuntime
        HttpAgentService()  # everything else works, describing a worker's skill included
        import asyncio, dataclasses
        Point = dataclasses.make_dataclass("Point", [("x", int)])
        worker = HttpWorkerAgentRuntime("127.0.0.1:1")
        asyncio.run(worker.register_a2a_skill("t", name="T", description="d", input_type=Point))
        try:
            HttpAgentService(a2a=True)
        except ImportError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.startswith(
        'HttpAgentService(a2a=True) needs the A2A extra: pip install "autogen-http-runtime[a2a]"'
    )
