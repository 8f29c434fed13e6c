"""A worker's first hour: addresses, a host not up yet, TLS where plain was expected.

Each mistake gets an error that says what is wrong, of a type that tells retrying apart
from fixing the settings; the hosts are real, on real sockets.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from pathlib import Path

import pytest
import trustme
from autogen_core import AgentId

from autogen_http_runtime import (
    AuthenticationError,
    BearerTokens,
    HostConnectionError,
    HttpAgentServer,
    HttpAgentService,
    HttpWorkerAgentRuntime,
    ReconnectPolicy,
    TLSError,
)
from autogen_http_runtime._constants import WORKER_LOGGER

from .utils import SERIALIZERS, TIMEOUT, Text, Upper, bounded, owners

FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.1)


def worker(address: str, **kwargs: object) -> HttpWorkerAgentRuntime:
    runtime = HttpWorkerAgentRuntime(address, **kwargs)  # type: ignore[arg-type]
    runtime.add_message_serializer(SERIALIZERS)
    return runtime


# -- the worker URL -------------------------------------------------------------------------


async def test_the_full_worker_url_of_the_docs_is_accepted(server: HttpAgentServer) -> None:
    for address in (f"{server.url}/v1/worker", server.url.replace("http", "ws", 1) + "/v1/worker/"):
        runtime = worker(address)
        await bounded(runtime.start())
        try:
            await Upper.register(runtime, "upper", Upper)
            assert await bounded(runtime.send_message(Text("a"), AgentId("upper", "k"))) == Text("A")
        finally:
            await bounded(runtime.stop())


@pytest.mark.parametrize("path", ["/agents", "/v1/workers", "/v2/worker"])
async def test_a_wrong_path_is_not_an_authentication_failure(server: HttpAgentServer, path: str) -> None:
    ws_base = server.url.replace("http", "ws", 1)
    runtime = worker(server.url + path, reconnect=None)
    with pytest.raises(HostConnectionError) as caught:
        await bounded(runtime.start())
    assert not isinstance(caught.value, AuthenticationError)
    message = str(caught.value)
    assert message.startswith(f"There is no worker endpoint at {ws_base}{path}/v1/worker:")
    assert "mounted" in message and "prefix" in message
    assert "token" not in message
    assert server.service.core.sessions == {}


async def test_refused_credentials_are_still_an_authentication_failure_in_one_sentence() -> None:
    service = HttpAgentService(authenticator=BearerTokens({"alice": "a-token"}))
    async with HttpAgentServer(port=0, service=service) as server:
        runtime = worker(server.url, token="wrong", reconnect=None)
        with pytest.raises(AuthenticationError) as caught:
            await bounded(runtime.start())
    message = str(caught.value)
    assert caught.value.status == 401
    assert "(HTTP 401): The host requires authentication" in message
    assert ".." not in message and message.endswith("given to HttpWorkerAgentRuntime.")


# -- TLS where plain was expected --------------------------------------------------------------


async def test_a_plain_address_to_a_tls_host_says_the_host_speaks_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "host.pem")
    cert.private_key_pem.write_to_path(tmp_path / "host.key")
    tls = {"ssl_certfile": str(tmp_path / "host.pem"), "ssl_keyfile": str(tmp_path / "host.key")}
    async with HttpAgentServer(port=0, ssl=tls) as server:
        plain = server.url.removeprefix("https://")
        for address in (plain, f"http://{plain}"):
            runtime = worker(address, wait_for_host=TIMEOUT)  # not retried: waiting cannot fix it
            with pytest.raises(TLSError) as caught:
                await bounded(runtime.start(), TIMEOUT / 2)
            assert str(caught.value) == (
                f"Cannot connect to the host at ws://{plain}/v1/worker: the host speaks TLS. Use an "
                "https:// (or wss://) address, and ssl_ca= if its certificate is not signed by a CA the "
                "system trusts."
            )


async def test_a_plain_host_that_answers_garbage_is_not_called_tls() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Something else on the port: it answers an HTTP request with its banner, and drops
        # whatever else it is sent (the worker's TLS check: a ClientHello).
        if (await reader.read(3)) == b"GET":
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
            await writer.drain()
        writer.close()

    async with await asyncio.start_server(garbage, "127.0.0.1", 0) as listener:
        port = listener.sockets[0].getsockname()[1]
        runtime = worker(f"127.0.0.1:{port}", reconnect=None)
        with pytest.raises(HostConnectionError) as caught:
            await bounded(runtime.start())
    assert not isinstance(caught.value, TLSError)
    assert "did not receive a valid HTTP response" in str(caught.value)


# -- waiting for the host at start -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Lines(logging.Handler):
    """The worker logger's lines, and an event set by each new one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []
        self.more = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))
        self.more.set()

    async def until(self, text: str) -> None:
        async def wait() -> None:
            while not any(text in line for _, line in self.lines):
                self.more.clear()
                await self.more.wait()

        await bounded(wait())


