"""HttpAgentServer: one HttpAgentService served by an embedded uvicorn on a socket we bind."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import signal
import socket
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from .._compat import warn_grpc_config_ignored
from .._constants import (
    CLOSE_GRACE,
    DEFAULT_GRACE,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_STATE_SIZE,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    SERVER_LOGGER,
)
from .._protocol.address import format_host_port, split_host_port
from .._signals import signals_received
from .._transport.uvicorn_protocol import direct_protocol
from .cluster_links import client_tls
from .connections import ConnectionLimits, GuardedApp, descriptor_budget, guarded_protocol
from .models import description_router
from .service import HttpAgentService

__all__ = ["HttpAgentServer"]


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"
    STOPPED = "stopped"


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn that leaves the process's signal handlers alone: the embedding program owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class StartHandle:
    """What :meth:`HttpAgentServer.start` returns: await it to wait until the host serves.

    Called without ``await``, ``start()`` still starts serving in a background task, as
    the gRPC host's ``start()`` does; the port is already bound when it returns.
    """

    def __init__(self, server: HttpAgentServer) -> None:
        self._server = server

    def __await__(self) -> Generator[Any, None, None]:
        return self._server._wait_started().__await__()


class HttpAgentServer:
    """The host process: an :class:`HttpAgentService` served over HTTP and WebSockets on one port.

    Accepts the gRPC host's address style and a separate port::

        HttpAgentServer("localhost:50051")
        HttpAgentServer(address="127.0.0.1", port=9000)
        HttpAgentServer(port=0)  # an ephemeral port; read it back from .address

    Every connection it accepts is guarded (``connections.py``, docs/security.md): it must send
    a complete request within the service's ``hello_timeout``; a WebSocket closed with data
    its peer will not take is cut a second later; connections stop short of the process's
    ``RLIMIT_NOFILE``. Its API description (``/openapi.json``, ``/docs``) authenticates like
    the service's routes.

    Args:
        address: ``"host:port"``, ``"host"`` or ``"[v6]:port"``. Defaults to ``127.0.0.1:9000``.
        port: Overrides the port in ``address``. ``0`` binds an ephemeral port.
        max_message_size: Largest WebSocket message in bytes (32 MiB by default).
        ping_interval: Seconds between keepalive pings to each worker; ``None`` disables them.
        ping_timeout: Seconds to wait for a pong before dropping the worker.
        service: An existing service to serve; a new one by default.
        log_level: Level for uvicorn's own loggers; ``None`` leaves logging configuration alone.
        compression: Accept per-message deflate from a worker that offers it
            (``HttpWorkerAgentRuntime(compression=True)``). Off by default: each compressed
            connection keeps zlib state (hundreds of KiB) and spends CPU on every message;
            it pays on slow links with large text payloads.
        replicas: Let several workers serve one agent type (see ``HttpAgentService``); for
            the service this server makes. ``None`` (the default): off, or as ``service`` says.
        ssl: uvicorn's TLS settings, passed through to ``uvicorn.Config`` as they are:
            ``{"ssl_certfile": ..., "ssl_keyfile": ...}`` and the other ``ssl_*`` keys.
            With a certificate, :attr:`url` is ``https://...`` and workers connect over ``wss``.
        redis_url, cluster_name, cluster_secret, cluster_lease, cluster_link_url: Make this
            host one of a cluster on Redis (see ``HttpAgentService``; ``docs/cluster.md``); for
            the service this server makes. :meth:`start` joins the cluster before it serves.
            ``cluster_link_url="auto"`` (here or on the service) advertises the address this
            server binds for direct links, ``wss://`` with a certificate; the server opens its
            own links trusting ``ssl_ca_certs`` and, when it asks workers for certificates,
            presenting its own.
        state_dir, max_state_size: Where durable agents' states are kept and how large one
            may be (see ``HttpAgentService``); for the service this server makes.
        delivery, visibility_timeout, max_deliveries: At-least-once events in a cluster
            (see ``HttpAgentService``; ``docs/delivery.md``); for the service this server makes.
        a2a: Serve the agent types workers offer with ``register_a2a_skill`` as A2A agents
            (``HttpAgentService(a2a=True)``; docs/a2a.md). With ``service``, give it to the
            service instead.
        extra_grpc_config: Accepted so that code written for ``GrpcWorkerAgentRuntimeHost``
            runs unchanged; it has no meaning here and is ignored with a warning.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:9000",
        port: int | None = None,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
        service: HttpAgentService | None = None,
        log_level: str | None = None,
        compression: bool = False,
        replicas: bool | None = None,
        ssl: Mapping[str, Any] | None = None,
        redis_url: str | None = None,
        cluster_name: str = "default",
        cluster_secret: str | None = None,
        cluster_lease: float = 3.0,
        cluster_link_url: str | None = None,
        state_dir: str | None = None,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
        delivery: str = "at-most-once",
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        a2a: bool = False,
        extra_grpc_config: object = None,
    ) -> None:
        warn_grpc_config_ignored(extra_grpc_config)
        self._host, self._port = split_host_port(address, port)
        self._max_message_size = max_message_size
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._log_level = log_level
        self._compression = compression
        self._ssl = dict(ssl or {})
        if unknown := sorted(key for key in self._ssl if not key.startswith("ssl_")):
            raise TypeError(f"HttpAgentServer(ssl=...) takes uvicorn's ssl_* settings, not {unknown}.")
        if service is None:
            service = HttpAgentService(
                max_message_size=max_message_size,
                replicas=bool(replicas),
                redis_url=redis_url,
                cluster_name=cluster_name,
                cluster_secret=cluster_secret,
                cluster_lease=cluster_lease,
                cluster_link_url=cluster_link_url,
                state_dir=state_dir,
                max_state_size=max_state_size,
                delivery=delivery,
                visibility_timeout=visibility_timeout,
                max_deliveries=max_deliveries,
                a2a=a2a,
            )
        elif redis_url is not None or state_dir is not None or delivery != "at-most-once" or cluster_link_url:
            raise ValueError(
                "HttpAgentServer(redis_url=..., state_dir=..., delivery=... or cluster_link_url=...) with a "
                "service: give them to the service."
            )
        elif replicas is not None and replicas != service.replicas:
            raise ValueError(
                f"HttpAgentServer(replicas={replicas}) disagrees with the service it was given "
                f"(replicas={service.replicas}): set it on the HttpAgentService."
            )
        elif a2a and not service.a2a:
            raise ValueError("HttpAgentServer(a2a=True) with a service: give a2a=True to the service.")
        if service.cluster_link_url == "auto" and self._host in ("0.0.0.0", "::", ""):
            raise ValueError(
                f"cluster_link_url='auto' cannot tell other hosts where to reach a host bound to "
                f"{self._host!r}: give the address they reach it at (e.g. ws://$POD_IP:9000)."
            )
        self.service = service
        # The API description authenticates like the service's routes (docs/security.md).
        self.app = FastAPI(
            title="autogen-http-runtime host",
            openapi_url=None,
            docs_url=None,
            redoc_url=None,
            exception_handlers=self.service.exception_handlers,
        )
        self.app.include_router(self.service.router)
        self.app.include_router(description_router(self.app, self.service.authenticate))
        self._state = _State.NEW
        self._socket: socket.socket | None = None
        self._uvicorn: _EmbeddedUvicorn | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._stopped: asyncio.Event | None = None
        self._log = logging.getLogger(SERVER_LOGGER)

    # -- addresses --------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The ``host:port`` the server listens on; after start, with the real port."""
        return format_host_port(self._host, self._port)

    @property
    def url(self) -> str:
        """The HTTP base URL workers connect to, e.g. ``http://127.0.0.1:9000``."""
        host, port = split_host_port(self.address)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        scheme = "https" if self._ssl.get("ssl_certfile") or self._ssl.get("ssl_context_factory") else "http"
        return f"{scheme}://{format_host_port(host, port)}"

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> StartHandle:
        """Bind the port and start serving in a background task.

        Returns at once with the port bound (so a worker that connects a moment later
        succeeds). Await the result to wait until the server accepts connections.

        Raises:
            RuntimeError: The server was already started.
            OSError: The address cannot be bound, e.g. the port is taken.
        """
        if self._state is not _State.NEW:
            raise RuntimeError(f"HttpAgentServer cannot start: it is {self._state.value}.")
        loop = asyncio.get_running_loop()
        self._socket = _bind(self._host, self._port, unread_timeout=self.service.slow_consumer_timeout)
        self._port = self._socket.getsockname()[1]
        link = self.service.cluster_link_url
        if link is not None:
            self.service.advertise_cluster_link(
                self.url if link == "auto" else link, tls=client_tls(self._ssl)
            )
        if self.service.authenticator is None and not _is_loopback(self._host):
            self._log.warning(
                "Host listens on %s WITHOUT AUTHENTICATION: anyone who reaches this port can register "
                "agents, call every agent and publish. Give HttpAgentService an authenticator "
                "(e.g. BearerTokens) or bind 127.0.0.1; see docs/security.md.",
                self.address,
            )
        # Every connection is guarded (connections.py): a request within hello_timeout, no
        # close that waits for ever on a peer that reads nothing, a budget of descriptors.
        limits = ConnectionLimits(
            request_timeout=self.service.hello_timeout,
            close_timeout=CLOSE_GRACE,
            max_open=descriptor_budget(),
            logger=self._log,
        )
        config = uvicorn.Config(
            GuardedApp(self.app),
            lifespan="off",
            http=guarded_protocol(import_from_string(HTTP_PROTOCOLS["auto"]), limits),
            ws=direct_protocol() or "websockets-sansio",
            ws_max_size=self._max_message_size,
            ws_ping_interval=self._ping_interval,
            ws_ping_timeout=self._ping_timeout,
            ws_per_message_deflate=self._compression,
            log_config=None,
            log_level=self._log_level,
            access_log=False,
            timeout_graceful_shutdown=int(DEFAULT_GRACE),
            **self._ssl,
        )
        self._uvicorn = _EmbeddedUvicorn(config)
        self._started = loop.create_future()
        self._stopped = asyncio.Event()
        self._state = _State.STARTING
        self._serve_task = loop.create_task(self._serve(), name=f"autogen-http-host {self.address}")
        return StartHandle(self)

    async def _serve(self) -> None:
        assert self._uvicorn is not None and self._socket is not None and self._started is not None
        try:
            config = self._uvicorn.config
            if not config.loaded:
                config.load()
            self._uvicorn.lifespan = config.lifespan_class(config)
            await self.service.start()  # joins the cluster, if any, before serving
            await self._uvicorn.startup(sockets=[self._socket])
            self._state = _State.SERVING
            self._log.info("Host serving on %s", self.url)
            if not self._started.done():
                self._started.set_result(None)
            await self._uvicorn.main_loop()
            await self._uvicorn.shutdown(sockets=[self._socket])
        except BaseException as exc:
            self._socket.close()  # uvicorn's shutdown closes it, but it never ran
            if not isinstance(exc, asyncio.CancelledError):
                # Also seen by nobody when start() was not awaited: say it here.
                self._log.error("Host on %s failed: %r", self.address, exc)
            if not self._started.done():
                self._started.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                self._started.exception()  # retrieved: no "never retrieved" warning if nobody awaits
                if isinstance(exc, Exception):
                    # start()'s awaiter gets it (e.g. a missing certificate file); raised here
                    # too, nobody would retrieve it from this task.
                    return
            raise
        finally:
            self._state = _State.STOPPED
            assert self._stopped is not None
            self._stopped.set()

    async def _wait_started(self) -> None:
        if self._started is None:
            raise RuntimeError("HttpAgentServer was not started.")
        await asyncio.shield(self._started)

    async def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop serving: drain the service for up to ``grace`` seconds, close workers, close the port.

        Calls still in flight after ``grace`` seconds fail at their callers with
        ``HostShuttingDownError``. A second call, or a call before :meth:`start`, does
        nothing. If cancelled, the shutdown still runs to completion in the background.
        """
        if self._state in (_State.NEW, _State.STOPPED):
            return
        if self._state is _State.STOPPING:
            assert self._stopped is not None
            await self._stopped.wait()
            return
        self._state = _State.STOPPING
        await asyncio.shield(self._shutdown(grace))

    async def _shutdown(self, grace: float) -> None:
        assert self._uvicorn is not None and self._serve_task is not None
        with contextlib.suppress(Exception):
            await self._wait_started()
        await self.service.close(grace)
        self._uvicorn.should_exit = True
        try:
            await self._serve_task
        except Exception:
            self._log.exception("Host stopped with an error")
        self._log.info("Host on %s stopped", self.address)

    async def stop_when_signal(
        self,
        grace: float = DEFAULT_GRACE,
        signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        """Serve until one of ``signals`` arrives, then :meth:`stop`. The handlers are removed on return."""
        if self._state is _State.NEW:
            await self.start()
        with signals_received(signals) as received:
            await received.wait()
        self._log.info("Signal received; stopping the host")
        await self.stop(grace)

    async def __aenter__(self) -> HttpAgentServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _bind(host: str, port: int, *, unread_timeout: float) -> socket.socket:
    """Bind and listen ourselves, so a taken port is an OSError here rather than uvicorn's sys.exit.

    Every connection accepted inherits ``TCP_USER_TIMEOUT`` (Linux): a peer that leaves what
    the host wrote unacknowledged (it stopped reading, or vanished) for ``unread_timeout``
    seconds has its socket aborted by the kernel, on either WebSocket path, so what the
    host had buffered for it is freed rather than waiting for a flush that never comes.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT") and family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1000, int(unread_timeout * 1000))
            )
        sock.bind(sockaddr)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"Cannot listen on {format_host_port(host, port)}: {exc.strerror}") from exc
    return sock
