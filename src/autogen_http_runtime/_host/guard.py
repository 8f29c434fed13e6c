"""What the routing core checks before it acts for a session: the access policy, senders, the rate limit.

Each check raises :class:`MessageError` (``FORBIDDEN`` or ``TOO_MANY_CALLS``) for the core
to answer with, and logs the refusal. No I/O.
"""

from __future__ import annotations

import logging
from typing import Final

from autogen_core import AgentId

from .._exceptions import ErrorCode
from .._protocol.subscriptions import SubscriptionSpec
from .._protocol.wire import MessageError, RequestId
from .security import AccessPolicy, Action, RateLimiter
from .session import WorkerSession

_VERBS: Final[dict[str, str]] = {
    "register": "register agent type",
    "call": "call agent type",
    "publish": "publish to topic type",
    "subscribe": "subscribe to topic type",
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

    def authorize(
        self, session: WorkerSession, action: Action, name: str, request_id: RequestId | None
    ) -> None:
        """Raises: MessageError: ``FORBIDDEN``, the access policy does not allow it."""
        if self.access is None or self.access.allows(session.identity, action, name):
            return
        self._log.warning(
            "Denied: identity %r (worker %s) may not %s %r",
            session.identity.name,
            session.worker_id,
            action,
            name,
        )
        raise MessageError(
            ErrorCode.FORBIDDEN,
            f"Identity '{session.identity.name}' may not {_VERBS[action]} '{name}'.",
            request_id,
        )

    def authorize_subscription(
        self, session: WorkerSession, spec: SubscriptionSpec, request_id: RequestId
    ) -> None:
        """``RoutedAgent.register`` subscribes each agent type to its direct topics (``"<type>:"``
        prefixed): allowed to whoever may register that type. Others need ``subscribe``."""
        if (
            self.access is not None
            and spec.kind == "type_prefix"
            and spec.topic == f"{spec.agent_type}:"
            and self.access.allows(session.identity, "register", spec.agent_type)
        ):
            return
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
            self._log.warning(
                "Denied: identity %r (worker %s) named sender %s, not one of its agents",
                session.identity.name,
                session.worker_id,
                sender,
            )
            raise MessageError(
                ErrorCode.FORBIDDEN,
                f"Sender '{sender}' is not an agent of this caller (identity '{session.identity.name}'): "
                "a caller may only speak for agent types it registered.",
                request_id,
            )

    def take_rate(self, session: WorkerSession, request_id: RequestId | None) -> None:
        """Raises: MessageError: ``TOO_MANY_CALLS``, the identity is over its rate limit."""
        if self.rate_limiter is None or self.rate_limiter.take(session.identity):
            return
        limit = self.rate_limiter.limit
        raise MessageError(
            ErrorCode.TOO_MANY_CALLS,
            f"Identity '{session.identity.name}' is over its rate limit of {limit.rate:g} calls and "
            f"publishes a second (bursts of {limit.burst}); retry later.",
            request_id,
        )
