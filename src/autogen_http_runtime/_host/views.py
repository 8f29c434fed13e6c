"""Read-only views of a routing core: what ``/metrics``, the dashboard and the HTTP API show.

Every listing of workers, agent types and subscriptions is built here, once, from the
core's directory and sessions; the readers format it. Nothing here changes the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .._protocol.descriptions import A2ASkill
from .._protocol.subscriptions import SubscriptionKind
from .core import RoutingCore
from .session import WorkerSession


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One connected worker (that said hello)."""

    worker_id: str
    name: str
    instance: str
    identity: str
    connected_at: float
    agent_types: list[str]
    subscriptions: int
    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    queued_bytes: int
    #: Calls it made that are in flight now, and calls routed to it it has not answered yet.
    calls_in_flight: int
    calls_serving: int
    #: Calls it made, and calls routed to it, since it connected.
    calls_made: int
    calls_served: int
    max_message_size: int
    #: In a cluster, the host it is connected to; ``None`` for a host alone. (A worker on
    #: another host shows its identity, types and subscriptions; its traffic counters are 0.)
    host: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    id: str
    kind: SubscriptionKind
    agent_type: str
    topic: str
    #: The worker that added it (it goes when that worker does); ``None`` for none connected.
    worker_id: str | None


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One worker serving an agent type."""

    worker_id: str
    name: str
    #: Calls and event copies routed to it for this type.
    routed: int
    #: With replicas: the agent ids of this type placed on it so far (``None`` without).
    agent_ids: int | None


@dataclass(frozen=True, slots=True)
class AgentTypeView:
    agent_type: str
    replicas: list[ReplicaView]


class Traffic(NamedTuple):
    """Frames and bytes over every worker connection since the host started."""

    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    queued_bytes: int


def worker_view(session: WorkerSession, host: str | None = None) -> WorkerView:
    return WorkerView(
        worker_id=session.worker_id,
        name=session.name,
        instance=session.instance,
        identity=session.identity.name,
        connected_at=session.connected_at,
        agent_types=sorted(session.agent_types),
        subscriptions=len(session.subscription_ids),
        frames_in=session.frames_in,
        frames_out=session.frames_out,
        bytes_in=session.bytes_in,
        bytes_out=session.bytes_out,
        queued_bytes=session.queued_bytes,
        calls_in_flight=len(session.calls_made),
        calls_serving=len(session.calls_served),
        calls_made=session.total_calls_made,
        calls_served=session.total_calls_served,
        max_message_size=session.max_message_size,
        host=host,
    )


def workers(core: RoutingCore) -> list[WorkerView]:
    """The connected workers (in a cluster, of every host), oldest connection first."""
    here = core.directory.host or None
    return [
        worker_view(s, s.remote.name if s.remote is not None else here)
        for s in sorted(core.directory.workers(), key=lambda s: s.connected_at)
    ]


def worker_count(core: RoutingCore) -> int:
    return sum(1 for _ in core.directory.workers())


def agent_type_views(core: RoutingCore) -> list[AgentTypeView]:
    """Each registered agent type and its workers, sorted by type."""
    tracked = core.directory.replicas
    return [
        AgentTypeView(
            agent_type,
            [
                ReplicaView(
                    worker_id=s.worker_id,
                    name=s.name,
                    routed=s.routed_by_type.get(agent_type, 0),
                    agent_ids=len(s.placed_keys.get(agent_type, ())) if tracked else None,
                )
                for s in sessions
            ],
        )
        for agent_type, sessions in sorted(core.directory.agent_types().items())
    ]


def a2a_skills(core: RoutingCore) -> dict[str, A2ASkill]:
    """Each agent type a worker described for A2A, and how, sorted by type."""
    return core.descriptions.a2a_skills()


def a2a_skill(core: RoutingCore, agent_type: str) -> A2ASkill | None:
    """How ``agent_type`` is offered to A2A clients, or ``None`` if it is not."""
    return core.descriptions.a2a_skill(agent_type)


def subscriptions(core: RoutingCore) -> list[SubscriptionView]:
    """Every subscription, in the order they were added."""
    return [
        SubscriptionView(
            id=entry.spec.id,
            kind=entry.spec.kind,
            agent_type=entry.spec.agent_type,
            topic=entry.spec.topic,
            worker_id=entry.owner.worker_id if isinstance(entry.owner, WorkerSession) else None,
        )
        for entry in core.directory.subscriptions()
    ]


def subscription_count(core: RoutingCore) -> int:
    return sum(1 for _ in core.directory.subscriptions())


def traffic(core: RoutingCore) -> Traffic:
    """Totals over the workers that disconnected and those connected now (queued: connected only)."""
    stats = core.stats
    frames_in, frames_out = stats.closed_frames_in, stats.closed_frames_out
    bytes_in, bytes_out, queued = stats.closed_bytes_in, stats.closed_bytes_out, 0
    for session in core.sessions.values():
        if session.local:
            continue
        frames_in += session.frames_in
        frames_out += session.frames_out
        bytes_in += session.bytes_in
        bytes_out += session.bytes_out
        queued += session.queued_bytes
    return Traffic(frames_in, frames_out, bytes_in, bytes_out, queued)
