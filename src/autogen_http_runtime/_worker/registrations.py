"""What a worker has told its host (agent types, their A2A skills, subscriptions), kept to tell it again.

The host forgets a worker's registrations when its connection ends; each new connection
(the first, and every reconnection) starts with :meth:`Registrations.replay`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, Protocol

from autogen_core import Agent, AgentId, AgentRuntime, Subscription

from .._exceptions import (
    ErrorCode,
    PermissionDeniedError,
    ProtocolError,
    RpcError,
    SubscriptionError,
    TooManyCallsError,
)
from .._protocol import wire
from .._protocol.descriptions import A2ASkill, a2a_skill_to_wire
from .._protocol.subscriptions import spec_of
from .._protocol.wire import JsonObject, Method
from .agents import LocalAgents
from .connection import HostConnection

#: Sends a control request to the host and returns its result.
Control = Callable[[str, JsonObject], Awaitable[Any]]
#: Longest wait before asking again for a subscription the host's rate limit refused.
_MAX_RETRY_AFTER: Final = 5.0


class Host(Protocol):
    """What registering needs of the worker's link to its host (``Lifecycle`` provides it)."""

    def host_must_hear(self) -> bool: ...

    async def control(self, method: str, params: JsonObject) -> Any: ...

    def live_connection(self) -> HostConnection | None: ...


