"""Direct links between the hosts of a cluster: a WebSocket from each host to each other one.

With ``cluster_link_url`` a host says, when it joins, where the others reach it
(``ws://10.0.0.5:9000``, say); each host then sends what it has for another over a
WebSocket it opened to that host's :data:`~.._constants.CLUSTER_LINK_PATH`, rather than
through Redis: one process hop less each way, and no Redis command per batch. A link
carries one way only (each host of a pair opens its own), the sealed batches of
``_cluster/envelope.py`` as binary messages; the endpoint takes a batch only if it bears
the cluster secret's signature and was not seen before, and closes the link at the
first it refuses (code 1008). While there is no link (it is opening, it failed, the host
offers none), Redis carries the batches (``_cluster/peers.py``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import InvalidState, WebSocketException

from .._constants import CLUSTER_LINK_PATH, WORKER_WS_PATH
from .._host.session import CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER
from .._logging import Throttled
from .._protocol.address import parse_host_address
from .._transport.client import WebSocketClient, connect
from .._transport.uvicorn_protocol import DIRECT_FRAMES, DirectWebSocketProtocol

if TYPE_CHECKING:
    from .._cluster.node import ClusterNode

#: Seconds a host gives another to open a link (TCP, TLS, handshake) before Redis carries on.
CONNECT_TIMEOUT: Final = 2.0
#: Bytes a link's socket buffers before its sender waits.
WRITE_BUFFER: Final = 4 << 20
#: Close code a link gets when its message is not binary (1003: unsupported data).
CLOSE_UNSUPPORTED: Final = 1003
#: Links a host holds open at once that have not yet sent a batch bearing the secret.
MAX_UNPROVEN: Final = 64
#: The largest first message of a link: a hello (an empty batch). A larger one is refused
#: before its signature is checked.
MAX_FIRST: Final = 4096


def link_url(address: str) -> str:
    """The WebSocket URL of the link endpoint for a host's ``cluster_link_url``: a ``ws://``,
    ``wss://``, ``http://`` or ``https://`` URL of where the service is mounted (or of the
    endpoint itself, ending in :data:`~.._constants.CLUSTER_LINK_PATH`).

    Raises:
        ValueError: The address is not such a URL.
    """
    text = address.strip()
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme not in ("ws", "wss", "http", "https"):
        raise ValueError(
            f"cluster_link_url must be the URL other hosts reach this one at, such as "
            f"ws://10.0.0.5:9000 (or 'auto'), not {address!r}."
        )
    base = text.rstrip("/").removesuffix(CLUSTER_LINK_PATH)
    worker_url = parse_host_address(base).ws_url
    return worker_url.removesuffix(WORKER_WS_PATH) + CLUSTER_LINK_PATH


def client_tls(settings: Mapping[str, Any]) -> ssl_module.SSLContext | None:
    """How a host with uvicorn's ``ssl_*`` ``settings`` opens links to the others: trusting
    ``ssl_ca_certs`` (or the system's CAs), and presenting its own certificate when it asks
    workers for theirs (the other hosts, with the same settings, will ask it too)."""
    if not settings.get("ssl_certfile"):
        return None
    context = ssl_module.create_default_context(cafile=settings.get("ssl_ca_certs"))
    if settings.get("ssl_cert_reqs", ssl_module.CERT_NONE) != ssl_module.CERT_NONE:
        context.load_cert_chain(
            settings["ssl_certfile"], settings.get("ssl_keyfile"), settings.get("ssl_keyfile_password")
        )
    return context


class WebSocketLink:
    """One host's link to another (``_cluster.links.PeerLink``)."""

    def __init__(self) -> None:
        self._client: WebSocketClient | None = None
        self._closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._closing: asyncio.Task[None] | None = None

    def opened(self, client: WebSocketClient) -> None:
        self._client = client

    def lost(self, why: str) -> None:
        if not self._closed.done():
            self._closed.set_result(why)

    async def send(self, data: bytes) -> bool:
        client = self._client
        if client is None or self._closed.done():
            return False
        try:
            client.send_binary(data)
        except InvalidState:
            return False
        await client.drain()
        return True

    async def closed(self) -> str:
        return await asyncio.shield(self._closed)

    @property
    def close_code(self) -> int | None:
        return None if self._client is None else self._client.close_code

    def close(self) -> None:
        if self._client is not None and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._client.close(CLOSE_GOING_AWAY))


