"""HttpAgentService: the host's routing core behind a FastAPI router."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect, WebSocketState

from .._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_MAX_CALLS_IN_FLIGHT,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_SLOW_CONSUMER_TIMEOUT,
    HOST_LOGGER,
    MOUNTED_MAX_MESSAGE_SIZE,
    WORKER_WS_PATH,
)
from .._host.core import MessageRouter
from .._host.security import ANONYMOUS, AccessPolicy, Authenticator, Identity, RateLimit, RateLimiter
from .._host.session import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    WorkerSession,
)
from .._ops.probes import operations_router
from .._protocol.batching import joined
from .._transport.uvicorn_protocol import DIRECT_FRAMES, Attach, Receive
from .api import IDENTITY_STATE, add_http_api, problem_response

__all__ = ["AuthProblem", "HttpAgentService"]

#: Routes any caller may use when the service authenticates: the probes.
DEFAULT_PUBLIC_ROUTES = ("healthz", "readyz")


class AuthProblem(HTTPException):
    """An HTTP request the service refused (401, 403 or 503), carrying an RFC 9457 problem.

    ``HttpAgentServer`` renders it as ``application/problem+json``; an app that mounts the
    service does the same with ``FastAPI(exception_handlers=service.exception_handlers)``
    (FastAPI's default handler would wrap the problem in ``{"detail": ...}``).
    """

    def __init__(self, status: int, kind: str, title: str, detail: str) -> None:
        headers = {"WWW-Authenticate": 'Bearer realm="autogen-http-runtime"'} if status == 401 else None
        super().__init__(status, detail, headers=headers)
        self.kind, self.title = kind, title

    def response(self) -> JSONResponse:
        response = problem_response(self.status_code, self.kind, self.title, str(self.detail))
        response.headers.update(self.headers or {})
        return response

    @staticmethod
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        """An exception handler for FastAPI apps: the problem as ``application/problem+json``."""
        assert isinstance(exc, AuthProblem)
        return exc.response()


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
            (code 1008).
        authenticator: Checks every worker handshake and HTTP request (but ``public_routes``):
            an async callable taking the headers (lower-case names) and returning an
            :class:`Identity` (or its name), or ``None`` to refuse with HTTP 401. Use
            :class:`BearerTokens` for static API keys. ``None`` (the default): no
            authentication, every caller is ``anonymous``. See ``docs/security.md``.
        access_policy: What each identity may register, call, publish and subscribe to;
            with a policy the host also verifies senders. An identity with no rule is
            refused at the handshake (HTTP 403). ``None``: everyone may do everything.
        rate_limit: Calls and publishes per second per identity (a token bucket); more
            fail with ``TooManyCallsError`` (HTTP 429 on the HTTP API). ``None``: no limit.
        max_connections: Worker WebSockets the host keeps open at once; more are refused
            (HTTP 503) and the worker retries later. ``None``: no limit.
        public_routes: Names of the routes that need no authentication; the probes
            (``healthz``, ``readyz``) by default. Add ``metrics`` for an unauthenticated
            Prometheus scrape.
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
        max_connections: int | None = None,
        public_routes: Iterable[str] = DEFAULT_PUBLIC_ROUTES,
        logger: logging.Logger | None = None,
    ) -> None:
        self._log = logger or logging.getLogger(HOST_LOGGER)
        self._hello_timeout = hello_timeout
        self._slow_consumer_timeout = slow_consumer_timeout
        self.authenticator = authenticator
        self.max_connections = max_connections
        self._public_routes = frozenset(public_routes)
        self._open_workers = 0
        self.core = MessageRouter(
            max_message_size=max_message_size,
            max_queued_bytes=max_queued_bytes,
            max_calls_in_flight=max_calls_in_flight,
            access=access_policy,
            rate_limiter=None if rate_limit is None else RateLimiter(rate_limit),
            logger=self._log,
        )
        self._connections: set[asyncio.Task[Any]] = set()
        # Every HTTP route (those included below too) authenticates through this dependency.
        self.router = APIRouter(dependencies=[Depends(self._authenticate_http)])
        self.router.add_api_websocket_route(WORKER_WS_PATH, self._worker_endpoint, name="worker")
        self.router.include_router(operations_router(self.core))  # probes, /metrics, /dashboard
        add_http_api(self)  # POST /v1/events, POST /v1/rpc, GET /v1/agents, /v1/subscriptions, /v1/workers

    # -- authentication and admission --------------------------------------------------

    @property
    def exception_handlers(self) -> dict[Any, Any]:
        """Handlers for ``FastAPI(exception_handlers=...)`` that render the service's refusals
        (HTTP 401, 403) as ``application/problem+json`` when it is mounted in your own app."""
        return {AuthProblem: AuthProblem.handler}

    async def _identify(self, headers: dict[str, str]) -> Identity | None:
        if self.authenticator is None:
            return ANONYMOUS
        try:
            found = await self.authenticator(headers)
        except Exception:
            self._log.exception("The authenticator failed; refusing the caller")
            return None
        return Identity(found) if isinstance(found, str) else found

    async def _admission(self, connection: HTTPConnection) -> Identity | AuthProblem:
        """The caller's identity, or why it is refused."""
        identity = await self._identify(dict(connection.headers.items()))
        if identity is None:
            return AuthProblem(
                401,
                "unauthenticated",
                "Unauthenticated",
                "The host requires authentication: send valid credentials "
                "(e.g. 'Authorization: Bearer <token>').",
            )
        access = self.core.access
        if access is not None and access.rule_for(identity) is None:
            return AuthProblem(
                403, "forbidden", "Forbidden", f"Identity '{identity.name}' has no access to this host."
            )
        return identity

    async def _authenticate_http(self, connection: HTTPConnection) -> None:
        if connection.scope["type"] != "http":
            return  # the worker WebSocket is admitted by its endpoint, which can answer a refusal
        route = connection.scope.get("route")
        if self.authenticator is None or getattr(route, "name", None) in self._public_routes:
            return
        admitted = await self._admission(connection)
        if isinstance(admitted, AuthProblem):
            raise admitted
        setattr(connection.state, IDENTITY_STATE, admitted)

    async def _worker_endpoint(self, websocket: WebSocket) -> None:
        if self.max_connections is not None and self._open_workers >= self.max_connections:
            self._log.warning(
                "Refused a worker: already %d connections (max_connections)", self._open_workers
            )
            await _refuse(
                websocket,
                AuthProblem(
                    503,
                    "too-many-connections",
                    "Too many connections",
                    f"The host already serves {self.max_connections} worker connections (max_connections).",
                ),
            )
            return
        admitted = await self._admission(websocket)
        if isinstance(admitted, AuthProblem):
            self._log.warning("Refused a worker from %s: %s", _peer(websocket), admitted.detail)
            await _refuse(websocket, admitted)
            return
        self._open_workers += 1
        try:
            await self._serve_worker(websocket, admitted)
        finally:
            self._open_workers -= 1

    async def _serve_worker(self, websocket: WebSocket, identity: Identity = ANONYMOUS) -> None:
        await websocket.accept()
        if not self.core.accepting:
            # Accept first: a close before accepting reaches the client as a bare HTTP 403.
            await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason="host shutting down")
            return
        session = self.core.open_session(identity=identity)
        # A peer that never says hello holds nothing and is not kept.
        hello_timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            self._hello_timeout, _close_if_silent, session
        )

        def receive(text: str | bytes | None) -> WorkerSession | None:
            nonlocal hello_timer
            if text is None:
                self.core.handle_binary(session)
                return None
            behind = self.core.handle_text(session, text)
            if hello_timer is not None and session.greeted:
                hello_timer.cancel()  # frees what it holds now rather than when it was due
                hello_timer = None
            return behind

        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)

        # Dropping a worker that fell behind must not wait for it to read: stop our reader.
        def drop(_: WorkerSession) -> None:
            task.cancel()

        session.on_overflow = drop
        # Under HttpAgentServer the WebSocket protocol routes frames itself (_host_websocket.py).
        direct: Attach | None = websocket.scope.get("extensions", {}).get(DIRECT_FRAMES, {}).get("attach")
        ended: asyncio.Future[str] | None = None
        writer: asyncio.Task[None] | None = None
        reason = "connection closed"
        try:
            if direct is not None:
                ended = direct(session, receive, self._wait_to_catch_up)
                reason = await asyncio.shield(ended)
            else:
                writer = asyncio.create_task(self._write(websocket, session))
                reason = await self._read(websocket, receive)
        except (WebSocketDisconnect, RuntimeError) as exc:
            reason = f"connection lost: {exc!r}"
        except asyncio.CancelledError:
            if not session.overflowed:
                raise
            # We cancelled ourselves (see on_overflow); returning lets uvicorn drop the socket.
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:
                uncancel()
            reason = session.close_reason
            self._log.warning("Worker %s dropped: %s", session.worker_id, reason)
        finally:
            if hello_timer is not None:
                hello_timer.cancel()
            self.core.close_session(session, reason)
            session.outbox.put_nowait(None)
            # Let the close frame (and what precedes it) go out, for a second at most.
            flushing = writer or ended
            if flushing is not None:
                _, still_writing = await asyncio.wait({flushing}, timeout=1.0)
                if writer is not None and still_writing:
                    writer.cancel()
            self._connections.discard(task)

    async def _read(self, websocket: WebSocket, receive: Receive) -> str:
        """Route the messages of an ASGI WebSocket until it ends; return why it ended."""
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return f"closed with code {message.get('code', 1000)}"
            if (behind := receive(message.get("text"))) is not None:
                await self._wait_to_catch_up(behind)

    async def _wait_to_catch_up(self, behind: WorkerSession) -> None:
        """Back-pressure: read no more from a sender while a worker it sends to is behind."""
        self.core.stats.senders_held += 1
        try:
            await asyncio.wait_for(behind.drained.wait(), self._slow_consumer_timeout)
        except asyncio.TimeoutError:
            behind.drop_as_slow(f"did not catch up within {self._slow_consumer_timeout} s")

    async def _write(self, websocket: WebSocket, session: WorkerSession) -> None:
        outbox = session.outbox
        try:
            while True:
                while outbox.empty():
                    await outbox.wait()
                if (batch := outbox.take_batch(session.max_message_size, session.batching)) is None:
                    break
                await websocket.send_text(joined(batch).decode("ascii"))
                for data in batch:
                    session.sent(data)
            if websocket.client_state is WebSocketState.CONNECTED:
                await websocket.close(code=session.close_code, reason=session.close_reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The peer is gone; the reader notices and cleans up.
            pass
        except Exception:
            self._log.exception("Writing to worker %s failed; closing its connection", session.worker_id)
            with contextlib.suppress(Exception):
                await websocket.close(code=CLOSE_INTERNAL_ERROR, reason="host write error")

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
            if self._connections:
                await asyncio.wait(list(self._connections), timeout=max(grace, 1.0))


async def _refuse(websocket: WebSocket, problem: AuthProblem) -> None:
    """Refuse a WebSocket handshake with an HTTP status and a problem body where the server
    can send one (uvicorn can), else by closing it (1008: the client sees HTTP 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(problem.response())
    else:
        await websocket.close(code=CLOSE_POLICY_VIOLATION, reason=str(problem.detail)[:120])


def _peer(connection: HTTPConnection) -> str:
    client = connection.client
    return f"{client.host}:{client.port}" if client is not None else "an unknown peer"


def _close_if_silent(session: WorkerSession) -> None:
    if not session.greeted:
        session.close(CLOSE_POLICY_VIOLATION, "no hello received in time")