class Registrations:
    """The agent types (kept by :class:`LocalAgents`), their A2A skills and the subscriptions a
    worker registered.

    Args:
        control_timeout: Seconds to wait for the host to answer each registration.
    """

    def __init__(self, agents: LocalAgents, *, control_timeout: float, logger: logging.Logger) -> None:
        self._agents = agents
        self._control_timeout = control_timeout
        self._log = logger
        self._skills: dict[str, A2ASkill] = {}
        self._replicated: set[str] = set()
        self._subscriptions: dict[str, Subscription] = {}
        #: Ids of the subscriptions sent to the host on the current connection.
        self._sent: set[str] = set()

    async def replay(self, connection: HostConnection, *, first: bool = True) -> None:
        """Register every agent type and subscription on a new connection.

        Loops until nothing new appears: registrations made while it awaits are sent too.
        A subscription refused by the host's rate limit is asked for again once it allows.

        Args:
            first: The first connection (``start()``): a refused subscription is raised. On
                a reconnection it is logged and skipped instead (and asked for again on the
                next one): someone else may hold it, and that must not end the worker.
        """
        self._sent = set()
        control = partial(connection.call, timeout=self._control_timeout)
        registered: set[str] = set()
        while pending := [t for t in self._agents.types() if t not in registered]:
            for agent_type in pending:
                registered.add(agent_type)
                await self.announce_type(agent_type, control)
        pinned: set[AgentId] = set()
        while unpinned := [a for a in self._agents.instance_ids() if a not in pinned]:
            for agent_id in unpinned:
                pinned.add(agent_id)
                await self.pin(agent_id, control)
        while unsent := [s for s in self._subscriptions.values() if s.id not in self._sent]:
            for subscription in unsent:
                self._sent.add(subscription.id)
                try:
                    await self._add_again(connection, subscription)
                except (SubscriptionError, PermissionDeniedError, TooManyCallsError) as exc:
                    if first:
                        raise
                    self._log.warning(
                        "The host refused subscription %r again after reconnecting: %s", subscription.id, exc
                    )

    async def _add_again(self, connection: HostConnection, subscription: Subscription) -> None:
        params = {"subscription": wire.subscription_to_wire(spec_of(subscription))}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._control_timeout
        while True:
            try:
                await connection.call(Method.ADD_SUBSCRIPTION, params, timeout=self._control_timeout)
                return
            except TooManyCallsError as exc:
                wait = _retry_after(exc)
                if wait is None or loop.time() + wait > deadline:
                    raise
                await asyncio.sleep(wait)  # the host said when its rate limit allows another

    async def add_type(self, agent_type: str, host: Host) -> None:
        """Tell the host of a type just added to the local agents (after start; before, the
        start tells it); on failure the type is dropped here and on the host.

        Raises:
            HostConnectionError: The runtime was stopped or lost its host for good.
        """
        try:
            if host.host_must_hear():
                await self.announce_type(agent_type, host.control)
        except BaseException:
            self.drop_type(agent_type, host)
            raise

    async def add_instance(self, agent_id: AgentId, agent: Agent, runtime: AgentRuntime, host: Host) -> None:
        """Register an agent instance (``register_agent_instance``): its type if new here,
        bound to ``runtime``, then pinned to this worker on the host; undone on any failure."""
        new_type = self._agents.add_instance_type(agent_id, agent)
        if new_type:
            await self.add_type(agent_id.type, host)
        try:
            await agent.bind_id_and_runtime(id=agent_id, runtime=runtime)
            self._agents.add_instance(agent_id, agent)
            if host.host_must_hear():  # a replica set places this id here, and only here
                await self.pin(agent_id, host.control)
        except BaseException:
            self._agents.remove_instance(agent_id)
            if new_type:
                self.drop_type(agent_id.type, host)
            raise

    def drop_type(self, agent_type: str, host: Host) -> None:
        """Undo a type registration here, and on the host if it may have accepted it."""
        self._agents.remove_type(agent_type)
        forget_type(host.live_connection(), agent_type)

    async def announce_type(self, agent_type: str, control: Control) -> None:
        """Register ``agent_type`` with the host, then describe its A2A skill if it has one."""
        answer = await control(Method.REGISTER_AGENT_TYPE, {"type": agent_type})
        replicas = answer.get("replicas") if isinstance(answer, dict) else None
        if isinstance(replicas, int) and replicas > 1:
            self._replicated.add(agent_type)
            self._log.info("Joined the replica set of agent type %r (%d replicas)", agent_type, replicas)
        else:
            self._replicated.discard(agent_type)
        skill = self._skills.get(agent_type)
        if skill is not None:
            await self._describe(agent_type, skill, control)

    async def pin(self, agent_id: AgentId, control: Control) -> None:
        """Tell the host the agent instance ``agent_id`` lives here (a host from before
        replicas does not know the request: it needs no pin)."""
        try:
            await control(Method.REGISTER_AGENT_INSTANCE, {"agent": wire.agent_id_to_wire(agent_id)})
        except RpcError as exc:
            if exc.code != ErrorCode.METHOD_NOT_FOUND:
                raise

    @property
    def replicated(self) -> set[str]:
        """The agent types this worker serves as one of several replicas (when it last registered)."""
        return self._replicated

    async def set_a2a_skill(self, agent_type: str, skill: A2ASkill, host: Host) -> None:
        """Keep ``agent_type``'s A2A skill, and describe it to the host now if the type is
        registered and the worker started (else it goes with the type's registration)."""
        previous = self._skills.get(agent_type)
        tell = host.host_must_hear() and agent_type in self._agents
        self._skills[agent_type] = skill
        if not tell:
            return
        try:
            await self._describe(agent_type, skill, host.control)
        except BaseException:
            if previous is None:
                self._skills.pop(agent_type, None)
            else:
                self._skills[agent_type] = previous
            raise

    async def _describe(self, agent_type: str, skill: A2ASkill, control: Control) -> None:
        params = {"type": agent_type, "a2a": a2a_skill_to_wire(skill)}
        try:
            await control(Method.DESCRIBE_AGENT_TYPE, params)
        except ProtocolError as exc:
            if exc.code != ErrorCode.METHOD_NOT_FOUND:
                raise
            # A host from before describe_agent_type: the type is served, just not over A2A.
            self._log.warning(
                "The host does not take agent type descriptions (an older release): "
                "agent type %r is served but not offered over A2A",
                agent_type,
            )

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


def _retry_after(error: TooManyCallsError) -> float | None:
    """Seconds the host's rate limit asks to wait, or ``None`` for another limit (not one of time)."""
    data = error.data
    wait = data.get("retry_after") if isinstance(data, dict) else None
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not wait >= 0:
        return None
    return min(float(wait), _MAX_RETRY_AFTER)


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
