"""Parse the addresses users give the host and the workers. No I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from .._constants import DEFAULT_HOST, DEFAULT_PORT, WORKER_WS_PATH


@dataclass(frozen=True)
class HostEndpoint:
    """Where a worker finds its host: the HTTP base URL and the worker WebSocket URL."""

    http_url: str
    ws_url: str


def split_host_port(address: str, port: int | None = None) -> tuple[str, int]:
    """Split ``"host:port"``, ``"[::1]:port"``, ``"host"`` or ``":port"`` into a host and a port.

    An explicit ``port`` wins over one in ``address``. A missing host is ``127.0.0.1``;
    a missing port is 9000.

    Raises:
        ValueError: The address cannot be parsed or the port is out of range.
    """
    address = address.strip()
    host = address
    parsed_port: int | None = None
    if address.startswith("["):
        end = address.find("]")
        if end == -1:
            raise ValueError(f"Invalid address {address!r}: missing ']' after an IPv6 host.")
        host = address[1:end]
        rest = address[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"Invalid address {address!r}: expected ':port' after ']'.")
            parsed_port = _parse_port(rest[1:], address)
    elif address.count(":") == 1:
        host, _, port_text = address.partition(":")
        parsed_port = _parse_port(port_text, address)
    elif address.count(":") > 1:
        raise ValueError(f"Invalid address {address!r}: write IPv6 hosts in brackets, e.g. '[::1]:9000'.")
    if port is not None:
        if not 0 <= port <= 65535:
            raise ValueError(f"Invalid port {port}: it must be between 0 and 65535.")
        parsed_port = port
    return (host or DEFAULT_HOST, DEFAULT_PORT if parsed_port is None else parsed_port)


def _parse_port(text: str, address: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"Invalid address {address!r}: the port must be a number from 0 to 65535.")
    return int(text)


def format_host_port(host: str, port: int) -> str:
    """The inverse of :func:`split_host_port`: brackets IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_host_address(host_address: str) -> HostEndpoint:
    """Turn a worker's ``host_address`` into the host's HTTP and WebSocket URLs.

    Accepts ``"host:port"`` (the gRPC runtime's style), ``"http://host:port[/prefix]"``,
    ``"https://host:port[/prefix]"`` (then the WebSocket uses ``wss``), and ``ws://`` or
    ``wss://`` URLs of the mount point. A path ending in ``/v1/worker`` is the worker
    WebSocket's own URL (as ``docs/protocol.md`` writes it): what precedes it is the mount point.

    Raises:
        ValueError: The address is not one of those forms.
    """
    text = host_address.strip()
    if "://" not in text:
        host, port = split_host_port(text)
        text = f"http://{format_host_port(host, port)}"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    secure = {"http": False, "ws": False, "https": True, "wss": True}.get(scheme)
    if secure is None:
        raise ValueError(
            f"Invalid host address {host_address!r}: use host:port, http(s)://... or ws(s)://..."
        )
    if not parts.hostname:
        raise ValueError(f"Invalid host address {host_address!r}: no host name.")
    try:
        _ = parts.port  # urlsplit checks the port only when it is read
    except ValueError as exc:
        raise ValueError(f"Invalid host address {host_address!r}: {exc}.") from None
    if parts.query or parts.fragment:
        raise ValueError(f"Invalid host address {host_address!r}: no query or fragment allowed.")
    prefix = parts.path.rstrip("/")
    if prefix.endswith(WORKER_WS_PATH):
        prefix = prefix[: -len(WORKER_WS_PATH)]
    netloc = parts.netloc
    http_scheme, ws_scheme = ("https", "wss") if secure else ("http", "ws")
    return HostEndpoint(
        http_url=f"{http_scheme}://{netloc}{prefix}",
        ws_url=f"{ws_scheme}://{netloc}{prefix}{WORKER_WS_PATH}",
    )


def parse_host_addresses(host_address: str | Sequence[str]) -> tuple[HostEndpoint, ...]:
    """The hosts a worker may connect to, in the order it tries them.

    ``host_address`` is one address (any form :func:`parse_host_address` accepts), several
    separated by commas (``"a:9000,b:9000"``: one string fits wherever the gRPC runtime took
    one), or a sequence of addresses. Repeated addresses count once.

    Raises:
        ValueError: No address, or one that cannot be parsed.
    """
    if isinstance(host_address, str):
        if "," not in host_address:
            return (parse_host_address(host_address),)
        texts: list[str] = host_address.split(",")
    else:
        texts = list(host_address)
    endpoints: list[HostEndpoint] = []
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Invalid host addresses {host_address!r}: each must be a non-empty string.")
        endpoint = parse_host_address(text)
        if endpoint not in endpoints:
            endpoints.append(endpoint)
    if not endpoints:
        raise ValueError("No host address given: give host:port or a URL, or several.")
    return tuple(endpoints)
