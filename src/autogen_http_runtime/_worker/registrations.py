"""What a worker has told its host (agent types, subscriptions), kept to tell it again.

The host forgets a worker's registrations when its connection ends; each new connection
(the first, and every reconnection) starts with :meth:`Registrations.replay`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from autogen_core import Subscription

from .._exceptions import ErrorCode, SubscriptionError
from .._protocol import wire
from .._protocol.subscriptions import spec_of
from .._protocol.wire import JsonObject, Method
from .agents import LocalAgents
from .connection import HostConnection

#: Sends a control request to the host and returns its result.
Control = Callable[[str, JsonObject], Awaitable[Any]]


class Registrations:
    """The agent types (kept by :class:`LocalAgents`) and subscriptions a worker registered.

    Args:
        control_timeout: Seconds to wait for the host to answer each registration.
    """

    def __init__(self, agents: LocalAgents, *, control_timeout: float) -> None:
        self._agents = agents
        self._control_timeout = control_timeout
        self._subscriptions: dict[str, Subscription] = {}
        #: Ids of the subscriptions sent to the host on the current connection.
        self._sent: set[str] = set()

    async def replay(self, connection: HostConnection) -> None:
        """Register every agent type and subscription on a new connection.

        Loops until nothing new appears: registrations made while it awaits are sent too.
        """
        self._sent = set()
        registered: set[str] = set()
        while pending := [t for t in self._agents.types() if t not in registered]:
            for agent_type in pending:
                registered.add(agent_type)
                await connection.call(
                    Method.REGISTER_AGENT_TYPE, {"type": agent_type}, timeout=self._control_timeout
                )
        while unsent := [s for s in self._subscriptions.values() if s.id not in self._sent]:
            for subscription in unsent:
                self._sent.add(subscription.id)
                await connection.call(
                    Method.ADD_SUBSCRIPTION,
                    {"subscription": wire.subscription_to_wire(spec_of(subscription))},
                    timeout=self._control_timeout,
                )

    def drop_type(self, agent_type: str) -> None:
        """Forget an agent type this worker failed to register."""
        self._agents.remove_type(agent_type)

    async def add_subscription(self, subscription: Subscription, control: Control | None) -> None:
        """Keep ``subscription``, and tell the host through ``control`` (``None`` before start).

        Raises:
            SubscriptionError: Before start, one with the same id or the same match is kept;
                after, the host refused it.
            TypeError: Not a kind the host can store.
        """
        body = wire.subscription_to_wire(spec_of(subscription))
        if control is None:
            # Before start nobody else can have added it: check here, the host checks later.
            for existing in self._subscriptions.values():
                if existing.id == subscription.id or existing == subscription:
                    raise SubscriptionError(
                        f"Subscription already exists: id {existing.id!r}.",
                        code=ErrorCode.SUBSCRIPTION_EXISTS,
                    )
            self._subscriptions[subscription.id] = subscription
            return
        # Once started the host is the judge: another worker may have added or removed it.
        previous = self._subscriptions.get(subscription.id)
        self._subscriptions[subscription.id] = subscription
        self._sent.add(subscription.id)
        try:
            await control(Method.ADD_SUBSCRIPTION, {"subscription": body})
        except BaseException:
            self._sent.discard(subscription.id)
            if previous is None:
                self._subscriptions.pop(subscription.id, None)
            else:
                self._subscriptions[subscription.id] = previous
            raise

    async def remove_subscription(self, subscription_id: str, control: Control | None) -> None:
        """Forget a subscription, and tell the host through ``control`` (``None`` before start).

        Raises:
            SubscriptionError: No subscription has this id.
        """
        if control is not None:
            await control(Method.REMOVE_SUBSCRIPTION, {"id": subscription_id})
        elif subscription_id not in self._subscriptions:
            raise SubscriptionError(
                f"Subscription does not exist: id {subscription_id!r}.", code=ErrorCode.SUBSCRIPTION_NOT_FOUND
            )
        self._subscriptions.pop(subscription_id, None)
        self._sent.discard(subscription_id)


def forget_type(connection: HostConnection | None, agent_type: str) -> None:
    """Undo a type registration the host may have accepted (after a cancel or a local failure),
    without waiting for the answer."""
    if connection is not None and not connection.closed:
        _, answer = connection.start_call(Method.UNREGISTER_AGENT_TYPE, {"type": agent_type})
        answer.add_done_callback(_consume)


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a fire-and-forget call's outcome so asyncio does not warn about it."""
    if not future.cancelled():
        future.exception()
