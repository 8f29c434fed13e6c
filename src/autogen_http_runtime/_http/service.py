"""HttpAgentService: the host's routing core behind a FastAPI router."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import HTTPConnection

from .._constants import (
    CLUSTER_LINK_PATH,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_MAX_CALLS_IN_FLIGHT,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_SUBSCRIPTIONS,
    DEFAULT_SLOW_CONSUMER_TIMEOUT,
    HOST_LOGGER,
    MOUNTED_MAX_MESSAGE_SIZE,
    WORKER_WS_PATH,
)
from .._host.core import RoutingCore
from .._host.deliveries import AT_MOST_ONCE, check_delivery
from .._host.directory import LocalDirectory
from .._host.security import AccessPolicy, Authenticator, Identity, RateLimit, RateLimiter
from .._host.session import CLOSE_GOING_AWAY
from .._host.state import DEFAULT_MAX_STATE_SIZE, StateStore
from .._host.state_files import FileStateStore
from .._ops.probes import operations_router
from .admission import DEFAULT_PUBLIC_ROUTES, Admission
from .api import api_router
from .cluster_links import LinkDialer, LinkEndpoint, link_url
from .dead_letters import dead_letters_router
from .extras import a2a_endpoints, cluster_node
from .problems import Problem
from .responses import AsciiJSONResponse
from .worker_socket import WorkerEndpoint

__all__ = ["HttpAgentService"]


class HttpAgentService:
    """The host side of the runtime, mountable in any FastAPI app.

    ``service.router`` carries the worker WebSocket (``/v1/worker``) and the plain-HTTP
    API (``POST /v1/events``, ``POST /v1/rpc``, ``GET /v1/agents``, ``/v1/subscriptions``,
    ``/v1/workers``; see ``docs/protocol.md``), and the operator's endpoints (``/healthz``,
    ``/readyz``, ``/metrics``, ``/dashboard``; see ``docs/operations.md``). Mount it where you like::

        app = FastAPI()
        service = HttpAgentService()
        app.include_router(service.router, prefix="/agents")
        # workers: HttpWorkerAgentRuntime("http://host:port/agents")

    The service needs no start-up hook: its state is created with it and bound to the
    event loop on the first connection. To shut it down gracefully, await
    :meth:`close` from your app's lifespan (``HttpAgentServer`` does this for you).

    Args:
        max_message_size: Largest frame in bytes the host reads or forwards; advertised to
            workers in ``hello``. 16 MiB by default, uvicorn's default ``ws_max_size``; to
            raise it, give uvicorn a ``ws_max_size`` at least as large (``HttpAgentServer``
            uses 32 MiB for both).
        max_queued_bytes: Bytes the host may queue for one worker. A worker more than 8 MiB
            behind (or half this, if less) makes the host stop reading from the workers
            sending to it until it catches up: back-pressure, so a fast publisher waits for
            its slowest subscriber. A worker that has not caught up within
            ``slow_consumer_timeout`` seconds, or falls ``max_queued_bytes`` behind, is
            disconnected (close code 1008) and what was queued for it is dropped, so the
            host's memory stays bounded.
        slow_consumer_timeout: Seconds a sender is held back for a worker that is behind.
        max_calls_in_flight: Calls one worker may have in flight through the host; more
            fail at once with ``TooManyCallsError``.
        hello_timeout: Seconds a new connection has to send ``hello`` before it is closed
            (code 1008). Under ``HttpAgentServer`` it also bounds how long any connection
            may take to send a complete request (or WebSocket handshake), and each part of
            a request body, before it is cut.
        authenticator: Checks every worker handshake and HTTP request (but ``public_routes``):
            an async callable taking the headers (lower-case names) and returning an
            :class:`Identity` (or its name), or ``None`` to refuse with HTTP 401. Use
            :class:`BearerTokens` for static API keys. ``None`` (the default): no
            authentication, every caller is ``anonymous``. See ``docs/security.md``.
        access_policy: What each identity may register, call, publish and subscribe to;
            with a policy the host also verifies senders. An identity with no rule is
            refused at the handshake (HTTP 403). ``None``: everyone may do everything.
        rate_limit: Calls, publishes and new subscriptions per second per identity (a token
            bucket); more fail with ``TooManyCallsError`` (HTTP 429 on the HTTP API).
            ``None``: no limit.
        max_subscriptions: Subscriptions the workers of one identity may hold at once (10,000
            by default); more fail with ``TooManyCallsError``. ``None``: no limit.
        max_connections: Worker WebSockets the host keeps open at once; more are refused
            (HTTP 503) and the worker retries later. ``None``: no limit.
        max_connections_per_identity: Worker WebSockets one identity keeps open at once, so
            that one identity cannot take them all; more are refused (HTTP 429) and the
            worker retries later. ``None`` (the default): no limit.
        public_routes: Names of the routes that need no authentication; the probes
            (``healthz``, ``readyz``) by default. Add ``metrics`` for an unauthenticated
            Prometheus scrape.
        replicas: Let several workers serve one agent type. Each agent id is then placed
            on one of them (the same one while they stay), a worker that leaves hands its
            ids to the others, and an event reaches each subscribed agent id once. Off (the
            default), a second worker registering a type already served is refused
            (``AgentTypeConflictError``), as on the gRPC runtime. See ``docs/operations.md``.
        redis_url: Make this host one of a cluster of hosts that act as one runtime, through
            this Redis (7 or later, or Valkey): ``redis://[user:password@]host:port/db``,
            ``rediss://`` for TLS, ``unix://``. A worker on any host calls any agent and
            publishes to any topic; calls between workers of one host stay on it. Needs the
            ``[cluster]`` extra, ``cluster_secret``, and :meth:`start` (``HttpAgentServer``
            calls it). ``None`` (the default): one host, in memory. See ``docs/cluster.md``.
        cluster_name: The cluster's name: several clusters may share one Redis.
        cluster_secret: The secret the hosts of the cluster sign what they send each other
            with (whoever can write to Redis but lacks it cannot inject calls). Required
            with ``redis_url``; every host of the cluster must have the same.
        delivery: ``"at-most-once"`` (the default: each event copy is sent once and
            forgotten) or ``"at-least-once"`` (in a cluster: each copy is kept in a Redis
            stream until its handler returned, delivered again to its agent's worker of the
            moment if that did not happen within ``visibility_timeout`` seconds, and kept as a
            dead letter after ``max_deliveries`` deliveries). See ``docs/delivery.md``.
        visibility_timeout: At-least-once: seconds before an unacknowledged copy goes again.
        max_deliveries: At-least-once: deliveries of a copy before it is a dead letter.
        cluster_lease: Seconds a host that stopped renewing its lease (it died, or lost Redis)
            is still taken as alive; calls to its workers fail with a typed error when it
            ends, and its workers' entries go.
        cluster_link_url: Where the other hosts of the cluster reach this one for a direct
            link (``ws://10.0.0.5:9000``, ``https://host-1.internal:9000``, with the prefix the
            service is mounted under), or ``"auto"`` under ``HttpAgentServer``: the address it
            binds (not ``0.0.0.0``). Each host then sends what it has for another over a
            WebSocket straight to it (:data:`CLUSTER_LINK_PATH`, signed like everything
            hosts exchange) instead of through Redis: lower latency, less load on Redis.
            ``None`` (the default): Redis carries everything. See ``docs/cluster.md``.
        state_dir: Keep durable agents' states (workers with ``persist_agent_state=True``)
            in this directory (a journal; one host per directory), so they survive a
            restart of the host. Without it a host alone keeps them in memory (they survive a worker, not
            the host); with ``redis_url``, in Redis, and ``state_dir`` must be ``None``.
            See ``docs/durable-agents.md``.
        max_state_size: The largest state the host stores for one agent id, in bytes of
            JSON (1 MiB by default); a larger save is refused (-32008), which its worker
            logs and counts; the agent's reply is sent all the same.
        a2a: Serve every agent type a worker offers with ``register_a2a_skill`` as an A2A
            agent: ``POST /a2a/{type}`` (A2A JSON-RPC), its Agent Card at
            ``/a2a/{type}/.well-known/agent-card.json``, and a listing card at
            ``/.well-known/agent-card.json`` (cards need no authentication). Needs the
            ``[a2a]`` extra; see ``docs/a2a.md``.
        logger: Logger for connection events and errors; ``autogen_http_runtime.host`` by default.
    """

    def __init__(
        self,
        *,
        max_message_size: int = MOUNTED_MAX_MESSAGE_SIZE,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        max_calls_in_flight: int = DEFAULT_MAX_CALLS_IN_FLIGHT,
        slow_consumer_timeout: float = DEFAULT_SLOW_CONSUMER_TIMEOUT,
        hello_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        authenticator: Authenticator | None = None,
        access_policy: AccessPolicy | None = None,
        rate_limit: RateLimit | None = None,
        max_subscriptions: int | None = DEFAULT_MAX_SUBSCRIPTIONS,
        max_connections: int | None = None,
        max_connections_per_identity: int | None = None,
        public_routes: Iterable[str] = DEFAULT_PUBLIC_ROUTES,
        replicas: bool = False,
        redis_url: str | None = None,
        cluster_name: str = "default",
        cluster_secret: str | None = None,
        cluster_lease: float = 3.0,
        cluster_link_url: str | None = None,
        state_dir: str | None = None,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
        delivery: str = AT_MOST_ONCE,
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        a2a: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        self._log = logger or logging.getLogger(HOST_LOGGER)
        if state_dir is not None and redis_url is not None:
            raise ValueError(
                "HttpAgentService: state_dir and redis_url exclude each other (states go to Redis)."
            )
        check_delivery(delivery, visibility_timeout, max_deliveries)
        if delivery != AT_MOST_ONCE and redis_url is None:
            raise ValueError(
                f"delivery={delivery!r} needs a cluster (redis_url, serve --redis-url): the copies are kept "
                "in a Redis stream."
            )
        self.delivery = delivery
        #: Seconds a sender is held for a worker that is behind; also how long a peer may leave
        #: what the host wrote unread before ``HttpAgentServer``'s kernel drops it.
        self.slow_consumer_timeout = slow_consumer_timeout
        self.replicas = replicas
        #: Seconds a new connection has to say hello (and, under ``HttpAgentServer``, to send
        #: a complete request).
        self.hello_timeout = hello_timeout
        self.cluster = (
            None
            if redis_url is None
            else cluster_node(
                redis_url,
                cluster_name,
                cluster_secret,
                cluster_lease,
                (delivery, visibility_timeout, max_deliveries),
                replicas=replicas,
                max_message_size=max_message_size,
                access=access_policy,
                logger=self._log,
            )
        )
        store: StateStore | None = None
        if self.cluster is not None:
            store = self.cluster.state_store
        elif state_dir is not None:
            store = FileStateStore(state_dir)
        self.core = RoutingCore(
            directory=LocalDirectory(replicas=replicas) if self.cluster is None else self.cluster.directory,
            state_store=store,
            max_state_size=max_state_size,
            max_message_size=max_message_size,
            max_queued_bytes=max_queued_bytes,
            max_calls_in_flight=max_calls_in_flight,
            access=access_policy,
            rate_limiter=None if rate_limit is None else RateLimiter(rate_limit),
            max_subscriptions=max_subscriptions,
            logger=self._log,
        )
        if self.cluster is not None:
            self.cluster.bind(self.core)
        #: ``cluster_link_url`` as given (``"auto"``: ``HttpAgentServer`` fills it in).
        self.cluster_link_url = cluster_link_url
        self._links: LinkEndpoint | None = None
        if cluster_link_url is not None:
            if self.cluster is None:
                raise ValueError(
                    "cluster_link_url (serve --cluster-link-url) needs a cluster (redis_url, serve "
                    "--redis-url): links join the hosts of one."
                )
            if cluster_link_url != "auto":
                link_url(cluster_link_url)  # a ValueError now rather than at start
            self._links = LinkEndpoint(self.cluster, hello_timeout=hello_timeout, logger=self._log)
        self._joining: asyncio.Task[None] | None = None
        self._a2a = a2a_endpoints(self.core, authenticator, slow_consumer_timeout, self._log) if a2a else None
        if self._a2a is not None:
            public_routes = [*public_routes, *self._a2a.public_routes]
        self._admission = Admission(authenticator, access_policy, public_routes, self._log)
        self._workers = WorkerEndpoint(
            self.core,
            self._admission,
            max_connections=max_connections,
            max_connections_per_identity=max_connections_per_identity,
            hello_timeout=hello_timeout,
            slow_consumer_timeout=slow_consumer_timeout,
            logger=self._log,
        )
        # Every HTTP route (those included below too) authenticates through this dependency,
        # and answers in ASCII JSON (whatever strings peers sent, the answer can be written).
        # In a cluster, the first request joins it if the app did not call start() itself.
        dependencies = [Depends(self._admission.authenticate_http)]
        if self.cluster is not None:
            dependencies.insert(0, Depends(self.start))
        self.router = APIRouter(
            dependencies=dependencies,
            default_response_class=AsciiJSONResponse,
        )
        self.router.add_api_websocket_route(WORKER_WS_PATH, self._workers, name="worker")
        if self._links is not None:
            self.router.add_api_websocket_route(CLUSTER_LINK_PATH, self._links, name="cluster-link")
        self.router.include_router(operations_router(self.core))  # probes, /metrics, /dashboard
        # POST /v1/events, POST /v1/rpc, GET /v1/agents, /v1/subscriptions, /v1/workers
        self.router.include_router(api_router(self.core, slow_consumer_timeout=slow_consumer_timeout))
        cluster = self.cluster
        dead = dead_letters_router(lambda: None if cluster is None else cluster.deliveries, delivery)
        self.router.include_router(dead)
        if self._a2a is not None:
            self.router.include_router(self._a2a.router())

    @property
    def a2a(self) -> bool:
        """Whether the service serves its agent types over A2A."""
        return self._a2a is not None

    @property
    def authenticator(self) -> Authenticator | None:
        return self._admission.authenticator

    @property
    def max_connections(self) -> int | None:
        return self._workers.max_connections

    @property
    def max_connections_per_identity(self) -> int | None:
        return self._workers.max_connections_per_identity

    @property
    def authenticate(self) -> Callable[[HTTPConnection], Awaitable[None]]:
        """The FastAPI dependency every route of :attr:`router` authenticates through, for
        routes of your own app to do the same (``dependencies=[Depends(service.authenticate)]``)."""
        return self._admission.authenticate_http

    def revoke(self, identity: str | Identity, reason: str = "credentials revoked") -> int:
        """Close every worker connection of ``identity`` now, with code 1008 and ``reason``.

        Each is forgotten at once: its agent types and subscriptions go, the calls it was
        serving fail at their callers with ``WorkerDisconnectedError``. Whether it may come
        back is its authenticator's business: take its credentials out first (e.g.
        :meth:`BearerTokens.remove`), or a worker will reconnect with them. Call it on the
        host's event loop (from another thread: ``loop.call_soon_threadsafe``).

        Returns:
            How many connections were closed.
        """
        name = identity.name if isinstance(identity, Identity) else identity
        sessions = self.core.sessions_of(name)
        for session in sessions:
            self.core.cut_off(session, reason)
        self._log.warning("Revoked identity %r: closed %d connection(s) (%s)", name, len(sessions), reason)
        return len(sessions)

    @property
    def exception_handlers(self) -> dict[Any, Any]:
        """Handlers for ``FastAPI(exception_handlers=...)`` that render the service's refusals
        (HTTP 401, 403) as ``application/problem+json`` when it is mounted in your own app."""
        return {Problem: Problem.handler}

    def advertise_cluster_link(self, address: str, *, tls: ssl.SSLContext | None = None) -> None:
        """Say where the other hosts reach this one for a direct link (before :meth:`start`);
        ``tls``: how this host opens its own links to ``wss://`` hosts (the system's CAs by
        default). ``HttpAgentServer`` calls it with its bound address for ``"auto"``.

        Raises:
            ValueError: The address cannot be parsed, or the service takes no links.
        """
        if self.cluster is None or self._links is None:
            raise ValueError("This service takes no direct links: give it redis_url and cluster_link_url.")
        dial = LinkDialer(tls=tls, lease=self.cluster.config.lease, logger=self._log)
        self.cluster.offer_links(link_url(address), dial)

    async def start(self) -> None:
        """Join the cluster (with ``redis_url``); nothing to do for a host alone. Safe to call
        again, and from several tasks at once.

        ``HttpAgentServer`` calls it before it serves. Mounted in an app of your own, call it
        from the app's lifespan; otherwise the first request to the service does.

        Raises:
            ClusterJoinError: Redis cannot be reached, or a setting that must agree across the
                cluster's hosts differs from theirs (the message names it).
        """
        if self.cluster is None or self.cluster.started:
            return
        if self._links is not None and self.cluster.dial is None:
            if self.cluster_link_url == "auto":
                raise ValueError(
                    "cluster_link_url='auto' is for HttpAgentServer, which knows the address it binds: "
                    "give this service the URL other hosts reach it at."
                )
            assert self.cluster_link_url is not None
            self.advertise_cluster_link(self.cluster_link_url)
        if self._joining is None or (self._joining.done() and self._joining.exception() is not None):
            self._joining = asyncio.get_running_loop().create_task(self.cluster.start())
        await asyncio.shield(self._joining)

    async def close(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop taking calls, give in-flight calls ``grace`` seconds, then close every worker's WebSocket.

        Calls still in flight after the grace period fail at their callers with
        ``HostShuttingDownError``; workers see close code 1001. Safe to call twice.
        Cancelling it stops the wait early; the sessions are still closed.
        """
        try:
            await self.core.drain(grace)
        finally:
            for session in list(self.core.sessions.values()):
                session.close(CLOSE_GOING_AWAY, "host shutting down")
            if self._a2a is not None:
                await self._a2a.close()  # the A2A tasks still open end with the calls they made
            if self._workers.connections:
                await asyncio.wait(list(self._workers.connections), timeout=max(grace, 1.0))
            await self.core.state.close()
            if self.cluster is not None:
                await self.cluster.stop()
