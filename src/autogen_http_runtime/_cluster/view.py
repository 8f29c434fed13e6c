"""This host's copy of its cluster's directory, kept current by the change log. No I/O.

The view holds a session for every worker of the cluster: the worker's own session for
those connected here, and a stand-in (``remote`` set) for those connected to other hosts,
so that the routing core routes to both alike. It changes only by :meth:`ClusterView.apply`
(a change from the log, or one this host makes while the engine is out of reach) and
:meth:`ClusterView.load` (a snapshot).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from autogen_core import AgentId

from .._host.placement import Placement
from .._host.session import WorkerSession
from .._host.subscriptions import SubscriptionTable
from .._protocol.subscriptions import SubscriptionSpec, subscription_from_wire, subscription_to_wire
from .._protocol.wire import MessageError
from .engine import Change, Snapshot


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What the cluster knows of a worker, from its entry in the directory."""

    host: str
    name: str
    instance: str
    identity: str
    connected_at: float
    max_message_size: int

    @classmethod
    def of(cls, session: WorkerSession, host: str) -> WorkerInfo:
        return cls(
            host,
            session.name,
            session.instance,
            session.identity.name,
            session.connected_at,
            session.max_message_size,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "h": self.host,
                "n": self.name,
                "i": self.instance,
                "y": self.identity,
                "t": self.connected_at,
                "m": self.max_message_size,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerInfo:
        raw = json.loads(text)
        return cls(str(raw["h"]), str(raw["n"]), str(raw["i"]), str(raw["y"]), float(raw["t"]), int(raw["m"]))


def subscription_json(spec: SubscriptionSpec, worker_id: str) -> str:
    return json.dumps({**subscription_to_wire(spec), "w": worker_id}, separators=(",", ":"))


def match_key(spec: SubscriptionSpec) -> str:
    """What subscriptions that match the same way share (the ``match`` hash's field)."""
    return f"{spec.kind}\0{spec.topic}\0{spec.agent_type}"


def agent_id_of(text: str) -> AgentId:
    agent_type, _, key = text.partition("/")
    return AgentId(agent_type, key)


def _member_key(session: WorkerSession) -> str:
    return session.instance or session.worker_id


class ClusterView:
    """Every worker, agent type, pin and subscription of the cluster, as this host knows them.

    Args:
        here: This host's name.
        local: The session of a worker connected here, by id (``None``: not, or no more).
        wanted: Whether a worker connected here still wants what a change adds for it
            (``"t"``, ``"p"`` or ``"s"``, its id, the type, agent id or subscription id).
        stand_in: Makes the session standing for a worker connected to another host.
        replaced: Called when the log drops a worker still connected here: it connected
            again through another host.
        host_gone: Called when the log says another host is gone, and why.
    """

    def __init__(
        self,
        *,
        here: str,
        local: Callable[[str], WorkerSession | None],
        wanted: Callable[[str, str, str], bool],
        stand_in: Callable[[str, WorkerInfo], WorkerSession],
        replaced: Callable[[WorkerSession, str], None],
        host_gone: Callable[[str, str], None],
        logger: logging.Logger,
    ) -> None:
        self._here = here
        self._local = local
        self._wanted = wanted
        self._stand_in = stand_in
        self._replaced = replaced
        self._host_gone = host_gone
        self._log = logger
        self.version = 0
        self.epoch = ""
        self.placement: Placement[WorkerSession] = Placement(_member_key)
        # Shared: the engine refused what may not share a match; the view takes what it holds.
        self.subscriptions = SubscriptionTable(shared=True)
        self.workers: dict[str, WorkerSession] = {}

    # -- changes ------------------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """Apply one change (from the log, or made here while the engine is out of reach)."""
        op, a, b = change.op, change.a, change.b
        if op == "w+":
            self._add_worker(a, WorkerInfo.from_json(b))
        elif op == "w-":
            self.drop_worker(a, b, by_log=True)
        elif op == "t+":
            if (session := self._target(b, "t", a)) is not None:
                self.placement.join(a, session)
                session.agent_types.add(a)
        elif op == "t-":
            if (session := self.workers.get(b)) is not None:
                self.leave_type(session, a)
        elif op == "p+":
            if (session := self._target(b, "p", a)) is not None:
                self.placement.unpin(agent_id_of(a))
                self.placement.pin(agent_id_of(a), session)
        elif op == "p-":
            self.placement.unpin(agent_id_of(a))
        elif op == "s+":
            self._add_subscription(b)
        elif op == "s-":
            self.drop_subscription(a)
        elif op == "h-":
            self.drop_host(a)
            if a != self._here:
                self._host_gone(a, b or "its lease expired")
        if change.version:
            self.version = change.version

    def _target(self, worker_id: str, kind: str, item: str) -> WorkerSession | None:
        """The session a change adds ``item`` for, unless it is here and no longer wants it."""
        session = self.workers.get(worker_id)
        if session is not None and session.remote is None and not self._wanted(kind, worker_id, item):
            return None
        return session

    def _add_worker(self, worker_id: str, info: WorkerInfo) -> WorkerSession | None:
        if info.host == self._here:
            session = self._local(worker_id)  # None: it left meanwhile
        else:
            session = self.workers.get(worker_id) or self._stand_in(worker_id, info)
        if session is not None:
            self.workers[worker_id] = session
        return session

    def drop_worker(self, worker_id: str, why: str, *, by_log: bool = False) -> None:
        session = self.workers.pop(worker_id, None)
        if session is None:
            return
        for agent_type in list(session.agent_types):
            self.placement.leave(agent_type, session)
        for subscription_id in list(session.subscription_ids):
            entry = self.subscriptions.get(subscription_id)
            if entry is not None and entry.owner is session:
                self.subscriptions.remove(subscription_id)
        if session.remote is not None:
            session.agent_types.clear()
            session.subscription_ids.clear()
        elif by_log and not session.closed and self._local(worker_id) is session:
            # Dropped by another host while connected here: it connected again through that one.
            self._replaced(session, why)

    def drop_host(self, host: str) -> None:
        """Drop the workers of another host (gone)."""
        for worker_id in [
            w for w, s in self.workers.items() if s.remote is not None and s.remote.name == host
        ]:
            self.drop_worker(worker_id, f"its host {host} is gone")

    def leave_type(self, session: WorkerSession, agent_type: str) -> None:
        self.placement.leave(agent_type, session)
        session.agent_types.discard(agent_type)

    def _add_subscription(self, text: str) -> None:
        try:
            raw = json.loads(text)
            spec = subscription_from_wire(raw)
        except (ValueError, MessageError):
            self._log.warning("Ignored a subscription the cluster's directory holds that cannot be read")
            return
        session = self._target(str(raw.get("w")), "s", spec.id)
        if session is None or spec.id in self.subscriptions:
            return
        try:
            self.subscriptions.add(spec, session)
        except ValueError:
            return  # this worker holds one matching the same way: the engine would have refused
        session.subscription_ids.add(spec.id)

    def drop_subscription(self, subscription_id: str) -> None:
        entry = self.subscriptions.get(subscription_id)
        if entry is None:
            return
        self.subscriptions.remove(subscription_id)
        if isinstance(entry.owner, WorkerSession):
            entry.owner.subscription_ids.discard(subscription_id)

    # -- snapshots ----------------------------------------------------------------------

    def load(self, snapshot: Snapshot) -> list[str]:
        """Start over from ``snapshot``.

        Returns:
            The workers connected here that it does not hold (another host took their
            instance, or their registration was refused while the engine was away).
        """
        old = self.workers
        self.workers = {}
        self.placement = Placement(_member_key)
        self.subscriptions = SubscriptionTable(shared=True)
        kept: set[str] = set()
        # Workers of other hosts get new stand-ins (calls in flight to them are matched by
        # host, not by stand-in); those of this host start over from what the snapshot holds.
        for worker_id, text in snapshot.workers.items():
            session = self._add_worker(worker_id, WorkerInfo.from_json(text))
            if session is not None:
                session.agent_types.clear()
                session.subscription_ids.clear()
                kept.add(worker_id)
        for agent_type, members in snapshot.types.items():
            for worker_id in members:
                self.apply(Change(0, "t+", agent_type, worker_id))
        for agent, worker_id in snapshot.pins.items():
            self.apply(Change(0, "p+", agent, worker_id))
        for subscription_id in sorted(snapshot.subscriptions):
            self._add_subscription(snapshot.subscriptions[subscription_id])
        self.epoch, self.version = snapshot.epoch, snapshot.version
        return [w for w, s in old.items() if s.remote is None and w not in kept]
