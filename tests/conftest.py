"""Fixtures: a real host on 127.0.0.1 port 0 and real worker runtimes connected to it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime

from .utils import SERIALIZERS, bounded

WorkerFactory = Callable[..., Awaitable[HttpWorkerAgentRuntime]]


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    """Give back the root and package loggers' handlers and levels a test (or the CLI) changed."""
    root, package = logging.getLogger(), logging.getLogger("autogen_http_runtime")
    saved = root.handlers[:], root.level, package.level
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        package.setLevel(saved[2])


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
