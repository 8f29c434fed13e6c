"""A2AAgent against a real A2A server made of the SDK's own server classes (tests/a2a_remote.py),
registered on autogen-core's SingleThreadedAgentRuntime and on our worker runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from autogen_core import (
    AgentId,
    CancellationToken,
    SingleThreadedAgentRuntime,
    try_get_known_serializers_for_type,
)
from pydantic import BaseModel

from autogen_http_runtime import HttpWorkerAgentRuntime, RemoteAgentError
from autogen_http_runtime.a2a import A2AAgent, A2AAgentError, A2ATimeoutError

from .a2a_remote import RemoteAgent, TaskSeen, start_remote
from .utils import Text, bounded

RemoteFactory = Callable[..., Awaitable[RemoteAgent]]
WorkerFactory = Callable[..., Awaitable[HttpWorkerAgentRuntime]]
TOKEN = "s3cret-token"


class Shout(BaseModel):
    content: str
    n: int


@dataclass
class ShoutData:
    content: str
    n: int


@pytest.fixture
async def make_remote() -> AsyncIterator[RemoteFactory]:
    remotes: list[RemoteAgent] = []

    async def create(**kwargs: Any) -> RemoteAgent:
        remote = await bounded(start_remote(**kwargs))
        remotes.append(remote)
        return remote

    try:
        yield create
    finally:
        for remote in remotes:
            await bounded(remote.stop())


@pytest.fixture
async def remote(make_remote: RemoteFactory) -> RemoteAgent:
    return await make_remote()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def runtime() -> AsyncIterator[SingleThreadedAgentRuntime]:
    rt = SingleThreadedAgentRuntime()
    rt.start()
    try:
        yield rt
    finally:
        await bounded(rt.close())  # also closes the agents, and so their own HTTP clients


async def register(runtime: Any, *args: Any, agent_type: str = "remote", **kwargs: Any) -> None:
    await bounded(A2AAgent.register(runtime, agent_type, lambda: A2AAgent(*args, **kwargs)))


# -- on the in-process runtime -------------------------------------------------------------


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "send"])
async def test_text_in_text_out(
    runtime: SingleThreadedAgentRuntime, remote: RemoteAgent, streaming: bool
) -> None:
    await register(runtime, remote.url, streaming=streaming)
    reply = await bounded(runtime.send_message("hello", AgentId("remote", "k")))
    assert reply == "HELLO"
    assert remote.executor.seen[-1][1] == "hello"


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "send"])
async def test_data_in_completed_task_out(
    runtime: SingleThreadedAgentRuntime, remote: RemoteAgent, streaming: bool
) -> None:
    """A dataclass goes out as a data part; the task's data artifact comes back as its JSON value
    (whole numbers as int), or validated into the output type."""
    await register(runtime, remote.url, streaming=streaming)
    await register(runtime, remote.url, streaming=streaming, output_type=Shout, agent_type="typed")
    await register(runtime, remote.url, streaming=streaming, output_type=ShoutData, agent_type="dc")
    assert await bounded(runtime.send_message(Text("hi"), AgentId("remote", "k"))) == {
        "content": "HI",
        "n": 3,
    }
    assert await bounded(runtime.send_message(Text("hi"), AgentId("typed", "k"))) == Shout(content="HI", n=3)
    assert await bounded(runtime.send_message(Shout(content="x", n=1), AgentId("dc", "k"))) == ShoutData(
        "X", 3
    )


async def test_agent_card_given_instead_of_url(
    runtime: SingleThreadedAgentRuntime, remote: RemoteAgent
) -> None:
    await register(runtime, remote.card)
    assert await bounded(runtime.send_message("card", AgentId("remote", "k"))) == "CARD"
    meta = await bounded(runtime.agent_metadata(AgentId("remote", "k")))
    assert meta["description"] == "Shouts back what it is told."


async def test_card_url_given(runtime: SingleThreadedAgentRuntime, remote: RemoteAgent) -> None:
    await register(runtime, remote.url + "/.well-known/agent-card.json")
    assert await bounded(runtime.send_message("json", AgentId("remote", "k"))) == "JSON"


async def test_executor_exception_is_a2a_agent_error(
    runtime: SingleThreadedAgentRuntime, remote: RemoteAgent
) -> None:
    await register(runtime, remote.url)
    with pytest.raises(A2AAgentError) as caught:
        await bounded(runtime.send_message("boom", AgentId("remote", "k")))
    assert caught.value.reason == "INTERNAL_ERROR" and caught.value.code == -32603
    assert "kaboom" in str(caught.value) and isinstance(caught.value, RuntimeError)


async def test_failed_task_is_a2a_agent_error(
    runtime: SingleThreadedAgentRuntime, remote: RemoteAgent
) -> None:
    await register(runtime, remote.url)
    with pytest.raises(A2AAgentError) as caught:
        await bounded(runtime.send_message("fail", AgentId("remote", "k")))
    assert caught.value.reason == "TASK_STATE_FAILED" and caught.value.task_id
    assert "no can do" in str(caught.value)


async def test_reply_not_fitting_the_output_type(
    runtime: SingleThreadedAgentRuntime, remote: RemoteAgent
) -> None:
    await register(runtime, remote.url, output_type=Shout)
    with pytest.raises(A2AAgentError) as caught:
        await bounded(runtime.send_message("plain text", AgentId("remote", "k")))
    assert caught.value.reason == "INVALID_AGENT_RESPONSE"


async def test_unreachable_agent(runtime: SingleThreadedAgentRuntime, remote: RemoteAgent) -> None:
    await register(runtime, remote.url + "/nowhere")
    with pytest.raises(A2AAgentError) as caught:
        await bounded(runtime.send_message("hello", AgentId("remote", "k")))
    assert caught.value.reason == "AGENT_CARD_NOT_RESOLVED" and caught.value.http_status == 404


async def test_cancel_reaches_the_remote_task(
    runtime: SingleThreadedAgentRuntime, remote: RemoteAgent
) -> None:
    seen = TaskSeen()
    await register(runtime, remote.url, interceptors=[seen])
    token = CancellationToken()
    call = asyncio.ensure_future(
        runtime.send_message("wait", AgentId("remote", "k"), cancellation_token=token)
    )
    await bounded(seen.event.wait())
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(call)
    await bounded(remote.executor.cancelled.wait())


async def test_timeout_cancels_the_remote_task(
    runtime: SingleThreadedAgentRuntime, remote: RemoteAgent
) -> None:
    await register(runtime, remote.url, timeout=0.5)
    with pytest.raises(A2ATimeoutError) as caught:
        await bounded(runtime.send_message("wait", AgentId("remote", "k")))
    assert caught.value.reason == "TIMEOUT" and isinstance(caught.value, TimeoutError)
    await bounded(remote.executor.cancelled.wait())


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "send"])
async def test_bearer_token(
    runtime: SingleThreadedAgentRuntime, make_remote: RemoteFactory, http: httpx.AsyncClient, streaming: bool
) -> None:
    remote = await make_remote(token=TOKEN, streaming=streaming)
    await register(runtime, remote.url, token=TOKEN, httpx_client=http, agent_type="right")
    await register(runtime, remote.url, httpx_client=http, agent_type="none")
    await register(runtime, remote.url, token="wrong", httpx_client=http, agent_type="wrong")
    assert await bounded(runtime.send_message("let me in", AgentId("right", "k"))) == "LET ME IN"
    for agent_type in ("none", "wrong"):
        with pytest.raises(A2AAgentError) as caught:
            await bounded(runtime.send_message("let me in", AgentId(agent_type, "k")))
        assert (caught.value.reason, caught.value.http_status) == ("HTTP_ERROR", 401)
    agent = await bounded(runtime.try_get_underlying_agent_instance(AgentId("right", "k"), A2AAgent))
    assert agent.card is not None
    scheme = agent.card.security_schemes["bearer"].http_auth_security_scheme
    assert scheme.scheme == "Bearer"
    assert not http.is_closed  # a client given to the agent is the caller's to close


async def test_token_sent_to_an_open_agent(runtime: SingleThreadedAgentRuntime, remote: RemoteAgent) -> None:
    await register(runtime, remote.url, token=TOKEN, headers={"X-Trace": "1"})
    assert await bounded(runtime.send_message("open", AgentId("remote", "k"))) == "OPEN"


async def test_one_context_per_agent_id(runtime: SingleThreadedAgentRuntime, remote: RemoteAgent) -> None:
    await register(runtime, remote.url)
    alice, bob = AgentId("remote", "alice"), AgentId("remote", "bob")
    for word, agent_id in [("a1", alice), ("b1", bob), ("a2", alice), ("b2", bob)]:
        await bounded(runtime.send_message(word, agent_id))
    contexts = dict((word, context) for context, word in remote.executor.seen)
    assert contexts["a1"] == contexts["a2"] and contexts["b1"] == contexts["b2"]
    assert contexts["a1"] != contexts["b1"]
    assert await bounded(runtime.agent_save_state(alice)) == {"context_id": contexts["a1"]}

    # A fresh agent for the same id that loads the state continues that context.
    await bounded(runtime.agent_load_state(AgentId("remote", "carol"), {"context_id": contexts["a1"]}))
    await bounded(runtime.send_message("c1", AgentId("remote", "carol")))
    assert remote.executor.seen[-1] == (contexts["a1"], "c1")


async def test_concurrent_first_calls_share_one_context(
    runtime: SingleThreadedAgentRuntime, remote: RemoteAgent
) -> None:
    await register(runtime, remote.url)
    await bounded(asyncio.gather(*(runtime.send_message(f"w{i}", AgentId("remote", "k")) for i in range(5))))
    assert len({context for context, _ in remote.executor.seen}) == 1


# -- on our worker runtime, called from another worker through a real host --------------------


@pytest.fixture
async def workers(
    make_worker: WorkerFactory, remote: RemoteAgent, http: httpx.AsyncClient
) -> tuple[HttpWorkerAgentRuntime, HttpWorkerAgentRuntime, TaskSeen]:
    """A worker serving type "remote" (an A2AAgent with output type Shout) and a caller."""
    seen = TaskSeen()
    serving = await make_worker()
    # Our worker does not close agents when it stops: give them an HTTP client we close.
    await register(serving, remote.url, output_type=Shout, httpx_client=http, interceptors=[seen])
    caller = await make_worker()
    caller.add_message_serializer(try_get_known_serializers_for_type(Shout))
    return serving, caller, seen


async def test_worker_data_call(workers: tuple[HttpWorkerAgentRuntime, ...], remote: RemoteAgent) -> None:
    caller = workers[1]
    alice = AgentId("remote", "alice")
    assert await bounded(caller.send_message(Text("hello"), alice)) == Shout(content="HELLO", n=3)
    assert await bounded(caller.send_message(Text("again"), alice)) == Shout(content="AGAIN", n=3)
    (first, _), (second, _) = remote.executor.seen
    assert first == second


async def test_worker_remote_error(workers: tuple[HttpWorkerAgentRuntime, ...]) -> None:
    caller = workers[1]
    with pytest.raises(RemoteAgentError) as caught:
        await bounded(caller.send_message(Text("boom"), AgentId("remote", "k")))
    assert caught.value.remote_type == "A2AAgentError" and "kaboom" in caught.value.remote_message


async def test_worker_cancel(
    workers: tuple[Any, HttpWorkerAgentRuntime, TaskSeen], remote: RemoteAgent
) -> None:
    _, caller, seen = workers
    token = CancellationToken()
    call = asyncio.ensure_future(
        caller.send_message(Text("wait"), AgentId("remote", "k"), cancellation_token=token)
    )
    await bounded(seen.event.wait())
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(call)
    await bounded(remote.executor.cancelled.wait())
