"""The directory: which worker serves each agent, and which agents subscribe to each topic.

The routing core never reads a table of its own: it asks a :class:`Directory`. The core
never awaits, so a directory answers reads at once from this host's view, and takes
writes with a ``done`` callback, called once the change holds everywhere it must (at
once in memory; once a shared engine has confirmed it, in a cluster). The core sends the
worker its answer from that callback, so a registration is acknowledged only when it
routes.

:class:`LocalDirectory` is the in-memory directory of one host: today's behaviour, each
agent type served by one worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from autogen_core import AgentId, TopicId

from .._exceptions import ErrorCode
from .._protocol.subscriptions import SubscriptionSpec
from .._protocol.wire import MessageError
from .session import WorkerSession
from .subscriptions import SubscriptionEntry, SubscriptionTable

__all__ = ["Directory", "Done", "LocalDirectory"]

#: Called once a write holds, with ``None``, or with the error to answer the worker with.
Done = Callable[[MessageError | None], None]


class Directory(Protocol):
    """What the routing core asks about workers, agents and subscriptions."""

    # -- reads: answered from this host's view, at once ------------------------------------

    def owner(self, agent_id: AgentId) -> WorkerSession | None:
        """The worker that serves ``agent_id``, or ``None`` if none does."""

    def serves(self, session: WorkerSession, agent_type: str) -> bool:
        """Whether ``session`` registered ``agent_type``."""

    def recipients(self, topic: TopicId) -> list[AgentId]:
        """The agents subscribed to ``topic``, each once."""

    def subscription(self, subscription_id: str) -> SubscriptionEntry | None:
        """The subscription with this id and who added it."""

    def workers(self) -> Iterable[WorkerSession]:
        """The workers connected (that said hello), in the order they did."""

    def agent_types(self) -> Mapping[str, Sequence[WorkerSession]]:
        """Each registered agent type and the workers serving it."""

    def subscriptions(self) -> Iterable[SubscriptionEntry]:
        """Every subscription, in the order they were added."""

    # -- writes ------------------------------------------------------------------------------

    def add_worker(self, session: WorkerSession) -> None:
        """A worker said hello."""

    def remove_worker(self, session: WorkerSession) -> None:
        """A worker left: forget its agent types and subscriptions."""

    def register_type(self, session: WorkerSession, agent_type: str, done: Done) -> None:
        """``session`` serves ``agent_type`` from now on (``AGENT_TYPE_CONFLICT`` if it may not)."""

    def unregister_type(self, session: WorkerSession, agent_type: str) -> None:
        """``session`` no longer serves ``agent_type`` (nothing if it did not)."""

    def add_subscription(self, session: WorkerSession, spec: SubscriptionSpec, done: Done) -> None:
        """Add a subscription owned by ``session`` (``SUBSCRIPTION_EXISTS`` if one matches the same way)."""

    def remove_subscription(self, subscription_id: str, done: Done) -> None:
        """Remove a subscription (``SUBSCRIPTION_NOT_FOUND`` if none has this id)."""


class LocalDirectory:
    """The directory of one host, in memory: each agent type is served by one worker."""

    def __init__(self) -> None:
        self._owners: dict[str, WorkerSession] = {}
        self._workers: dict[str, WorkerSession] = {}
        self._subscriptions = SubscriptionTable()

    def owner(self, agent_id: AgentId) -> WorkerSession | None:
        return self._owners.get(agent_id.type)

    def serves(self, session: WorkerSession, agent_type: str) -> bool:
        return self._owners.get(agent_type) is session

    def recipients(self, topic: TopicId) -> list[AgentId]:
        return self._subscriptions.recipients(topic)

    def subscription(self, subscription_id: str) -> SubscriptionEntry | None:
        return self._subscriptions.get(subscription_id)

    def workers(self) -> Iterable[WorkerSession]:
        return self._workers.values()

    def agent_types(self) -> Mapping[str, Sequence[WorkerSession]]:
        return {agent_type: (session,) for agent_type, session in self._owners.items()}

    def subscriptions(self) -> Iterable[SubscriptionEntry]:
        return self._subscriptions

    def add_worker(self, session: WorkerSession) -> None:
        self._workers[session.worker_id] = session

    def remove_worker(self, session: WorkerSession) -> None:
        self._workers.pop(session.worker_id, None)
        for agent_type in session.agent_types:
            if self._owners.get(agent_type) is session:
                del self._owners[agent_type]
        for subscription_id in session.subscription_ids:
            entry = self._subscriptions.get(subscription_id)
            if entry is not None and entry.owner is session:
                self._subscriptions.remove(subscription_id)

    def register_type(self, session: WorkerSession, agent_type: str, done: Done) -> None:
        owner = self._owners.get(agent_type)
        if owner is not None and owner is not session:
            done(
                MessageError(
                    ErrorCode.AGENT_TYPE_CONFLICT,
                    f"Agent type '{agent_type}' is already registered by worker {owner.worker_id}.",
                )
            )
            return
        self._owners[agent_type] = session
        session.agent_types.add(agent_type)
        done(None)

    def unregister_type(self, session: WorkerSession, agent_type: str) -> None:
        if self._owners.get(agent_type) is session:
            del self._owners[agent_type]
            session.agent_types.discard(agent_type)

    def add_subscription(self, session: WorkerSession, spec: SubscriptionSpec, done: Done) -> None:
        try:
            self._subscriptions.add(spec, session)
        except ValueError as exc:
            done(MessageError(ErrorCode.SUBSCRIPTION_EXISTS, str(exc)))
            return
        session.subscription_ids.add(spec.id)
        done(None)

    def remove_subscription(self, subscription_id: str, done: Done) -> None:
        try:
            entry = self._subscriptions.remove(subscription_id)
        except KeyError:
            done(
                MessageError(
                    ErrorCode.SUBSCRIPTION_NOT_FOUND, f"Subscription does not exist: id {subscription_id!r}."
                )
            )
            return
        if isinstance(entry.owner, WorkerSession):
            entry.owner.subscription_ids.discard(subscription_id)
        done(None)
