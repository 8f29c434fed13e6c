"""The host's A2A endpoints on a secured host: bearer tokens, the access policy, the rate limit,
and one identity's tasks hidden from another; the cards public, declaring the bearer scheme."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from a2a.client import A2ACardResolver
from a2a.client.errors import A2AClientError
from a2a.types import GetTaskRequest, TaskState
from a2a.utils.errors import TaskNotFoundError

from autogen_http_runtime import (
    AccessPolicy,
    AccessRule,
    BearerTokens,
    HttpAgentServer,
    HttpAgentService,
    HttpWorkerAgentRuntime,
    RateLimit,
)

from .a2a_serving import Seen, artifact_value, client, serve_agents, task_of, text
from .utils import SERIALIZERS, TIMEOUT, bounded

TOKENS = {"worker": "t-worker", "alice": "t-alice", "bob": "t-bob", "carol": "t-carol"}
POLICY = AccessPolicy(
    {
        "worker": AccessRule(register="*"),
        "alice": AccessRule(call="shout"),
        "bob": AccessRule(call="till"),
        "carol": AccessRule(call="*"),
    }
)


async def secured_host(**kwargs: object) -> HttpAgentServer:
    service = HttpAgentService(authenticator=BearerTokens(TOKENS), a2a=True, **kwargs)  # type: ignore[arg-type]
    server = HttpAgentServer("127.0.0.1", port=0, service=service)
    await bounded(server.start())
    return server


@pytest.fixture
async def host() -> AsyncIterator[HttpAgentServer]:
    server = await secured_host(access_policy=POLICY)
    worker = HttpWorkerAgentRuntime(server.url, token=TOKENS["worker"])
    worker.add_message_serializer(SERIALIZERS)
    try:
        await bounded(worker.start())
        await serve_agents(worker, Seen())
        yield server
    finally:
        await bounded(worker.stop())
        await bounded(server.stop(grace=1))


def as_(name: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {TOKENS[name]}"} if name else {}
    return httpx.AsyncClient(headers=headers, timeout=TIMEOUT, trust_env=False)


async def test_the_cards_are_public_and_declare_the_bearer_scheme(host: HttpAgentServer) -> None:
    async with as_("") as anyone:
        assert (await anyone.get(f"{host.url}/v1/agents")).status_code == 401  # the rest is not public
        for url in (host.url, f"{host.url}/a2a/shout"):
            card = await bounded(A2ACardResolver(anyone, url).get_agent_card())
            assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"
            assert list(card.security_requirements[0].schemes) == ["bearer"]


async def test_a_call_needs_a_token(host: HttpAgentServer) -> None:
    async with as_("") as anyone, as_("alice") as alice:
        with pytest.raises(A2AClientError, match="401"):
            await task_of(await client(anyone, f"{host.url}/a2a/shout"), text("hi"))
        task = await task_of(await client(alice, f"{host.url}/a2a/shout"), text("hi"))
        assert artifact_value(task) == {"content": "HI"}


async def test_the_access_policy_decides_who_calls_what(host: HttpAgentServer) -> None:
    async with as_("alice") as alice, as_("bob") as bob:
        with pytest.raises(A2AClientError, match="403"):
            await task_of(await client(alice, f"{host.url}/a2a/till"), text('{"item": "tea", "qty": 1}'))
        with pytest.raises(A2AClientError, match="403"):
            await task_of(await client(bob, f"{host.url}/a2a/shout"), text("hi"))
        task = await task_of(await client(bob, f"{host.url}/a2a/till"), text('{"item": "tea", "qty": 1}'))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED


async def test_one_identity_cannot_read_anothers_task(host: HttpAgentServer) -> None:
    async with as_("alice") as alice, as_("carol") as carol:
        task = await task_of(await client(alice, f"{host.url}/a2a/shout"), text("secret"))
        mine = await bounded(
            (await client(alice, f"{host.url}/a2a/shout")).get_task(GetTaskRequest(id=task.id))
        )
        assert mine.id == task.id
        with pytest.raises(TaskNotFoundError):
            await bounded((await client(carol, f"{host.url}/a2a/shout")).get_task(GetTaskRequest(id=task.id)))


async def test_over_the_rate_limit_the_task_is_rejected() -> None:
    server = await secured_host(rate_limit=RateLimit(0.001, 1))  # one call, then none for long
    worker = HttpWorkerAgentRuntime(server.url, token=TOKENS["worker"])
    worker.add_message_serializer(SERIALIZERS)
    try:
        await bounded(worker.start())
        await serve_agents(worker, Seen())
        async with as_("alice") as alice:
            sdk = await client(alice, f"{server.url}/a2a/shout")
            assert (await task_of(sdk, text("one"))).status.state == TaskState.TASK_STATE_COMPLETED
            refused = await task_of(sdk, text("two"))
            assert refused.status.state == TaskState.TASK_STATE_REJECTED
            assert "over its rate limit" in refused.status.message.parts[0].text
    finally:
        await bounded(worker.stop())
        await bounded(server.stop(grace=1))
