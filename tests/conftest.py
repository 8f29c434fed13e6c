"""Fixtures: a real host on 127.0.0.1 port 0 and real worker runtimes connected to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime

from .utils import SERIALIZERS, bounded

WorkerFactory = Callable[..., Awaitable[HttpWorkerAgentRuntime]]


@pytest.fixture
async def server() -> AsyncIterator[HttpAgentServer]:
    host = HttpAgentServer("127.0.0.1", port=0)
    await bounded(host.start())
    try:
        yield host
    finally:
        await bounded(host.stop(grace=1))


@pytest.fixture
async def make_worker(server: HttpAgentServer) -> AsyncIterator[WorkerFactory]:
    """Create workers connected to ``server``; each is stopped at the end of the test."""
    workers: list[HttpWorkerAgentRuntime] = []

    async def create(*, start: bool = True, **kwargs: Any) -> HttpWorkerAgentRuntime:
        worker = HttpWorkerAgentRuntime(server.url, **kwargs)
        worker.add_message_serializer(SERIALIZERS)
        workers.append(worker)
        if start:
            await bounded(worker.start())
        return worker

    try:
        yield create
    finally:
        for worker in workers:
            await bounded(worker.stop())