@pytest.fixture
def worker_lines() -> Lines:
    lines = Lines()
    logger = logging.getLogger(WORKER_LOGGER)
    logger.addHandler(lines)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    yield lines  # type: ignore[misc]
    logger.removeHandler(lines)
    logger.setLevel(previous)


@pytest.mark.parametrize("where", ["constructor", "start"])
async def test_a_worker_waits_for_a_host_that_comes_up_later(worker_lines: Lines, where: str) -> None:
    port = free_port()
    if where == "constructor":
        runtime = worker(f"127.0.0.1:{port}", reconnect=FAST, wait_for_host=math.inf)
        starting = asyncio.ensure_future(runtime.start())
    else:
        runtime = worker(f"127.0.0.1:{port}", reconnect=FAST)
        starting = asyncio.ensure_future(runtime.start(wait_for_host=TIMEOUT))
    try:
        await worker_lines.until("The host is not reachable yet (attempt 2)")
        assert not starting.done()
        async with HttpAgentServer(port=port) as server:
            await bounded(starting)
            await Upper.register(runtime, "upper", Upper)
            assert "upper" in owners(server.service.core)
            await bounded(runtime.stop())
    finally:
        starting.cancel()
        await bounded(runtime.stop())
    retries = [(level, line) for level, line in worker_lines.lines if "not reachable yet" in line]
    assert retries and {level for level, _ in retries} == {logging.INFO}
    assert any(line.startswith("Reached the host after ") for _, line in worker_lines.lines)


async def test_waiting_ends_after_wait_for_host_with_the_last_error(worker_lines: Lines) -> None:
    runtime = worker(f"127.0.0.1:{free_port()}", reconnect=FAST, wait_for_host=0.5)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(HostConnectionError, match="Cannot connect to the host"):
        await bounded(runtime.start())
    assert 0.45 <= loop.time() - began < TIMEOUT / 2
    assert any(line.startswith("Gave up waiting for the host after ") for _, line in worker_lines.lines)


async def test_waiting_ends_when_the_policy_gives_up(worker_lines: Lines) -> None:
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.02, max_attempts=2)
    runtime = worker(f"127.0.0.1:{free_port()}", reconnect=policy, wait_for_host=math.inf)
    with pytest.raises(HostConnectionError):
        await bounded(runtime.start())
    retries = [line for _, line in worker_lines.lines if "not reachable yet" in line]
    assert len(retries) == 2  # the first attempt, then the policy's two


async def test_refused_credentials_fail_at_once_however_long_the_wait() -> None:
    service = HttpAgentService(authenticator=BearerTokens({"alice": "a-token"}))
    async with HttpAgentServer(port=0, service=service) as server:
        runtime = worker(server.url, token="wrong", wait_for_host=math.inf)
        with pytest.raises(AuthenticationError):
            await bounded(runtime.start())


async def test_stop_ends_a_start_that_waits_for_the_host(worker_lines: Lines) -> None:
    runtime = worker(f"127.0.0.1:{free_port()}", reconnect=FAST, wait_for_host=math.inf)
    starting = asyncio.ensure_future(runtime.start())
    await worker_lines.until("not reachable yet")
    await bounded(runtime.stop())
    with pytest.raises(HostConnectionError, match="stopped while waiting for the host"):
        await bounded(starting)


def test_wait_for_host_and_stop_grace_must_be_seconds() -> None:
    for name in ("wait_for_host", "stop_grace"):
        for bad in (-1.0, math.nan):
            with pytest.raises(ValueError, match=name):
                HttpWorkerAgentRuntime("127.0.0.1:1", **{name: bad})  # type: ignore[arg-type]
