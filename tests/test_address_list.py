"""A worker given several host addresses: it connects to the first it reaches and, having lost
its host, connects to another. Real hosts, real sockets; a dead host is a port nobody listens on."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from autogen_core import AgentId

from autogen_http_runtime import HostConnectionError, HttpAgentServer, HttpWorkerAgentRuntime, ReconnectPolicy
from autogen_http_runtime._protocol.address import HostEndpoint, parse_host_addresses

from .cluster_utils import until
from .utils import SERIALIZERS, Text, Upper, bounded, connected_workers, owners

FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.2)


def dead_address() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_one_string_with_commas_a_list_and_repeats() -> None:
    one, two = (
        HostEndpoint("http://a:1", "ws://a:1/v1/worker"),
        HostEndpoint("https://b:2", "wss://b:2/v1/worker"),
    )
    assert parse_host_addresses("a:1") == (one,)
    assert parse_host_addresses("a:1, https://b:2") == (one, two)
    assert parse_host_addresses(["https://b:2", "http://a:1", "a:1"]) == (two, one)


@pytest.mark.parametrize("addresses", ["a:1,", ",a:1", "a:1,,b:2", [], ["a:1", ""], "a:1,ftp://b"])
def test_an_empty_or_bad_entry_is_refused(addresses: str | list[str]) -> None:
    with pytest.raises(ValueError, match="Invalid host address|No host address"):
        parse_host_addresses(addresses)
    with pytest.raises(ValueError):
        HttpWorkerAgentRuntime(addresses)


def test_tls_settings_need_every_address_secure() -> None:
    with pytest.raises(ValueError, match="not secure"):
        HttpWorkerAgentRuntime(["https://a:1", "http://b:2"], ssl_ca="/nonexistent.pem")


@pytest.fixture
async def hosts() -> AsyncIterator[tuple[HttpAgentServer, HttpAgentServer]]:
    first, second = HttpAgentServer("127.0.0.1", port=0), HttpAgentServer("127.0.0.1", port=0)
    await bounded(first.start())
    await bounded(second.start())
    try:
        yield first, second
    finally:
        await bounded(second.stop(grace=1))
        await bounded(first.stop(grace=1))


async def test_start_skips_a_host_that_cannot_be_reached(
    hosts: tuple[HttpAgentServer, HttpAgentServer],
) -> None:
    first, _ = hosts
    worker = HttpWorkerAgentRuntime(f"{dead_address()},{first.url}", reconnect=FAST)
    worker.add_message_serializer(SERIALIZERS)
    try:
        await bounded(worker.start())
        await Upper.register(worker, "upper", Upper)
        assert await bounded(worker.send_message(Text("x"), AgentId("upper", "k"))) == Text("X")
        assert [w.name for w in connected_workers(first.service.core)] == [""]
    finally:
        await bounded(worker.stop())


async def test_start_fails_naming_every_host_when_none_answers() -> None:
    dead = [dead_address(), dead_address()]
    worker = HttpWorkerAgentRuntime(dead, connect_timeout=2)
    with pytest.raises(HostConnectionError, match="any of the 2 hosts") as caught:
        await bounded(worker.start())
    assert all(address.replace("http://", "ws://") in str(caught.value) for address in dead)
    await bounded(worker.stop())


async def test_a_worker_that_loses_its_host_reconnects_to_the_next(
    hosts: tuple[HttpAgentServer, HttpAgentServer],
) -> None:
    first, second = hosts
    served = HttpWorkerAgentRuntime([first.url, second.url], reconnect=FAST, name="served")
    caller = HttpWorkerAgentRuntime(second.url, reconnect=FAST)
    for worker in (served, caller):
        worker.add_message_serializer(SERIALIZERS)
    try:
        await bounded(served.start())
        await Upper.register(served, "upper", Upper)
        await bounded(caller.start())
        assert [w.name for w in connected_workers(first.service.core)] == ["served"]

        await bounded(first.stop(grace=1))

        # Its agent type is registered again on the second host, where the caller is.
        async def registered_again() -> bool:
            return "upper" in owners(second.service.core)

        await until(registered_again)
        assert await bounded(caller.send_message(Text("x"), AgentId("upper", "k"))) == Text("X")
        assert {w.name for w in connected_workers(second.service.core)} == {"served", ""}
    finally:
        await bounded(caller.stop())
        await bounded(served.stop())
