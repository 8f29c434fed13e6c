"""The plain-HTTP API of a host: publish CloudEvents, call agents with JSON-RPC, look inside.

Routes, relative to where the service's router is mounted:

* ``POST /v1/events``: CloudEvents 1.0 in any content mode of the HTTP binding.
* ``POST /v1/rpc``: a JSON-RPC 2.0 request or batch calling agents (``send``,
  ``agent_metadata``, ``agent_save_state``, ``agent_load_state``).
* ``GET /v1/agents``, ``GET /v1/subscriptions``, ``GET /v1/workers``.

Each POST is a caller inside the host process: it gets a local session of the routing
core (no ``hello``, never listed as a worker), feeds it the same frames a worker would
send over its WebSocket, reads the answers from the session's outbox and closes the
session when the request ends, however it ends. Closing it cancels whatever it still
had in flight, so a caller that hangs up leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, Literal

from autogen_core import TypePrefixSubscription, TypeSubscription
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from .._constants import AGENTS_PATH, PROTOCOL_VERSION
from .._host.core import MessageRouter
from .._host.security import ANONYMOUS, Identity
from .._host.session import WorkerSession
from .._protocol import json_codec as _json
from .._protocol import wire
from .._protocol.wire import ErrorCode, FrameError, JsonObject, Method
from . import models
from .cloudevents import EventProblem, events_from_http

if TYPE_CHECKING:
    from .service import HttpAgentService

EVENTS_PATH: Final = "/v1/events"
RPC_PATH: Final = "/v1/rpc"
SUBSCRIPTIONS_PATH: Final = "/v1/subscriptions"
WORKERS_PATH: Final = "/v1/workers"
DEADLINE_HEADER: Final = models.DEADLINE_HEADER
PROBLEM_CONTENT_TYPE: Final = models.PROBLEM_CONTENT_TYPE
PROBLEM_TYPE_PREFIX: Final = "urn:autogen-http:problem:"
#: The name the routing core's local sessions of this module carry.
LOCAL_NAME: Final = "http"
#: Where the service's authentication dependency leaves the caller's identity on ``request.state``.
IDENTITY_STATE: Final = "autogen_http_identity"


class _Problem(Exception):
    def __init__(self, status: int, kind: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail


def problem_response(
    status: int, kind: str, title: str, detail: str, errors: Sequence[JsonObject] = ()
) -> JSONResponse:
    """An RFC 9457 ``application/problem+json`` response."""
    body: JsonObject = {
        "type": PROBLEM_TYPE_PREFIX + kind,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_CONTENT_TYPE)


def add_http_api(service: HttpAgentService) -> None:
    """Add the HTTP API's routes to ``service.router``."""
    api = _HttpApi(service)
    router = service.router
    router.add_api_route(
        EVENTS_PATH,
        api.publish,
        methods=["POST"],
        name="publish_events",
        summary="Publish CloudEvents to their topics",
        description=models.EVENTS_DESCRIPTION,
        status_code=202,
        response_model=models.EventsAccepted,
        response_description="Published, in order: the events' ids and the copies delivered.",
        responses={
            400: models.problem_doc("An event is invalid; for a batch, none was published."),
            413: models.problem_doc("The body, or an event as a frame, exceeds the host's size limit."),
            415: models.problem_doc("An event format other than JSON (`application/cloudevents+<format>`)."),
            503: models.problem_doc("The host is shutting down."),
        },
        openapi_extra={
            "parameters": models.CE_HEADER_PARAMETERS,
            "requestBody": models.events_request_body(),
        },
        tags=["agents over HTTP"],
    )
    router.add_api_route(
        RPC_PATH,
        api.call,
        methods=["POST"],
        name="call_agents",
        summary="Call agents with JSON-RPC 2.0",
        description=models.RPC_DESCRIPTION,
        responses={
            200: models.rpc_response_doc(),
            204: {"description": "The request held only notifications: nothing to answer."},
            400: models.problem_doc(f"The {DEADLINE_HEADER} header is not a number of seconds >= 0."),
            413: models.problem_doc("The body exceeds the host's size limit."),
        },
        openapi_extra={"parameters": [models.DEADLINE_PARAMETER], "requestBody": models.rpc_request_body()},
        tags=["agents over HTTP"],
    )
    router.add_api_route(
        AGENTS_PATH,
        api.list_agents,
        methods=["GET"],
        name="list_agents",
        summary="Agent types registered with this host, and the worker serving each",
        response_model=models.AgentsListing,
        tags=["introspection"],
    )
    router.add_api_route(
        SUBSCRIPTIONS_PATH,
        api.list_subscriptions,
        methods=["GET"],
        name="list_subscriptions",
        summary="Subscriptions stored on this host",
        response_model=models.SubscriptionsListing,
        tags=["introspection"],
    )
    router.add_api_route(
        WORKERS_PATH,
        api.list_workers,
        methods=["GET"],
        name="list_workers",
        summary="Connected workers: since when, what they serve, messages in and out",
        response_model=models.WorkersListing,
        tags=["introspection"],
    )


