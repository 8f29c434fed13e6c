"""What the routing core checks before it acts for a session: the access policy, senders, the rate limit.

Each check raises :class:`MessageError` (``FORBIDDEN`` or ``TOO_MANY_CALLS``) for the core
to answer with, and logs the refusal. No I/O.
"""

from __future__ import annotations

import logging
from typing import Final, NoReturn

from autogen_core import AgentId

from .._exceptions import ErrorCode
from .._logging import Throttled
from .._protocol.subscriptions import SubscriptionSpec
from .._protocol.wire import MessageError, RequestId
from .security import AccessPolicy, Action, RateLimiter
from .session import WorkerSession

_VERBS: Final[dict[str, str]] = {
    "register": "register agent type",
    "call": "call agent type",
    "route": "subscribe (route events to) agent type",
    "publish": "publish to topic type",
    "subscribe": "subscribe to topic type",
    "read": "read",
    "manage": "manage",
}


class Guard:
    """The access policy and the rate limit, as the core applies them to sessions.

    Args:
        access: Per-identity authorisation, also turning on sender verification; ``None``
            lets every session do everything.
        rate_limiter: Per-identity token buckets for calls and publishes; ``None``: no limit.
    """

    def __init__(
        self, access: AccessPolicy | None, rate_limiter: RateLimiter | None, logger: logging.Logger
    ) -> None:
        self.access = access
        self.rate_limiter = rate_limiter
        self._log = logger
        # A worker can be denied as often as it asks: one WARNING per identity a minute.
        self._denials = Throttled(logger)

    def authorize(
        self, session: WorkerSession, action: Action, name: str, request_id: RequestId | None
    ) -> None:
        """Raises: MessageError: ``FORBIDDEN``, the access policy does not allow it."""
        if self.access is None or self.access.allows(session.identity, action, name):
            return
        self._denials.warning(
            "Denied: identity %r (worker %s) may not %s %r",
            session.identity.name,
            session.worker_id,
            action,
            name,
            key=session.identity.name,
        )
        raise MessageError(
            ErrorCode.FORBIDDEN,
            f"Identity '{session.identity.name}' may not {_VERBS[action]} '{name}'.",
            request_id,
        )

    def refuse(
        self, session: WorkerSession, logged: str, message: str, request_id: RequestId | None
    ) -> NoReturn:
        """Refuse what ``session`` asked for with ``FORBIDDEN``, whatever the policy says.

        Raises:
            MessageError: Always.
        """
        self._denials.warning(
            "Denied: identity %r (worker %s): %s",
            session.identity.name,
            session.worker_id,
            logged,
            key=session.identity.name,
        )
        raise MessageError(ErrorCode.FORBIDDEN, message, request_id)

    def authorize_subscription(
        self, session: WorkerSession, spec: SubscriptionSpec, request_id: RequestId
    ) -> None:
        """A subscription needs ``subscribe`` on its topic and, for its agent type, ``register``
        or ``route``: otherwise anyone could reach another's agents, under keys of their
        choosing, by subscribing them to a topic of their own and publishing there.

        ``RoutedAgent.register`` subscribes each agent type to its direct topics (``"<type>:"``
        prefixed): allowed to whoever may register that type.
        """
        access = self.access
        if access is None:
            return
        identity = session.identity
        if access.allows(identity, "register", spec.agent_type):
            if spec.kind == "type_prefix" and spec.topic == f"{spec.agent_type}:":
                return
        else:
            self.authorize(session, "route", spec.agent_type, request_id)
        self.authorize(session, "subscribe", spec.topic, request_id)

    def verify_sender(
        self, session: WorkerSession, sender: AgentId | None, request_id: RequestId | None
    ) -> None:
        """A session speaks only for its own agents: those whose type it registered.

        An HTTP caller has no agents; it may name a sender whose type its rule lets it register.
        No check without an access policy.
        """
        if sender is None or self.access is None:
            return
        if session.local:
            allowed = self.access.allows(session.identity, "register", sender.type)
        else:
            allowed = sender.type in session.agent_types
        if not allowed:
            self._denials.warning(
                "Denied: identity %r (worker %s) named sender %s, not one of its agents",
                session.identity.name,
                session.worker_id,
                sender,
                key=session.identity.name,
            )
            raise MessageError(
                ErrorCode.FORBIDDEN,
                f"Sender '{sender}' is not an agent of this caller (identity '{session.identity.name}'): "
                "a caller may only speak for agent types it registered.",
                request_id,
            )

    def take_rate(self, session: WorkerSession, request_id: RequestId | None) -> None:
        """Take a token for a call, a publish or a new subscription.

        Raises:
            MessageError: ``TOO_MANY_CALLS``, the identity is over its rate limit; its
                ``data`` says in how many seconds a token is back (``retry_after``).
        """
        limiter = self.rate_limiter
        if limiter is None or limiter.take(session.identity):
            return
        limit = limiter.limit
        raise MessageError(
            ErrorCode.TOO_MANY_CALLS,
            f"Identity '{session.identity.name}' is over its rate limit of {limit.rate:g} calls, "
            f"publishes and subscriptions a second (bursts of {limit.burst}); retry later.",
            request_id,
            data={"retry_after": round(limiter.retry_after(session.identity), 3)},
        )
