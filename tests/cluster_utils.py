"""Helpers for the cluster tests: hosts of one cluster on a throwaway Redis, and their workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from autogen_core import MessageContext, RoutedAgent, message_handler

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime

from .redis_server import RedisServer
from .utils import SERIALIZERS, TIMEOUT, Text, bounded

SECRET = "a-cluster-secret-for-tests"
#: Short, so that the tests of a dead host wait little; the default is 3 s.
LEASE = 1.5


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


MakeHost = Callable[..., Awaitable[HttpAgentServer]]
MakeWorker = Callable[..., Awaitable[HttpWorkerAgentRuntime]]


@pytest.fixture
async def make_host(redis_server: RedisServer) -> AsyncIterator[MakeHost]:
    """Start a host of the cluster on ``redis_server``; each is stopped at the end of the test."""
    hosts: list[HttpAgentServer] = []

    async def create(**kwargs: Any) -> HttpAgentServer:
        options: dict[str, Any] = {
            "redis_url": redis_server.url,
            "cluster_secret": SECRET,
            "cluster_lease": LEASE,
        }
        options.update(kwargs)
        host = HttpAgentServer("127.0.0.1", port=0, **options)
        hosts.append(host)
        await bounded(host.start())
        return host

    try:
        yield create
    finally:
        for host in reversed(hosts):
            await bounded(host.stop(grace=1))


@pytest.fixture
async def make_worker() -> AsyncIterator[MakeWorker]:
    """Start a worker connected to a host (its ``url``, or a list of addresses)."""
    workers: list[HttpWorkerAgentRuntime] = []

    async def create(address: Any, **kwargs: Any) -> HttpWorkerAgentRuntime:
        worker = HttpWorkerAgentRuntime(address, **kwargs)
        worker.add_message_serializer(SERIALIZERS)
        workers.append(worker)
        await bounded(worker.start())
        return worker

    try:
        yield create
    finally:
        for worker in workers:
            await bounded(worker.stop())


class Named(RoutedAgent):
    """Answers any text with its worker's name; ``hold`` waits until the call is cancelled (and says so)."""

    held: asyncio.Queue[str]
    cancelled: asyncio.Queue[str]

    def __init__(self, name: str) -> None:
        super().__init__("says which worker it runs on")
        self._name = name
        self.calls = 0

    async def save_state(self) -> Mapping[str, Any]:
        return {"name": self._name, "calls": self.calls}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.calls = int(state["calls"])

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self.calls += 1
        if message.content == "hold":
            # Held until the caller gives up: its cancel reaches the handler as autogen-core
            # passes it, through ctx.cancellation_token.
            key, released = self.id.key, asyncio.Event()
            ctx.cancellation_token.add_callback(released.set)
            Named.held.put_nowait(key)
            await released.wait()
            Named.cancelled.put_nowait(key)
        return Text(self._name)


def reset_named() -> None:
    Named.held = asyncio.Queue()
    Named.cancelled = asyncio.Queue()


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = TIMEOUT) -> float:
    """Poll ``condition`` until it holds; returns the seconds it took. Fails the test past ``seconds``."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"condition not met within {seconds} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def redis_commands(url: str) -> dict[str, int]:
    """Calls per Redis command since the server started (``INFO commandstats``)."""
    client = aioredis.Redis.from_url(url, protocol=2, decode_responses=True)
    try:
        stats = await bounded(client.info("commandstats"))
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
