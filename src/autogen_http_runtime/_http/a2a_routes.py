"""The host as an A2A server (``HttpAgentService(a2a=True)``; docs/a2a.md).

Every agent type a worker described for A2A (``register_a2a_skill``) gets, under the
service's router:

* ``POST /a2a/{agent_type}``: A2A JSON-RPC, 1.0 method names (``SendMessage``, ...) and
  0.3 ones (``message/send``, ...) on the same endpoint;
* ``GET /a2a/{agent_type}/.well-known/agent-card.json``: its Agent Card;

and ``GET /.well-known/agent-card.json`` lists them all. The SDK does the protocol: one
``DefaultRequestHandler`` per type (its own card and tasks), reached through these
catch-all routes, made on the type's first request and dropped when its description goes
(what it still runs ends by itself: the calls fail or are answered; the service's
``close`` closes what is left). The host does what the SDK does not: authentication (the
service's admission; the cards are public), the access policy's ``call``, the body size
limit and ``X-Deadline``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.types import AgentCard
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import Message as AsgiMessage

from .._host import views
from .._host.core import RoutingCore
from .._protocol.descriptions import A2ASkill
from .a2a_cards import CARD_PATH, listing_card, type_card
from .a2a_executor import (
    DEADLINE_STATE,
    AgentTypeExecutor,
    CallerContextBuilder,
    FinishedTaskLimit,
    InputReader,
)
from .admission import request_identity
from .problems import Problem
from .rpc import deadline_header, read_body

#: Route names: the cards are public (``HttpAgentService`` adds them to ``public_routes``).
RPC_ROUTE: Final = "a2a_rpc"
TYPE_CARD_ROUTE: Final = "a2a_type_card"
HOST_CARD_ROUTE: Final = "a2a_host_card"
PUBLIC_ROUTES: Final = (TYPE_CARD_ROUTE, HOST_CARD_ROUTE)

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class _TypeEndpoint:
    handler: DefaultRequestHandler
    rpc: Endpoint


class A2AEndpoints:
    """The A2A endpoints of one routing core's described agent types.

    Args:
        secured: Whether the service authenticates callers: the cards then declare a bearer scheme.
        slow_consumer_timeout: As for ``POST /v1/rpc``'s calls.
    """

    def __init__(
        self, core: RoutingCore, *, secured: bool, slow_consumer_timeout: float, logger: logging.Logger
    ) -> None:
        self._core = core
        self._secured = secured
        self._slow_consumer_timeout = slow_consumer_timeout
        self._log = logger
        self._types: dict[str, _TypeEndpoint] = {}
        #: The card route's endpoint last made for each card, by what it was made from.
        self._cards: dict[str, tuple[object, Endpoint]] = {}
        #: Handlers of types no longer described, while something still holds them (a running task).
        self._retired: weakref.WeakSet[DefaultRequestHandler] = weakref.WeakSet()
        #: Route names that need no authentication: the cards.
        self.public_routes = PUBLIC_ROUTES
        core.descriptions.on_change(self._description_changed)

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route(
            "/.well-known/agent-card.json",
            self._host_card,
            methods=["GET"],
            name=HOST_CARD_ROUTE,
            include_in_schema=False,
        )
        router.add_api_route(
            "/a2a/{agent_type}" + CARD_PATH,
            self._type_card,
            methods=["GET"],
            name=TYPE_CARD_ROUTE,
            include_in_schema=False,
        )
        router.add_api_route(
            "/a2a/{agent_type}", self._rpc, methods=["POST"], name=RPC_ROUTE, include_in_schema=False
        )
        return router

    async def close(self) -> None:
        """Close every type's request handler, cancelling what still runs, and wait for them."""
        handlers = [endpoint.handler for endpoint in self._types.values()] + list(self._retired)
        self._types.clear()
        if handlers:
            await asyncio.gather(*(handler.aclose() for handler in handlers))

    # -- routes ---------------------------------------------------------------------------

    async def _rpc(self, agent_type: str, request: Request) -> Response:
        core = self._core
        skill = views.a2a_skill(core, agent_type)
        if skill is None:
            return _unknown(agent_type).response()
        identity = request_identity(request)
        if core.access is not None and not core.access.allows(identity, "call", agent_type):
            self._log.warning(
                "Denied: identity %r may not call agent type %r over A2A", identity.name, agent_type
            )
            detail = f"Identity '{identity.name}' may not call agent type '{agent_type}'."
            return Problem(403, "forbidden", "Forbidden", detail).response()
        try:
            setattr(request.state, DEADLINE_STATE, deadline_header(request))
            body = await read_body(request, core.max_message_size)
        except Problem as exc:
            return exc.response()
        endpoint = self._types.get(agent_type) or self._open(agent_type, skill, request)
        return await endpoint.rpc(_replaying(request, body))

    async def _type_card(self, agent_type: str, request: Request) -> Response:
        skill = views.a2a_skill(self._core, agent_type)
        if skill is None:
            return _unknown(agent_type).response()
        url = _rpc_url(request, agent_type)
        endpoint = self._card(
            agent_type, (skill, url), lambda: type_card(agent_type, skill, url, secured=self._secured)
        )
        return await endpoint(request)

    async def _host_card(self, request: Request) -> Response:
        types = [(t, skill, _rpc_url(request, t)) for t, skill in views.a2a_skills(self._core).items()]
        if not types:
            detail = "No worker offers an agent type over A2A on this host yet."
            return Problem(404, "not-found", "No A2A agent types", detail).response()
        endpoint = self._card("", tuple(types), lambda: listing_card(types, secured=self._secured))
        return await endpoint(request)

    # -- per type -------------------------------------------------------------------------

    def _card(self, name: str, source: object, make: Callable[[], AgentCard]) -> Endpoint:
        """The SDK's card endpoint for a card, made again only when what it is made from changed."""
        cached = self._cards.get(name)
        if cached is None or cached[0] != source:
            [route] = create_agent_card_routes(make(), card_url="/")
            cached = (source, route.endpoint)
            self._cards[name] = cached
        return cached[1]

    def _open(self, agent_type: str, skill: A2ASkill, request: Request) -> _TypeEndpoint:
        # The handler reads its card for the capabilities (streaming) only: the skill may change.
        card = type_card(agent_type, skill, _rpc_url(request, agent_type), secured=self._secured)
        handler = DefaultRequestHandler(
            agent_executor=AgentTypeExecutor(self._core, slow_consumer_timeout=self._slow_consumer_timeout),
            task_store=FinishedTaskLimit(),
            agent_card=card,
            request_context_builder=InputReader(self._core, agent_type, logger=self._log),
        )
        [route] = create_jsonrpc_routes(
            handler, rpc_url="/", context_builder=CallerContextBuilder(), enable_v0_3_compat=True
        )
        endpoint = _TypeEndpoint(handler, route.endpoint)
        self._types[agent_type] = endpoint
        return endpoint

    def _description_changed(self, agent_type: str) -> None:
        """Called by the core when a type's description is set, replaced or removed."""
        self._cards.pop(agent_type, None)
        self._cards.pop("", None)  # the listing
        if views.a2a_skill(self._core, agent_type) is None and agent_type in self._types:
            # Not closed here: that would cancel tasks about to end saying why (the worker left).
            self._retired.add(self._types.pop(agent_type).handler)


def _unknown(agent_type: str) -> Problem:
    return Problem(
        404, "not-found", "Unknown A2A agent type", f"No worker offers agent type {agent_type!r} over A2A."
    )


def _rpc_url(request: Request, agent_type: str) -> str:
    """The endpoint's URL as this client reached the host (the host may be known by many names)."""
    return str(request.url_for(RPC_ROUTE, agent_type=agent_type))


def _replaying(request: Request, body: bytes) -> Request:
    """``request`` again, its body (already read, within the size limit) given once more: the
    SDK reads the body itself. After the body, what the client sends (its disconnect) passes on."""
    given = False

    async def receive() -> AsgiMessage:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    return Request(request.scope, receive)
