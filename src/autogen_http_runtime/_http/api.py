"""The plain-HTTP API of a host: publish CloudEvents, call agents with JSON-RPC, look inside.

Routes, relative to where the service's router is mounted:

* ``POST /v1/events``: CloudEvents 1.0 in any content mode of the HTTP binding.
* ``POST /v1/rpc``: a JSON-RPC 2.0 request or batch calling agents (``send``,
  ``agent_metadata``, ``agent_save_state``, ``agent_load_state``; see ``rpc.py``).
* ``GET /v1/agents``, ``GET /v1/subscriptions``, ``GET /v1/workers``.

Each POST is a caller inside the host process (``local.py``): the routing core sees the
same messages a worker would send over its WebSocket.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .._constants import AGENTS_PATH, PROTOCOL_VERSION
from .._exceptions import HTTP_MEANINGS, ErrorCode
from .._host import views
from .._host.core import RoutingCore
from .._protocol import wire
from . import models
from .admission import request_identity
from .cloudevents import events_from_http
from .local import LocalTransport
from .problems import Problem
from .responses import AsciiJSONResponse
from .rpc import DEADLINE_HEADER, EVENTS_PATH, RpcEndpoint, read_body

RPC_PATH: Final = "/v1/rpc"
SUBSCRIPTIONS_PATH: Final = "/v1/subscriptions"
WORKERS_PATH: Final = "/v1/workers"


def api_router(core: RoutingCore, *, slow_consumer_timeout: float) -> APIRouter:
    """The HTTP API's routes for ``core``."""
    api = _HttpApi(core, slow_consumer_timeout)
    router = APIRouter()
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
        RpcEndpoint(core, slow_consumer_timeout=slow_consumer_timeout),
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
    for path, endpoint, name, summary, model in (
        (
            AGENTS_PATH,
            api.list_agents,
            "list_agents",
            "Agent types registered with this host, and the worker serving each",
            models.AgentsListing,
        ),
        (
            SUBSCRIPTIONS_PATH,
            api.list_subscriptions,
            "list_subscriptions",
            "Subscriptions stored on this host",
            models.SubscriptionsListing,
        ),
        (
            WORKERS_PATH,
            api.list_workers,
            "list_workers",
            "Connected workers: since when, what they serve, messages in and out",
            models.WorkersListing,
        ),
    ):
        router.add_api_route(
            path,
            endpoint,
            methods=["GET"],
            name=name,
            summary=summary,
            response_model=model,
            # A worker's host is listed in a cluster only: alone, the listing is as it was.
            response_model_exclude_none=model is models.WorkersListing,
            tags=["introspection"],
        )
    return router


class _HttpApi:
    def __init__(self, core: RoutingCore, slow_consumer_timeout: float) -> None:
        self._core = core
        self._slow_consumer_timeout = slow_consumer_timeout

    # -- POST /v1/events --------------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        core = self._core
        try:
            if not core.accepting:
                raise Problem.for_code(ErrorCode.SHUTTING_DOWN, "The host is shutting down.")
            body = await read_body(request, core.max_message_size)
            events = events_from_http(request.headers, body, max_frame_size=core.max_message_size)
        except Problem as exc:
            return exc.response()
        identity = request_identity(request)
        async with LocalTransport(
            core, identity, slow_consumer_timeout=self._slow_consumer_timeout
        ) as caller:
            for index, event in enumerate(events):
                await caller.send([event])
                if not caller.session.outbox.empty():
                    return _not_published(index, caller.session.outbox.get_nowait())
            delivered = caller.session.copies_delivered
        accepted = models.EventsAccepted(
            ids=[str(event.attributes["id"]) for event in events], delivered=delivered
        )
        return AsciiJSONResponse(accepted.model_dump(), status_code=202)

    # -- introspection ----------------------------------------------------------------------

    async def list_agents(self) -> models.AgentsListing:
        core = self._core
        types = views.agent_type_views(core)
        return models.AgentsListing(
            agent_types={view.agent_type: view.replicas[0].worker_id for view in types},
            workers=views.worker_count(core),
            replicas=core.directory.replicas,
            types=[
                models.AgentTypeInfo(
                    type=view.agent_type,
                    replicas=[
                        models.ReplicaInfo(
                            worker_id=r.worker_id, name=r.name, calls=r.routed, agent_ids=r.agent_ids
                        )
                        for r in view.replicas
                    ],
                )
                for view in types
            ],
        )

    async def list_subscriptions(self) -> models.SubscriptionsListing:
        listing = sorted(views.subscriptions(self._core), key=lambda s: s.id)
        return models.SubscriptionsListing(
            subscriptions=[
                models.SubscriptionInfo(
                    id=s.id, kind=s.kind, agent_type=s.agent_type, topic=s.topic, worker_id=s.worker_id
                )
                for s in listing
            ]
        )

    async def list_workers(self, request: Request) -> models.WorkersListing:
        # A worker's instance is what resumes its session: shown to its own identity only.
        caller = request_identity(request).name
        return models.WorkersListing(
            protocol=PROTOCOL_VERSION,
            workers=[
                models.WorkerInfo(
                    worker_id=w.worker_id,
                    name=w.name,
                    instance=w.instance if w.identity == caller else "",
                    connected_at=datetime.fromtimestamp(w.connected_at, tz=timezone.utc),
                    agent_types=w.agent_types,
                    subscriptions=w.subscriptions,
                    messages_in=w.frames_in,
                    messages_out=w.frames_out,
                    bytes_in=w.bytes_in,
                    bytes_out=w.bytes_out,
                    calls_in_flight=w.calls_in_flight,
                    calls_serving=w.calls_serving,
                    calls_made=w.calls_made,
                    calls_served=w.calls_served,
                    max_message_size=w.max_message_size,
                    host=w.host,
                )
                for w in views.workers(self._core)
            ],
        )


def _not_published(index: int, answer: object) -> Response:
    """The problem for an event the core refused: the access policy or the rate limit said no,
    or (the events were checked with the core's own codec) the core failed."""
    error = answer.get("error") if isinstance(answer, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if code in (ErrorCode.FORBIDDEN, ErrorCode.TOO_MANY_CALLS):
        assert isinstance(error, dict)
        meaning = HTTP_MEANINGS[ErrorCode(code)]
        detail = f"Event {index} was not published: {error.get('message')} Events before it were."
        return Problem(meaning.status, meaning.kind, meaning.title, detail).response()
    what = "the host closed" if not isinstance(answer, dict) else wire.encode(answer)
    detail = f"Event {index} was not published: {what}; events before it were."
    return Problem.for_code(ErrorCode.INTERNAL_ERROR, detail).response()
