"""Fixtures: a real host on 127.0.0.1 port 0 and real worker runtimes connected to it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime
from autogen_http_runtime._http import server as _server

from .utils import SERIALIZERS, bounded

WorkerFactory = Callable[..., Awaitable[HttpWorkerAgentRuntime]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets ``BOTH_PATHS = True`` runs its tests that use ``server`` twice: on the
    direct WebSocket path HttpAgentServer takes and on the ASGI path a mounted service takes."""
    if getattr(metafunc.module, "BOTH_PATHS", False) and "server" in metafunc.fixturenames:
        metafunc.parametrize("server", ["direct", "asgi"], indirect=True)


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
async def server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[HttpAgentServer]:
    """A host on an ephemeral port; its worker WebSockets take the direct path
    (``_transport/uvicorn_protocol.py``), or the ASGI path for ``"asgi"`` (see ``pytest_generate_tests``)."""
    if getattr(request, "param", "direct") == "asgi":
        monkeypatch.setattr(_server, "direct_protocol", lambda: None)
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
