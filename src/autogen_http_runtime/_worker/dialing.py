"""How a worker reaches its host: the connection settings, TLS, and what a failed attempt means."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl as ssl_module
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import websockets

from .._constants import PROBLEM_TYPE_PREFIX
from .._exceptions import AuthenticationError, HostConnectionError, TLSError
from .._protocol.address import HostEndpoint, parse_host_addresses


@dataclass(frozen=True)
class ConnectionOptions:
    """How a worker connects; see :class:`HttpWorkerAgentRuntime` for each setting."""

    #: The hosts to connect to, in the order they are tried (one, or several of one cluster).
    endpoints: tuple[HostEndpoint, ...]
    name: str
    instance_id: str
    max_message_size: int
    connect_timeout: float
    ping_interval: float | None
    ping_timeout: float | None
    headers: dict[str, str]
    #: Bytes queued for sending above which :meth:`HostConnection.drain` waits.
    write_buffer_limit: int
    #: Offer per-message deflate.
    compression: bool = False
    #: TLS settings for a ``wss://`` host; ``None`` uses the system's trust store.
    ssl: ssl_module.SSLContext | None = None

    @classmethod
    def build(
        cls,
        host_address: str | Sequence[str],
        *,
        name: str,
        max_message_size: int,
        connect_timeout: float,
        ping_interval: float | None,
        ping_timeout: float | None,
        headers: Mapping[str, str] | None,
        token: str | None,
        write_buffer_limit: int,
        compression: bool,
        ssl_context: ssl_module.SSLContext | None,
        ssl_ca: str | None,
        ssl_certfile: str | None,
        ssl_keyfile: str | None,
    ) -> ConnectionOptions:
        """The options of ``HttpWorkerAgentRuntime``'s arguments (see there).

        Raises:
            ValueError: An address that cannot be parsed, ``token=`` and an ``Authorization``
                header both given, or TLS settings that do not fit the address.
        """
        endpoints = parse_host_addresses(host_address)
        handshake_headers = dict(headers or {})
        if token is not None:
            if any(key.lower() == "authorization" for key in handshake_headers):
                raise ValueError("Give token= or an Authorization header in headers=, not both.")
            handshake_headers["Authorization"] = f"Bearer {token}"
        return cls(
            endpoints=endpoints,
            name=name,
            instance_id=uuid.uuid4().hex,
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            headers=handshake_headers,
            write_buffer_limit=write_buffer_limit,
            compression=compression,
            ssl=client_ssl_context(endpoints, ssl_context, ssl_ca, ssl_certfile, ssl_keyfile),
        )


def client_ssl_context(
    endpoints: Sequence[HostEndpoint],
    context: ssl_module.SSLContext | None,
    ca: str | None,
    certfile: str | None,
    keyfile: str | None,
) -> ssl_module.SSLContext | None:
    """The TLS context a worker connects with, from its ``ssl=``/``ssl_ca=``/``ssl_certfile=`` settings.

    Raises:
        ValueError: TLS settings for a plain ``http://`` host, or ``ssl=`` together with the others.
    """
    if context is None and ca is None and certfile is None:
        if keyfile is not None:
            raise ValueError("ssl_keyfile= needs ssl_certfile= (the client certificate).")
        return None
    for endpoint in endpoints:
        if not endpoint.ws_url.startswith("wss://"):
            raise ValueError(
                f"TLS settings were given but the host address {endpoint.ws_url!r} is not secure: "
                "use an https:// (or wss://) address."
            )
    if context is not None:
        if ca is not None or certfile is not None or keyfile is not None:
            raise ValueError("Give either ssl= (an SSLContext) or ssl_ca=/ssl_certfile=, not both.")
        return context
    built = ssl_module.create_default_context(ssl_module.Purpose.SERVER_AUTH, cafile=ca)
    if certfile is not None:
        built.load_cert_chain(certfile, keyfile)
    return built


async def connect_failure(url: str, exc: BaseException, timeout: float) -> HostConnectionError:
    """:func:`connect_error`, and for a ``ws://`` URL whose answer was not HTTP at all, a check
    of whether the host speaks TLS there (a TLS handshake, certificate unchecked), to say so."""
    error = connect_error(url, exc)
    if url.startswith("ws://") and isinstance(exc, websockets.exceptions.InvalidMessage):
        parts = urlsplit(url)
        # A TLS server answers a ClientHello at once: a short wait is enough to tell.
        if parts.hostname and await speaks_tls(parts.hostname, parts.port or 80, min(timeout, 3.0)):
            return TLSError(  # not worth retrying: the address is wrong, not the host down
                f"Cannot connect to the host at {url}: the host speaks TLS. Use an https:// "
                "(or wss://) address, and ssl_ca= if its certificate is not signed by a CA the "
                "system trusts."
            )
    return error


async def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether a TLS handshake with ``host:port`` succeeds (the certificate is not checked:
    this only asks which protocol the port speaks)."""
    context = ssl_module.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl_module.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), timeout)
    except (OSError, asyncio.TimeoutError):  # ssl.SSLError is an OSError
        return False
    writer.close()
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout)
    return True


