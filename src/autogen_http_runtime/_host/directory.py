"""The directory: which worker serves each agent, and which agents subscribe to each topic.

The routing core never reads a table of its own: it asks a :class:`Directory`. The core
never awaits, so a directory answers reads at once from this host's view, and takes
writes with a ``done`` callback, called once the change holds everywhere it must (at
once in memory; once a shared engine has confirmed it, in a cluster). The core sends the
worker its answer from that callback, so a registration is acknowledged only when it
routes.

:class:`LocalDirectory` is the in-memory directory of one host: each agent type served by
one worker, or, with replicas, by several, each agent id placed on one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autogen_core import AgentId, TopicId

from .._exceptions import ErrorCode
from .._protocol.subscriptions import SubscriptionSpec
from .._protocol.wire import MessageError
from .placement import Placement
from .session import WorkerSession
from .subscriptions import SubscriptionEntry, SubscriptionTable

__all__ = ["ClusterStatus", "Directory", "Done", "LocalDirectory"]

#: Called once a write holds, with ``None``, or with the error to answer the worker with.
Done = Callable[[MessageError | None], None]


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """How a host stands in its cluster, for probes, metrics and the dashboard."""

    #: The cluster's name, and this host's in it.
    name: str
    host: str
    #: Why this host cannot reach the cluster's engine now (calls to other hosts fail), or ``None``.
    unavailable: str | None
    #: The hosts of the cluster this host knows alive, itself included.
    hosts: tuple[str, ...]
    #: Frames and bytes sent to and received from each other host, and frames refused.
    frames_out: Mapping[str, int] = field(default_factory=dict)
    frames_in: Mapping[str, int] = field(default_factory=dict)
    bytes_out: int = 0
    bytes_in: int = 0
    refused: int = 0
    #: Times this host put its entries back after losing them (Redis restarted empty, or
    #: the host was declared gone while it lived).
    reasserted: int = 0
    #: The other hosts this one has a direct link open to (``cluster_link_url``).
    links: tuple[str, ...] = ()


class Directory(Protocol):
    """What the routing core asks about workers, agents and subscriptions."""

    # -- reads: answered from this host's view, at once ------------------------------------

    #: Whether several workers may serve one agent type (each agent id placed on one).
    replicas: bool
    #: This host's name in its cluster; ``""`` for a host alone.
    host: str

    @property
    def cluster(self) -> ClusterStatus | None:
        """How this host stands in its cluster; ``None`` for a host alone."""

    def owner(self, agent_id: AgentId) -> WorkerSession | None:
        """The worker that serves ``agent_id``, or ``None`` if none does."""

    def serves(self, session: WorkerSession, agent_type: str) -> bool:
        """Whether ``session`` registered ``agent_type``."""

    def serving(self, agent_type: str) -> Sequence[WorkerSession]:
        """The workers serving ``agent_type``: its replicas, in the order they joined."""

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

    def catch_up(self, retry: Callable[[], None]) -> bool:
        """Nothing serves a call's recipient in this host's view: if the view may be behind
        (another host registered it a moment ago), call ``retry`` once it has caught up (within
        a bound) and return ``True``; else return ``False`` and the call fails."""

    def add_worker(self, session: WorkerSession, done: Done) -> None:
        """A worker said hello (``FORBIDDEN`` if its instance belongs to another identity on
        another host)."""

    def remove_worker(self, session: WorkerSession) -> None:
        """A worker left: forget its agent types and subscriptions."""

    def register_type(self, session: WorkerSession, agent_type: str, done: Done) -> None:
        """``session`` serves ``agent_type`` from now on: alone, or as one of its replicas
        (``AGENT_TYPE_CONFLICT`` if it may not)."""

    def unregister_type(self, session: WorkerSession, agent_type: str) -> None:
        """``session`` no longer serves ``agent_type`` (nothing if it did not)."""

    def pin(self, session: WorkerSession, agent_id: AgentId, done: Done) -> None:
        """``agent_id`` lives on ``session`` whatever the placement (``AGENT_TYPE_CONFLICT`` if
        another worker has it)."""

    def add_subscription(self, session: WorkerSession, spec: SubscriptionSpec, done: Done) -> None:
        """Add a subscription owned by ``session`` (``SUBSCRIPTION_EXISTS`` if one matches the same way)."""

    def remove_subscription(self, subscription_id: str, done: Done) -> None:
        """Remove a subscription (``SUBSCRIPTION_NOT_FOUND`` if none has this id)."""


class LocalDirectory:
    """The directory of one host, in memory.

    Args:
        replicas: Several workers may serve one agent type; each agent id is then placed on
            one of them (:mod:`.placement`). Off: a second worker registering a type that is
            served already is refused (``AGENT_TYPE_CONFLICT``), as on the gRPC runtime.
    """

    host = ""
    cluster = None

    def __init__(self, *, replicas: bool = False) -> None:
        self.replicas = replicas
        self._placement: Placement[WorkerSession] = Placement(_member_key)
        self._workers: dict[str, WorkerSession] = {}
        self._subscriptions = SubscriptionTable(shared=replicas)

    def owner(self, agent_id: AgentId) -> WorkerSession | None:
        return self._placement.owner(agent_id)

    def serves(self, session: WorkerSession, agent_type: str) -> bool:
        return session in self._placement.members(agent_type)

    def serving(self, agent_type: str) -> Sequence[WorkerSession]:
        return self._placement.members(agent_type)

    def recipients(self, topic: TopicId) -> list[AgentId]:
        return self._subscriptions.recipients(topic)

    def subscription(self, subscription_id: str) -> SubscriptionEntry | None:
        return self._subscriptions.get(subscription_id)

    def workers(self) -> Iterable[WorkerSession]:
        return self._workers.values()

    def agent_types(self) -> Mapping[str, Sequence[WorkerSession]]:
        return {
            agent_type: tuple(self._placement.members(agent_type)) for agent_type in self._placement.types()
        }

    def subscriptions(self) -> Iterable[SubscriptionEntry]:
        return self._subscriptions

    def catch_up(self, retry: Callable[[], None]) -> bool:
        return False  # this host's view is the whole directory

    def add_worker(self, session: WorkerSession, done: Done) -> None:
        self._workers[session.worker_id] = session
        done(None)

    def remove_worker(self, session: WorkerSession) -> None:
        self._workers.pop(session.worker_id, None)
        for agent_type in session.agent_types:
            self._placement.leave(agent_type, session)
        for subscription_id in session.subscription_ids:
            entry = self._subscriptions.get(subscription_id)
            if entry is not None and entry.owner is session:
                self._subscriptions.remove(subscription_id)

    def register_type(self, session: WorkerSession, agent_type: str, done: Done) -> None:
        members = self._placement.members(agent_type)
        if members and session not in members and not self.replicas:
            owner = members[0]
            done(
                MessageError(
                    ErrorCode.AGENT_TYPE_CONFLICT,
                    f"Agent type '{agent_type}' is already registered by worker {owner.worker_id}.",
                )
            )
            return
        self._placement.join(agent_type, session)
        session.agent_types.add(agent_type)
        done(None)

    def unregister_type(self, session: WorkerSession, agent_type: str) -> None:
        if session in self._placement.members(agent_type):
            self._placement.leave(agent_type, session)
            session.agent_types.discard(agent_type)

    def pin(self, session: WorkerSession, agent_id: AgentId, done: Done) -> None:
        if session not in self._placement.members(agent_id.type):
            done(
                MessageError(
                    ErrorCode.INVALID_PARAMS,
                    f"Register agent type '{agent_id.type}' before pinning its agent '{agent_id}'.",
                )
            )
            return
        other = self._placement.pin(agent_id, session)
        if other is not None:
            done(
                MessageError(
                    ErrorCode.AGENT_TYPE_CONFLICT,
                    f"Agent '{agent_id}' is already registered by worker {other.worker_id}.",
                )
            )
            return
        done(None)

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


def _member_key(session: WorkerSession) -> str:
    """What a worker is placed by: its own id for itself, the same across its reconnections."""
    return session.instance or session.worker_id