class LinkDialer:
    """Opens this host's links to the others (``_cluster.links.Dial``).

    Args:
        lease: The cluster's lease. A link gone silent (the other host's machine or the network
            gone: what was written is not acknowledged) is closed within it; one whose host
            stalls (a ping not answered) within one and a half: no sooner than the lease
            declares that host gone, so a link makes a stall cost no more than before.
    """

    def __init__(self, *, tls: ssl_module.SSLContext | None, lease: float, logger: logging.Logger) -> None:
        self._tls = tls
        self._lease = lease
        self._failures = Throttled(logger)
        self._log = logger

    async def __call__(self, host: str, url: str) -> WebSocketLink | None:
        link = WebSocketLink()

        def ignore(_data: bytes | bytearray, _text: bool) -> None:
            """Nothing comes back on a link but control frames."""

        try:
            client = await asyncio.wait_for(
                connect(
                    url,
                    ignore,
                    link.lost,
                    headers={},
                    ssl=self._tls,
                    max_size=1 << 16,
                    compression=False,
                    ping_interval=self._lease / 2,
                    ping_timeout=self._lease,
                    write_buffer_limit=WRITE_BUFFER,
                    proxy=False,  # hosts reach each other directly (HTTPS_PROXY is for workers)
                    unacked_timeout=self._lease,
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, WebSocketException, ValueError, asyncio.TimeoutError) as exc:
            # Unreachable, refused, TLS, or a URL (from Redis) that is not one: Redis carries on.
            self._failures.warning(
                "Cannot open a direct link to host %s at %s (%s); Redis carries what goes there",
                host,
                url,
                str(exc) or type(exc).__name__,
                key=host,
            )
            return None
        link.opened(client)
        self._log.info("Direct link open to host %s at %s", host, url)
        return link


class LinkEndpoint:
    """The ASGI endpoint other hosts' links arrive at (:data:`~.._constants.CLUSTER_LINK_PATH`).

    Under ``HttpAgentServer`` each batch goes from uvicorn's protocol straight to the node
    (``_transport/uvicorn_protocol.py``); elsewhere through ASGI. Either way a link must
    send a batch within ``hello_timeout`` seconds, and is closed at its first refused one;
    at most :data:`MAX_UNPROVEN` links wait for their first batch at once. When a link that
    carried batches ends, the calls this host made to its sender fail (their answers may
    have been on it).
    """

    def __init__(self, node: ClusterNode, *, hello_timeout: float, logger: logging.Logger) -> None:
        self.node = node
        self.hello_timeout = hello_timeout
        self.refusals = Throttled(logger)
        #: Links open now, and those of them that have sent no batch bearing the secret yet.
        self.open = 0
        self.unproven = 0

    async def __call__(self, websocket: WebSocket) -> None:
        node = self.node
        if node.unavailable is not None:
            await websocket.close(CLOSE_TRY_AGAIN_LATER, f"cluster out of reach: {node.unavailable}")
            return
        peer = websocket.client.host if websocket.client else "an unknown peer"
        if self.unproven >= MAX_UNPROVEN:
            self.refusals.warning("Too many links waiting for their first batch; refused one from %s", peer)
            await websocket.close(CLOSE_TRY_AGAIN_LATER, "too many links waiting")
            return
        link = _Link(self, peer)  # holds its place among the unproven from now
        self.open += 1
        try:
            await websocket.accept()
            protocol = websocket.scope.get("extensions", {}).get(DIRECT_FRAMES, {}).get("protocol")
            if isinstance(protocol, DirectWebSocketProtocol):
                await _DirectLink(link, protocol).run()
            else:
                await self._serve(websocket, link)
        except WebSocketDisconnect:
            pass
        finally:
            self.open -= 1
            link.ended()

    def too_late(self, peer: str) -> tuple[int, str]:
        self.refusals.warning("A link from %s sent no batch in time; closed", peer, key=peer)
        return CLOSE_POLICY_VIOLATION, "no batch in time"

    async def _serve(self, websocket: WebSocket, link: _Link) -> None:
        while True:
            try:
                timeout = None if link.proven else self.hello_timeout
                message = await asyncio.wait_for(websocket.receive(), timeout)
            except asyncio.TimeoutError:
                await websocket.close(*self.too_late(link.peer))
                return
            if message["type"] == "websocket.disconnect":
                return
            refusal = link.take(message.get("bytes"))
            if refusal is not None:
                await websocket.close(*refusal)
                return


class _Link:
    """One link from another host, as the endpoint sees it, on either path."""

    def __init__(self, endpoint: LinkEndpoint, peer: str) -> None:
        self.endpoint = endpoint
        self.peer = peer
        #: The host sending on it, once a batch of its was taken.
        self.source: str | None = None
        self._counted = True
        endpoint.unproven += 1

    @property
    def proven(self) -> bool:
        return self.source is not None

    def take(self, data: bytes | None) -> tuple[int, str] | None:
        """Route a message: ``None``, or the code and reason to close the link with."""
        endpoint, node, peer = self.endpoint, self.endpoint.node, self.peer
        if data is None:
            return CLOSE_UNSUPPORTED, "a link carries binary batches only"
        if not self.proven and len(data) > MAX_FIRST:
            endpoint.refusals.warning("A link from %s began with %d bytes; closed", peer, len(data), key=peer)
            return CLOSE_POLICY_VIOLATION, "the first message of a link is an empty batch"
        source = node.receive_link(data)
        if source is None:
            if node.unavailable is not None:
                return CLOSE_TRY_AGAIN_LATER, "cluster out of reach"
            endpoint.refusals.warning("Refused a batch from the link from %s; closed", peer, key=peer)
            return CLOSE_POLICY_VIOLATION, "batch refused"
        if self.source is None:
            self.source = source
            self._uncount()
        return None

    def ended(self) -> None:
        self._uncount()
        if self.source is not None:
            self.endpoint.node.link_closed(self.source)

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.endpoint.unproven -= 1


class _DirectLink:
    """A link from another host on uvicorn's protocol, past ASGI (a ``DirectPeer``)."""

    def __init__(self, link: _Link, protocol: DirectWebSocketProtocol) -> None:
        self._link = link
        self._protocol = protocol
        loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[None] = loop.create_future()
        self._hello = loop.call_later(link.endpoint.hello_timeout, self._too_late)

    async def run(self) -> None:
        self._protocol.attach(self, binary=True)
        try:
            await asyncio.shield(self._ended)
        finally:
            self._hello.cancel()

    def receive(self, received: str | bytes | None) -> None:
        if self._protocol.close_sent:
            return
        refusal = self._link.take(received if isinstance(received, bytes) else None)
        if refusal is not None:
            self._protocol.close(*refusal)
        elif self._link.proven:
            self._hello.cancel()

    def _too_late(self) -> None:
        if not self._protocol.close_sent and not self._link.proven:
            self._protocol.close(*self._link.endpoint.too_late(self._link.peer))

    def end(self, reason: str) -> None:
        if not self._ended.done():
            self._ended.set_result(None)

    def lost(self) -> None:
        self.end("the socket was lost")

    def wake(self) -> None:
        """Nothing is written on a link but control frames."""
