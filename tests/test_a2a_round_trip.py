"""AutoGen -> A2A -> AutoGen through two hosts: host 1's worker has an A2AAgent pointed at host 2's
A2A endpoint for a type a worker of host 2 serves; another worker of host 1 calls it by AgentId."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from autogen_core import AgentId, CancellationToken

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime, RemoteAgentError
from autogen_http_runtime.a2a import A2AAgent

from .a2a_serving import Seen, serve_agents
from .utils import SERIALIZERS, TIMEOUT, Text, bounded


@dataclass
class Hosts:
    caller: HttpWorkerAgentRuntime  # on host 1, calls "remote"
    seen: Seen  # what host 2's agents saw


@pytest.fixture
async def hosts() -> AsyncIterator[Hosts]:
    first = HttpAgentServer("127.0.0.1", port=0)
    second = HttpAgentServer("127.0.0.1", port=0, a2a=True)
    seen = Seen()
    workers: list[HttpWorkerAgentRuntime] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT, read=None), trust_env=False) as http:
        try:
            for server in (first, second):
                await bounded(server.start())
            for url in (second.url, first.url, first.url):
                worker = HttpWorkerAgentRuntime(url)
                worker.add_message_serializer(SERIALIZERS)
                workers.append(worker)
                await bounded(worker.start())
            serving, proxy, caller = workers
            await serve_agents(serving, seen)  # host 2: "shout", offered over A2A
            endpoint = f"{second.url}/a2a/shout"
            await bounded(
                A2AAgent.register(
                    proxy, "remote", lambda: A2AAgent(endpoint, output_type=Text, httpx_client=http)
                )
            )
            yield Hosts(caller, seen)
        finally:
            for worker in workers:
                await bounded(worker.stop())
            for server in (first, second):
                await bounded(server.stop(grace=1))


async def test_a_call_goes_round_and_comes_back_typed(hosts: Hosts) -> None:
    reply = await bounded(hosts.caller.send_message(Text("hello"), AgentId("remote", "alice")))
    assert reply == Text("HELLO")
    # One A2A context per agent id: the same agent key on host 2 for alice's calls, another for bob.
    await bounded(hosts.caller.send_message(Text("again"), AgentId("remote", "alice")))
    await bounded(hosts.caller.send_message(Text("bob"), AgentId("remote", "bob")))
    first, second, third = hosts.seen.keys
    assert first == second != third


async def test_the_remote_agents_error_comes_back(hosts: Hosts) -> None:
    with pytest.raises(RemoteAgentError) as caught:
        await bounded(hosts.caller.send_message(Text("boom"), AgentId("remote", "k")))
    assert caught.value.remote_type == "A2AAgentError"
    assert "ValueError: kaboom" in str(caught.value)


async def test_cancelling_the_call_cancels_the_handler_on_the_other_host(hosts: Hosts) -> None:
    token = CancellationToken()
    call = asyncio.ensure_future(
        hosts.caller.send_message(Text("wait"), AgentId("remote", "k"), cancellation_token=token)
    )
    await bounded(hosts.seen.started.wait())
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(call)
    await bounded(
        hosts.seen.cancelled.wait()
    )  # host 1 -> proxy worker -> A2A CancelTask -> host 2 -> handler