def connect_error(url: str, exc: BaseException) -> HostConnectionError:
    """Say why a connection attempt failed, in the most precise type we can."""
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        return _refusal(url, exc.response.status_code, exc.response.body)
    cause: BaseException | None = exc
    while cause is not None:  # websockets may wrap the TLS failure
        if isinstance(cause, ssl_module.SSLCertVerificationError):
            return TLSError(
                f"Cannot connect to the host at {url}: its TLS certificate is not trusted "
                f"({cause.verify_message}). Pass ssl_ca= (the CA bundle that signed it) or ssl=."
            )
        if isinstance(cause, ssl_module.SSLError):
            if "CERTIFICATE_REQUIRED" in str(cause).upper().replace(" ", "_"):
                return TLSError(
                    f"Cannot connect to the host at {url}: it requires a client certificate ({cause}). "
                    "Pass ssl_certfile= (and ssl_keyfile=) or ssl=."
                )
            # Could be a host restarting mid-handshake: not a reason to give up.
            return HostConnectionError(f"Cannot connect to the host at {url}: TLS failed: {cause}.")
        cause = cause.__cause__ or cause.__context__
    hint = ""
    if url.startswith("wss://") and isinstance(exc, websockets.exceptions.InvalidMessage):
        # An mTLS host that wants a certificate closes the TLS connection right after the handshake.
        hint = (
            " The host closed the connection before answering: if it requires a client "
            "certificate (mTLS), pass ssl_certfile= (and ssl_keyfile=)."
        )
    return HostConnectionError(f"Cannot connect to the host at {url}: {exc!r}.{hint}")


def _refusal(url: str, status: int, body: bytes | bytearray | None) -> HostConnectionError:
    """The error for a WebSocket handshake answered with an HTTP error status.

    Only this host's own refusals carry an RFC 9457 problem of type
    ``urn:autogen-http:problem:*``; a 403 or 404 without one is how a server answers a
    WebSocket to a path it serves nothing at (Starlette: 403), so the URL is wrong.
    """
    kind, detail = _problem(body)
    ours = kind.startswith(PROBLEM_TYPE_PREFIX)
    said = f": {detail.rstrip('.')}" if detail else ""
    if status == 401 or (status == 403 and ours):
        word = "rejected this worker's credentials" if status == 401 else "does not let this worker in"
        return AuthenticationError(
            f"The host at {url} {word} (HTTP {status}){said}. "
            "Check the token= (or headers=) given to HttpWorkerAgentRuntime.",
            status=status,
        )
    if status in (403, 404) and not ours:
        return HostConnectionError(
            f"There is no worker endpoint at {url}: the server answered HTTP {status} without this "
            "runtime's problem body, as servers do for a path they serve nothing at. Check the "
            "address: the host's base URL, with the prefix its service is mounted under if any "
            "(http://host:port/prefix); the worker adds /v1/worker itself."
        )
    return HostConnectionError(f"The host at {url} refused the connection (HTTP {status}){said}.")


def _problem(body: bytes | bytearray | None) -> tuple[str, str]:
    """The ``type`` and ``detail`` of an RFC 9457 problem body (``""`` for each one missing);
    a body that is not JSON is its own detail."""
    if not body:
        return "", ""
    try:
        value = json.loads(body)
    except ValueError:
        return "", bytes(body[:200]).decode("utf-8", "replace").strip()
    if not isinstance(value, dict):
        return "", ""
    kind, detail = value.get("type"), value.get("detail")
    return (kind if isinstance(kind, str) else ""), (detail if isinstance(detail, str) else "")