@dataclass
class _Call:
    """One call of a ``POST /v1/rpc`` request, forwarded through the core and not answered yet."""

    client_id: wire.RequestId | None
    #: Seconds allowed, and when they run out on the event loop's clock.
    allowed: float | None
    deadline: float | None


class _HttpApi:
    def __init__(self, service: HttpAgentService) -> None:
        self._service = service
        self._core: MessageRouter = service.core

    # -- POST /v1/events --------------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        core = self._core
        try:
            if not core.accepting:
                raise _Problem(503, "shutting-down", "Shutting down", "The host is shutting down.")
            body = await _read_body(request, core.max_message_size)
            frames = events_from_http(request.headers, body, max_frame_size=core.max_message_size)
        except _Problem as exc:
            return problem_response(exc.status, exc.kind, exc.title, exc.detail)
        except EventProblem as exc:
            return problem_response(exc.status, exc.kind, exc.title, exc.detail, exc.errors)
        session = core.open_session(local=LOCAL_NAME, identity=request_identity(request))
        before = core.stats.event_copies_delivered
        try:
            for index, frame in enumerate(frames):
                behind = core.handle_text(session, wire.encode(frame))
                if not session.outbox.empty():
                    # The frames were checked with the core's own codec: this is the core failing.
                    answer = session.outbox.get_nowait()
                    refused = _refusal(answer)
                    if refused is not None:  # the access policy or the rate limit said no
                        status, kind, title, message = refused
                        detail = f"Event {index} was not published: {message} Events before it were."
                        return problem_response(status, kind, title, detail)
                    what = (answer or b"the host closed").decode("ascii")
                    detail = f"Event {index} was not published: {what}; events before it were."
                    return problem_response(500, "internal", "Internal error", detail)
                if behind is not None:
                    await self._service._wait_to_catch_up(behind)
        finally:
            core.close_session(session, "HTTP request finished")
        accepted = models.EventsAccepted(
            ids=[str(frame["id"]) for frame in frames], delivered=core.stats.event_copies_delivered - before
        )
        return JSONResponse(accepted.model_dump(), status_code=202)

    # -- POST /v1/rpc -----------------------------------------------------------------------

    async def call(self, request: Request) -> Response:
        core = self._core
        loop = asyncio.get_running_loop()
        try:
            timeout = _deadline_header(request)
            body = await _read_body(request, core.max_message_size)
        except _Problem as exc:
            return problem_response(exc.status, exc.kind, exc.title, exc.detail)
        started = loop.time()
        try:
            parsed = _json.loads(body)
        except (ValueError, RecursionError) as exc:
            return JSONResponse(wire.error(None, ErrorCode.PARSE_ERROR, f"Parse error: {exc}"))
        batch = isinstance(parsed, list)
        items: list[Any] = parsed if batch else [parsed]
        if not items:
            return JSONResponse(
                wire.error(None, ErrorCode.INVALID_REQUEST, "An empty batch is not a request.")
            )

        answers: dict[int, JsonObject] = {}
        calls: dict[int, _Call] = {}
        #: Positions of notifications: whatever happens to them, they get no answer.
        silent = {i for i, item in enumerate(items) if isinstance(item, dict) and "id" not in item}
        session = core.open_session(local=LOCAL_NAME, identity=request_identity(request))
        try:
            for index, item in enumerate(items):
                try:
                    request_id, method, params = _prepare(item)
                except FrameError as exc:
                    answers[index] = wire.error(exc.request_id, exc.code, exc.message)
                    continue
                limits = [t for t in (timeout, wire.optional_number(params, "timeout")) if t is not None]
                allowed = min(limits) if limits else None
                if allowed is not None:
                    params["timeout"] = allowed
                deadline = None if allowed is None else started + allowed
                calls[index] = _Call(request_id, allowed, deadline)
                # The core sees this request under its position in the batch: ids stay unique.
                behind = core.handle_text(session, wire.encode(wire.request(index, method, params)))
                if behind is not None:
                    await self._service._wait_to_catch_up(behind)
            if calls and not await self._collect(request, session, calls, answers):
                return Response(status_code=499)  # the caller hung up: nobody reads this
        finally:
            core.close_session(session, "HTTP request finished")

        replies = [answers[index] for index in range(len(items)) if index in answers and index not in silent]
        if not replies:
            return Response(status_code=204)
        return JSONResponse(replies if batch else replies[0])

    async def _collect(
        self,
        request: Request,
        session: WorkerSession,
        calls: dict[int, _Call],
        answers: dict[int, JsonObject],
    ) -> bool:
        """Wait for the answers to ``calls`` until each is in or past its deadline.

        Returns:
            False if the HTTP client disconnected first.
        """
        loop = asyncio.get_running_loop()
        waiting = {index for index in calls if index not in answers}
        hung_up = asyncio.ensure_future(_disconnected(request))
        try:
            while waiting:
                while not session.outbox.empty() and waiting:
                    if not self._file(session, session.outbox.get_nowait(), calls, waiting, answers):
                        return True
                now = loop.time()
                for index in sorted(waiting):
                    deadline = calls[index].deadline
                    if deadline is not None and deadline <= now:
                        waiting.discard(index)
                        self._core.handle_text(
                            session, wire.encode(wire.notification(Method.CANCEL, {"id": index}))
                        )
                        answers[index] = wire.error(
                            calls[index].client_id,
                            ErrorCode.DEADLINE_EXCEEDED,
                            f"The deadline of {calls[index].allowed:g} s passed; the call was cancelled.",
                        )
                if not waiting:
                    break
                deadlines = [d for d in (calls[i].deadline for i in waiting) if d is not None]
                wait_for = max(0.0, min(deadlines) - now) if deadlines else None
                getter = asyncio.ensure_future(session.outbox.get())
                done, _ = await asyncio.wait(
                    {getter, hung_up}, timeout=wait_for, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    if not self._file(session, getter.result(), calls, waiting, answers):
                        return True
                else:
                    getter.cancel()
                    if hung_up in done:
                        return False
            return True
        finally:
            hung_up.cancel()

    def _file(
        self,
        session: WorkerSession,
        data: bytes | None,
        calls: dict[int, _Call],
        waiting: set[int],
        answers: dict[int, JsonObject],
    ) -> bool:
        """File one frame from the session's outbox; False once the session is closed."""
        if data is None:
            # The host shut down (it has already sent -32010 for every call it knew of).
            for index in sorted(waiting):
                answers[index] = wire.error(
                    calls[index].client_id,
                    ErrorCode.SHUTTING_DOWN,
                    "The host shut down before the call completed.",
                )
            waiting.clear()
            return False
        session.sent(data)
        frame = _json.loads(data)
        index = frame.get("id")
        if isinstance(index, int) and index in waiting:
            waiting.discard(index)
            frame["id"] = calls[index].client_id
            answers[index] = frame
        return True

    # -- introspection ----------------------------------------------------------------------

    async def list_agents(self) -> models.AgentsListing:
        core = self._core
        return models.AgentsListing(agent_types=core.describe_agent_types(), workers=len(core.workers()))

    async def list_subscriptions(self) -> models.SubscriptionsListing:
        core = self._core
        owners = {sub_id: s.worker_id for s in core.workers() for sub_id in s.subscription_ids}
        listing = []
        for subscription in sorted(core.subscriptions.values(), key=lambda s: s.id):
            kind: Literal["type", "type_prefix"]
            if isinstance(subscription, TypePrefixSubscription):
                kind, topic, agent_type = (
                    "type_prefix",
                    subscription.topic_type_prefix,
                    subscription.agent_type,
                )
            elif isinstance(subscription, TypeSubscription):
                kind, topic, agent_type = "type", subscription.topic_type, subscription.agent_type
            else:  # the core only makes the two kinds above
                continue
            listing.append(
                models.SubscriptionInfo(
                    id=subscription.id,
                    kind=kind,
                    agent_type=agent_type,
                    topic=topic,
                    worker_id=owners.get(subscription.id),
                )
            )
        return models.SubscriptionsListing(subscriptions=listing)

    async def list_workers(self) -> models.WorkersListing:
        workers = sorted(self._core.workers(), key=lambda s: s.connected_at)
        return models.WorkersListing(
            protocol=PROTOCOL_VERSION,
            workers=[
                models.WorkerInfo(
                    worker_id=s.worker_id,
                    name=s.name,
                    instance=s.instance,
                    connected_at=datetime.fromtimestamp(s.connected_at, tz=timezone.utc),
                    agent_types=sorted(s.agent_types),
                    subscriptions=len(s.subscription_ids),
                    messages_in=s.frames_in,
                    messages_out=s.frames_out,
                    bytes_in=s.bytes_in,
                    bytes_out=s.bytes_out,
                    calls_in_flight=len(s.calls_made),
                    calls_serving=len(s.calls_served),
                    max_message_size=s.max_message_size,
                )
                for s in workers
                if s.greeted
            ],
        )


# -- helpers ------------------------------------------------------------------------------------


def _prepare(item: Any) -> tuple[wire.RequestId | None, str, JsonObject]:
    """Check one JSON-RPC request of ``POST /v1/rpc``: (id, or None for a notification, method, params).

    Raises:
        FrameError: The answer to give in its place.
    """
    if not isinstance(item, dict):
        raise FrameError(ErrorCode.INVALID_REQUEST, "A request must be a JSON object.")
    if "specversion" in item:
        raise FrameError(ErrorCode.INVALID_REQUEST, f"Publish CloudEvents with POST {EVENTS_PATH}.")
    try:
        frame = wire.decode(_json.dumps(item))
    except RecursionError:
        raise FrameError(ErrorCode.INVALID_REQUEST, "The request is nested too deeply.") from None
    request_id: wire.RequestId | None
    if isinstance(frame, wire.Notification):
        request_id, method, params = None, frame.method, frame.params
    elif isinstance(frame, wire.Request):
        request_id, method, params = frame.id, frame.method, frame.params
    else:
        raise FrameError(ErrorCode.INVALID_REQUEST, "Send a request: 'jsonrpc', 'method', 'params' and 'id'.")
    try:
        if method not in wire.ROUTED_METHODS:
            raise FrameError(
                ErrorCode.METHOD_NOT_FOUND,
                f"Method '{method}' is not available over HTTP; use "
                f"{', '.join(sorted(wire.ROUTED_METHODS))}.",
            )
        wire.required_agent_id(params, "recipient")
        wire.optional_number(params, "timeout")
        if method == Method.SEND:
            wire.agent_id_from_wire(params, "sender", optional=True)
            params["payload"] = wire.payload_to_wire(wire.payload_from_wire(params.get("payload")))
            message_id = params.get("message_id")
            if message_id is None:
                params["message_id"] = str(uuid.uuid4())
            elif not isinstance(message_id, str):
                raise FrameError(ErrorCode.INVALID_PARAMS, "'message_id' must be a string.")
        elif method == Method.AGENT_LOAD_STATE and not isinstance(params.get("state"), dict):
            raise FrameError(ErrorCode.INVALID_PARAMS, "'state' must be an object.")
    except FrameError as exc:
        exc.request_id = request_id
        raise
    return request_id, method, params


def request_identity(request: Request) -> Identity:
    """The identity the service's authentication dependency found for this request."""
    identity = getattr(request.state, IDENTITY_STATE, None)
    return identity if isinstance(identity, Identity) else ANONYMOUS


def _refusal(answer: bytes | None) -> tuple[int, str, str, str] | None:
    try:
        frame = _json.loads(answer or b"")
        code, message = frame["error"]["code"], str(frame["error"]["message"])
    except (ValueError, TypeError, KeyError):
        return None
    if code == ErrorCode.FORBIDDEN:
        return 403, "forbidden", "Forbidden", message
    if code == ErrorCode.TOO_MANY_CALLS:
        return 429, "rate-limited", "Too many requests", message
    return None


def _deadline_header(request: Request) -> float | None:
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise _Problem(
            400,
            "invalid-deadline",
            "Invalid deadline",
            f"{DEADLINE_HEADER} must be a number of seconds >= 0, not {raw!r}.",
        )
    return value


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing one over ``limit`` bytes before reading it all."""
    too_large = _Problem(
        413, "too-large", "Body too large", f"The body exceeds this host's limit of {limit} bytes."
    )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise _Problem(400, "disconnected", "Client disconnected", "The body was cut short.") from None
    return b"".join(chunks)


async def _disconnected(request: Request) -> None:
    """Return once the HTTP client has gone away (after its body was read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
