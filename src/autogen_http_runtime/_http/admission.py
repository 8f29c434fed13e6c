"""Who may use a host: the authenticator and the access policy at each handshake and HTTP request.

The worker WebSocket is admitted by its endpoint (which can answer a refusal with an HTTP
status); every HTTP route by :meth:`Admission.authenticate_http`, a FastAPI dependency of
the service's router, which leaves the caller's identity on ``request.state``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

from fastapi import Request
from starlette.requests import HTTPConnection

from .._host.security import ANONYMOUS, AccessPolicy, Action, Authenticator, Identity
from .._logging import Throttled
from .problems import Problem

#: Routes any caller may use when the service authenticates: the probes.
DEFAULT_PUBLIC_ROUTES: Final = ("healthz", "readyz")
#: Routes that show what every identity has (workers, agent types, subscriptions) or act on it
#: (dead letters), with the right and the listing each needs under an access policy.
LISTING_ROUTES: Final[dict[str, tuple[Action, str]]] = {
    "list_agents": ("read", "agents"),
    "list_subscriptions": ("read", "subscriptions"),
    "list_workers": ("read", "workers"),
    "metrics": ("read", "metrics"),
    "dashboard": ("read", "dashboard"),
    "dashboard_events": ("read", "dashboard"),
    "list_dead_letters": ("read", "dead-letters"),
    "replay_dead_letter": ("manage", "dead-letters"),
    "drop_dead_letter": ("manage", "dead-letters"),
}
#: Where :meth:`Admission.authenticate_http` leaves the caller's identity on ``request.state``.
IDENTITY_STATE: Final = "autogen_http_identity"


class Admission:
    """Runs the authenticator and the access policy's "has any rule" check.

    Args:
        authenticator: See ``HttpAgentService``; ``None`` admits everyone as ``anonymous``.
        access: The access policy; an identity with no rule in it is refused (403).
        public_routes: Names of the routes that need no authentication.
    """

    def __init__(
        self,
        authenticator: Authenticator | None,
        access: AccessPolicy | None,
        public_routes: Iterable[str],
        logger: logging.Logger,
    ) -> None:
        self.authenticator = authenticator
        self._access = access
        self.public_routes = frozenset(public_routes)
        self._log = logger
        self._refusals = Throttled(logger)

    async def identify(self, headers: dict[str, str]) -> Identity | None:
        if self.authenticator is None:
            return ANONYMOUS
        try:
            found = await self.authenticator(headers)
        except Exception:
            self._log.exception("The authenticator failed; refusing the caller")
            return None
        return Identity(found) if isinstance(found, str) else found

    async def admit(self, connection: HTTPConnection) -> Identity | Problem:
        """The caller's identity, or why it is refused."""
        identity = await self.identify(dict(connection.headers.items()))
        if identity is None:
            return Problem(
                401,
                "unauthenticated",
                "Unauthenticated",
                "The host requires authentication: send valid credentials "
                "(e.g. 'Authorization: Bearer <token>').",
            )
        if identity.expired():  # an authenticator that does not check expiry itself
            return Problem(401, "unauthenticated", "Unauthenticated", "The credentials have expired.")
        if self._access is not None and self._access.rule_for(identity) is None:
            return Problem(
                403, "forbidden", "Forbidden", f"Identity '{identity.name}' has no access to this host."
            )
        return identity

    async def authenticate_http(self, connection: HTTPConnection) -> None:
        """The router's dependency: refuse an HTTP request (raise :class:`Problem`) or note its identity."""
        if connection.scope["type"] != "http":
            return  # the worker WebSocket is admitted by its endpoint, which can answer a refusal
        name = getattr(connection.scope.get("route"), "name", None)
        if (self.authenticator is None and self._access is None) or name in self.public_routes:
            return  # without an authenticator, a policy still applies: to 'anonymous'
        admitted = await self.admit(connection)
        if isinstance(admitted, Problem):
            raise admitted
        needs = LISTING_ROUTES.get(name) if isinstance(name, str) else None
        access = self._access
        if needs is not None and access is not None and not access.allows(admitted, *needs):
            action, listing = needs
            self._refusals.warning(
                "Denied: identity %r may not %s %s (AccessRule %s)",
                admitted.name,
                action,
                listing,
                action,
                key=admitted.name,
            )
            raise Problem(
                403, "forbidden", "Forbidden", f"Identity '{admitted.name}' may not {action} {listing}."
            )
        setattr(connection.state, IDENTITY_STATE, admitted)


def request_identity(request: Request) -> Identity:
    """The identity :meth:`Admission.authenticate_http` found for this request."""
    identity = getattr(request.state, IDENTITY_STATE, None)
    return identity if isinstance(identity, Identity) else ANONYMOUS


def peer_of(connection: HTTPConnection) -> str:
    client = connection.client
    return f"{client.host}:{client.port}" if client is not None else "an unknown peer"
