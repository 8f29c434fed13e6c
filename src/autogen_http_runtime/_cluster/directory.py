"""The directory of a host in a cluster: reads from this host's view, writes through the engine. No I/O.

Reads (who serves an agent, who subscribes to a topic) come from the
:class:`~.view.ClusterView` the change log keeps current, so routing never waits on
Redis. A write goes to the engine (through the node); its ``done`` is called once this
host's view holds it: when ``register_agent_type`` is answered, this host routes by it,
and a call on another host that misses it waits for that host's view to catch up.

What this host's workers hold is also kept here, as they asked for it (their
*intent*): the log's changes for them are taken only if they still want them (a type
unregistered while its registration was on its way is not put back), and it is what the
host puts back in Redis when Redis lost it. Removals take effect here at once (nothing
may be routed to a worker that left), and in the engine a moment later.

While the engine is out of reach, writes take effect in this host's view only
(checked against it), and go to the engine when it is back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autogen_core import AgentId, TopicId

from .._exceptions import ErrorCode
from .._host.directory import ClusterStatus, Done
from .._host.session import WorkerSession
from .._host.subscriptions import SubscriptionEntry
from .._protocol.subscriptions import SubscriptionSpec
from .._protocol.wire import MessageError
from .engine import Change, Refusal, Snapshot, Write
from .view import ClusterView, WorkerInfo, agent_id_of, match_key, subscription_json

#: Called with the engine's refusal of a write, or ``None`` once the write holds here.
Finished = Callable[[Refusal | None], None]
#: Makes a write in this host's view only (the engine is out of reach): the refusal, or ``None``.
Provisional = Callable[[], Refusal | None]


class Writes(Protocol):
    """Where the directory sends its writes (the node's :class:`~.sync.ViewSync`)."""

    def submit(self, write: Write, finished: Finished | None, provisional: Provisional | None) -> None: ...

    def catch_up(self, retry: Callable[[], None]) -> bool: ...


@dataclass(eq=False)
class LocalWorker:
    """A worker connected to this host, and what it holds in the directory."""

    session: WorkerSession
    types: list[str] = field(default_factory=list)
    #: Agent id -> its type.
    pins: dict[AgentId, str] = field(default_factory=dict)
    subscriptions: dict[str, SubscriptionSpec] = field(default_factory=dict)


class ClusterDirectory:
    """A :class:`~.._host.directory.Directory` for one host of a cluster.

    Args:
        replicas: Several workers (on any hosts) may serve one agent type.
        here: This host's name.
        stand_in, replaced, host_gone: See :class:`ClusterView`.
    """

    def __init__(
        self,
        *,
        replicas: bool,
        here: str,
        stand_in: Callable[[str, WorkerInfo], WorkerSession],
        replaced: Callable[[WorkerSession, str], None],
        host_gone: Callable[[str, str], None],
        logger: logging.Logger,
    ) -> None:
        self.replicas = replicas
        self.host = here
        self._log = logger
        self._local: dict[str, LocalWorker] = {}
        self._writes: Writes | None = None
        self._status: Callable[[], ClusterStatus] | None = None
        self.view = ClusterView(
            here=here,
            local=self._session_of,
            wanted=self._wanted,
            stand_in=stand_in,
            replaced=replaced,
            host_gone=host_gone,
            logger=logger,
        )

    def attach(self, writes: Writes, status: Callable[[], ClusterStatus]) -> None:
        self._writes = writes
        self._status = status

    def _submit(self, write: Write, finished: Finished | None, provisional: Provisional | None) -> None:
        assert self._writes is not None, "the cluster node attaches itself before any worker connects"
        self._writes.submit(write, finished, provisional)

    def _session_of(self, worker_id: str) -> WorkerSession | None:
        worker = self._local.get(worker_id)
        return None if worker is None else worker.session

    def _wanted(self, kind: str, worker_id: str, item: str) -> bool:
        """Whether a worker of this host still wants what the log adds for it."""
        worker = self._local.get(worker_id)
        if worker is None:
            return False
        if kind == "t":
            return item in worker.types
        if kind == "p":
            return agent_id_of(item) in worker.pins
        return item in worker.subscriptions

    # -- reads --------------------------------------------------------------------------

    @property
    def cluster(self) -> ClusterStatus | None:
        return None if self._status is None else self._status()

    def owner(self, agent_id: AgentId) -> WorkerSession | None:
        return self.view.placement.owner(agent_id)

    def serves(self, session: WorkerSession, agent_type: str) -> bool:
        return session in self.view.placement.members(agent_type)

    def serving(self, agent_type: str) -> Sequence[WorkerSession]:
        return self.view.placement.members(agent_type)

    def recipients(self, topic: TopicId) -> list[AgentId]:
        return self.view.subscriptions.recipients(topic)

    def subscription(self, subscription_id: str) -> SubscriptionEntry | None:
        return self.view.subscriptions.get(subscription_id)

    def workers(self) -> Iterable[WorkerSession]:
        return self.view.workers.values()

    def agent_types(self) -> Mapping[str, Sequence[WorkerSession]]:
        placement = self.view.placement
        return {agent_type: tuple(placement.members(agent_type)) for agent_type in placement.types()}

    def subscriptions(self) -> Iterable[SubscriptionEntry]:
        return self.view.subscriptions

    def catch_up(self, retry: Callable[[], None]) -> bool:
        return self._writes is not None and self._writes.catch_up(retry)

    # -- the log ------------------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """Apply a change of the log; one that removes what a worker here held drops it from its intent."""
        if change.op == "s-":
            for worker in self._local.values():
                worker.subscriptions.pop(change.a, None)
        self.view.apply(change)

    def load(self, snapshot: Snapshot, *, report: bool = True) -> bool:
        """Start over from a snapshot (taken after this host put back its entries); whether it
        holds every worker connected here (one that connected meanwhile is not in it yet)."""
        held = True
        for worker_id in self.view.load(snapshot):
            worker = self._local.get(worker_id)
            if worker is not None and not worker.session.closed:
                held = False
                if report:
                    self._log.error(
                        "Worker %s is connected to this host but the cluster's directory does not hold "
                        "it (its instance is another identity's): it is not routed to until it reconnects",
                        worker_id,
                    )
        return held

    def state(self) -> str:
        """Everything this host's workers hold, as ``lua.ASSERT_HOST`` takes it."""
        return json.dumps(
            {
                "replicas": self.replicas,
                "workers": [
                    {
                        "w": worker_id,
                        "info": WorkerInfo.of(worker.session, self.host).to_json(),
                        "i": worker.session.instance,
                        "y": worker.session.identity.name,
                        "types": worker.types,
                        "pins": [[str(agent_id), agent_type] for agent_id, agent_type in worker.pins.items()],
                        "subs": [
                            [spec.id, subscription_json(spec, worker_id), match_key(spec)]
                            for spec in worker.subscriptions.values()
                        ],
                    }
                    for worker_id, worker in self._local.items()
                ],
            }
        )

    def refused_again(self, what: str, refusal: Refusal) -> None:
        """Putting back an entry of this host was refused: another host holds it now."""
        self._log.error(
            "Could not put back %s in the cluster's directory after losing it (%s %s): "
            "it is not routed to; the worker keeps it only until it reconnects",
            what,
            refusal.code,
            refusal.detail,
        )

    # -- writes -------------------------------------------------------------------------

    def add_worker(self, session: WorkerSession, done: Done) -> None:
        worker_id = session.worker_id
        self._local[worker_id] = LocalWorker(session)
        info = WorkerInfo.of(session, self.host).to_json()

        def finished(refusal: Refusal | None) -> None:
            if refusal is None:
                done(None)
                return
            self._local.pop(worker_id, None)
            self.view.drop_worker(worker_id, "refused")
            done(
                MessageError(
                    ErrorCode.FORBIDDEN,
                    f"Instance '{session.instance}' belongs to another identity (on another host); "
                    "pick an instance of your own.",
                )
            )

        def provisional() -> Refusal | None:
            self.view.apply(Change(0, "w+", worker_id, info))
            return None

        self._submit(
            Write("upsert_worker", (worker_id, info, session.instance, session.identity.name)),
            finished,
            provisional,
        )

    def remove_worker(self, session: WorkerSession) -> None:
        if self._local.pop(session.worker_id, None) is None:
            return
        self.view.drop_worker(session.worker_id, "left")
        self._submit(Write("remove_worker", (session.worker_id, "it left its host")), None, None)

    def register_type(self, session: WorkerSession, agent_type: str, done: Done) -> None:
        worker = self._local.get(session.worker_id)
        if worker is None:
            done(MessageError(ErrorCode.INVALID_REQUEST, "This worker is not connected."))
            return
        if agent_type not in worker.types:
            worker.types.append(agent_type)

        def finished(refusal: Refusal | None) -> None:
            if refusal is None:
                done(None)
                return
            if agent_type in worker.types:
                worker.types.remove(agent_type)
            done(
                MessageError(
                    ErrorCode.AGENT_TYPE_CONFLICT,
                    f"Agent type '{agent_type}' is already registered by worker {refusal.detail}.",
                )
            )

        def provisional() -> Refusal | None:
            members = self.view.placement.members(agent_type)
            # By id: a reloaded view may hold another stand-in object for this same worker.
            if members and not self.replicas and all(m.worker_id != session.worker_id for m in members):
                return Refusal("TAKEN", members[0].worker_id)
            self.view.apply(Change(0, "t+", agent_type, session.worker_id))
            return None

        self._submit(
            Write("join_type", (session.worker_id, agent_type, "1" if self.replicas else "0")),
            finished,
            provisional,
        )

    def unregister_type(self, session: WorkerSession, agent_type: str) -> None:
        worker = self._local.get(session.worker_id)
        if worker is None or agent_type not in worker.types:
            return
        worker.types.remove(agent_type)
        for agent_id in [a for a, t in worker.pins.items() if t == agent_type]:
            del worker.pins[agent_id]
        self.view.leave_type(session, agent_type)
        self._submit(Write("leave_type", (session.worker_id, agent_type)), None, None)

    def pin(self, session: WorkerSession, agent_id: AgentId, done: Done) -> None:
        worker = self._local.get(session.worker_id)
        if worker is None or session not in self.view.placement.members(agent_id.type):
            done(
                MessageError(
                    ErrorCode.INVALID_PARAMS,
                    f"Register agent type '{agent_id.type}' before pinning its agent '{agent_id}'.",
                )
            )
            return
        worker.pins[agent_id] = agent_id.type

        def finished(refusal: Refusal | None) -> None:
            if refusal is None:
                done(None)
                return
            worker.pins.pop(agent_id, None)
            done(
                MessageError(
                    ErrorCode.AGENT_TYPE_CONFLICT,
                    f"Agent '{agent_id}' is already registered by worker {refusal.detail}.",
                )
            )

        def provisional() -> Refusal | None:
            other = self.view.placement.pinned().get(agent_id)
            if other is not None and other.worker_id != session.worker_id:
                return Refusal("TAKEN", other.worker_id)
            self.view.apply(Change(0, "p+", str(agent_id), session.worker_id))
            return None

        self._submit(Write("pin", (session.worker_id, str(agent_id), agent_id.type)), finished, provisional)

    def add_subscription(self, session: WorkerSession, spec: SubscriptionSpec, done: Done) -> None:
        worker = self._local.get(session.worker_id)
        if worker is None:
            done(MessageError(ErrorCode.INVALID_REQUEST, "This worker is not connected."))
            return
        worker.subscriptions[spec.id] = spec
        text = subscription_json(spec, session.worker_id)

        def finished(refusal: Refusal | None) -> None:
            if refusal is None:
                done(None)
                return
            worker.subscriptions.pop(spec.id, None)
            done(
                MessageError(
                    ErrorCode.SUBSCRIPTION_EXISTS, f"Subscription already exists: id {refusal.detail!r}."
                )
            )

        def provisional() -> Refusal | None:
            table = self.view.subscriptions
            if spec.id in table:
                return Refusal("EXISTS", spec.id)
            same = table.same_match(spec)
            if same is not None and (not self.replicas or same.owner is session):
                return Refusal("EXISTS", same.spec.id)
            self.view.apply(Change(0, "s+", spec.id, text))
            return None

        self._submit(
            Write(
                "add_subscription",
                (session.worker_id, spec.id, text, match_key(spec), "1" if self.replicas else "0"),
            ),
            finished,
            provisional,
        )

    def remove_subscription(self, subscription_id: str, done: Done) -> None:
        entry = self.view.subscriptions.get(subscription_id)
        if entry is None:
            done(
                MessageError(
                    ErrorCode.SUBSCRIPTION_NOT_FOUND, f"Subscription does not exist: id {subscription_id!r}."
                )
            )
            return
        owner = entry.owner
        if isinstance(owner, WorkerSession) and (worker := self._local.get(owner.worker_id)) is not None:
            worker.subscriptions.pop(subscription_id, None)
        self.view.drop_subscription(subscription_id)
        # Answered once the engine has it too: gone from every host's view (or a refusal:
        # someone removed it meanwhile, which is as good).
        self._submit(Write("remove_subscription", (subscription_id,)), lambda _refusal: done(None), None)
