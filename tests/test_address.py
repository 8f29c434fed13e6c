"""Parsing the addresses users give the host and the workers. Pure: no sockets."""

from __future__ import annotations

import pytest

from autogen_http_runtime._protocol.address import (
    HostEndpoint,
    format_host_port,
    parse_host_address,
    split_host_port,
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("example.com:8080", ("example.com", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9001", ("::1", 9001)),
        ("[::1]", ("::1", 9000)),
        ("example.com", ("example.com", 9000)),
        (":9100", ("127.0.0.1", 9100)),
        ("", ("127.0.0.1", 9000)),
        ("  host:65535  ", ("host", 65535)),
    ],
)
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected


@pytest.mark.parametrize(
    ("address", "port", "expected"),
    [
        ("host:1234", 4321, ("host", 4321)),
        ("host", 0, ("host", 0)),
        ("[::1]:9000", 8000, ("::1", 8000)),
        (":9000", 65535, ("127.0.0.1", 65535)),
    ],
)
def test_explicit_port_wins(address: str, port: int, expected: tuple[str, int]) -> None:
    assert split_host_port(address, port) == expected


@pytest.mark.parametrize(
    "address",
    [
        "host:",
        "host:http",
        "host:-1",
        "host:65536",
        "host:1.5",
        "[::1]:x",
        "[::1]:70000",
        "[::1",
        "[::1]9000",
        "::1",
        "fe80::1:9000",
    ],
)
def test_split_host_port_rejects_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="Invalid address"):
        split_host_port(address)


@pytest.mark.parametrize("port", [-1, 65536, 100_000])
def test_split_host_port_rejects_bad_explicit_port(port: int) -> None:
    with pytest.raises(ValueError, match="Invalid port"):
        split_host_port("host:9000", port)


@pytest.mark.parametrize(("host", "port"), [("example.com", 80), ("::1", 9000), ("127.0.0.1", 0)])
def test_format_host_port_round_trips(host: str, port: int) -> None:
    assert split_host_port(format_host_port(host, port)) == (host, port)


def test_format_host_port_brackets_ipv6() -> None:
    assert format_host_port("::1", 9000) == "[::1]:9000"
    assert format_host_port("h", 1) == "h:1"


@pytest.mark.parametrize(
    ("address", "http_url", "ws_url"),
    [
        # The gRPC runtime's style.
        ("localhost:50051", "http://localhost:50051", "ws://localhost:50051/v1/worker"),
        ("example.com", "http://example.com:9000", "ws://example.com:9000/v1/worker"),
        ("[::1]:9000", "http://[::1]:9000", "ws://[::1]:9000/v1/worker"),
        # HTTP URLs of the mount point, with and without a prefix.
        ("http://h:1", "http://h:1", "ws://h:1/v1/worker"),
        ("http://h:1/", "http://h:1", "ws://h:1/v1/worker"),
        ("http://h:1/agents", "http://h:1/agents", "ws://h:1/agents/v1/worker"),
        ("http://h:1/agents/", "http://h:1/agents", "ws://h:1/agents/v1/worker"),
        ("http://h:1/a/b", "http://h:1/a/b", "ws://h:1/a/b/v1/worker"),
        ("HTTP://h:1", "http://h:1", "ws://h:1/v1/worker"),
        # TLS: https goes with wss.
        ("https://h", "https://h", "wss://h/v1/worker"),
        ("https://h:8443/agents", "https://h:8443/agents", "wss://h:8443/agents/v1/worker"),
        # WebSocket URLs of the mount point.
        ("ws://h:1", "http://h:1", "ws://h:1/v1/worker"),
        ("ws://h:1/agents", "http://h:1/agents", "ws://h:1/agents/v1/worker"),
        ("wss://h:2/agents", "https://h:2/agents", "wss://h:2/agents/v1/worker"),
        ("  http://h:1  ", "http://h:1", "ws://h:1/v1/worker"),
        # The worker WebSocket's own URL, as docs/protocol.md shows it: the mount point precedes it.
        ("ws://127.0.0.1:9000/v1/worker", "http://127.0.0.1:9000", "ws://127.0.0.1:9000/v1/worker"),
        ("ws://h:1/agents/v1/worker/", "http://h:1/agents", "ws://h:1/agents/v1/worker"),
        ("https://h/agents/v1/worker", "https://h/agents", "wss://h/agents/v1/worker"),
        ("http://h:1/v1/workers", "http://h:1/v1/workers", "ws://h:1/v1/workers/v1/worker"),
    ],
)
def test_parse_host_address(address: str, http_url: str, ws_url: str) -> None:
    assert parse_host_address(address) == HostEndpoint(http_url=http_url, ws_url=ws_url)


@pytest.mark.parametrize(
    "address",
    [
        "ftp://h:1",
        "file:///tmp/socket",
        "http://",
        "http://:9000",
        "https:///agents",
        "http://h:1/agents?x=1",
        "http://h:1#top",
        "http://h:port",
        "http://h:99999",
        "ws://h:-1",
        "h:1:2",
        "h:port",
        "[::1",
    ],
)
def test_parse_host_address_rejects_garbage(address: str) -> None:
    with pytest.raises(ValueError, match="Invalid"):
        parse_host_address(address)
