"""Events the routing core fans out: one copy for each agent subscribed to the topic. No I/O.

At most once by default: each copy is queued for its recipient's worker and forgotten. With
at-least-once delivery (:mod:`.deliveries`), each copy goes to the store instead, which
hands it back to :meth:`EventFanOut.deliver` until the recipient's worker acknowledges it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from autogen_core import AgentId, TopicId

from .._exceptions import ErrorCode
from .._logging import call_extra
from .._protocol import wire
from .._protocol.wire import MessageError
from .deliveries import Deliveries, delivery_of, with_delivery
from .directory import Directory
from .guard import Guard
from .session import MAX_UNACKED, WorkerSession
from .stats import RouterStats

#: Recipients :meth:`EventFanOut.deliver` keeps parsed, at most.
_MAX_CACHED_IDS = 10_000


class EventFanOut:
    """Delivers each published event to the workers serving its subscribers: at most once each,
    or, with a :class:`Deliveries` store, at least once."""

    def __init__(
        self, directory: Directory, guard: Guard, stats: RouterStats, logger: logging.Logger
    ) -> None:
        self._directory = directory
        self._guard = guard
        self._stats = stats
        self._log = logger
        #: The store of copies with at-least-once delivery; ``None``: at most once.
        self.deliveries: Deliveries | None = None
        #: A worker :meth:`deliver` sent to that is now behind: the reader holds its copies.
        self.behind: WorkerSession | None = None
        #: Recipients of stored copies, parsed (making an ``AgentId`` checks it: not free).
        self._agent_ids: dict[str, AgentId] = {}

    def publish(self, session: WorkerSession, event: wire.Event) -> WorkerSession | None:
        """Queue a copy of ``event`` for each subscribed agent but its sender.

        Counts the copies queued on ``session.copies_delivered``.

        Returns:
            A worker a copy was queued for that is now behind, if any.

        Raises:
            MessageError: The publisher may not publish it (access policy, rate limit).
        """
        if not session.greeted:
            raise MessageError(ErrorCode.INVALID_REQUEST, "Send 'hello' before publishing.")
        attributes = event.attributes
        attributes.pop(wire.EXT_RECIPIENT, None)
        sender = wire.event_agent(attributes, wire.EXT_SENDER)
        if self._guard.access is not None:
            self._guard.authorize(session, "publish", event.topic_type, None)
            self._guard.verify_sender(session, sender, None)
        self._guard.take_rate(session, None)
        stats = self._stats
        stats.events_published += 1
        topic = TopicId(event.topic_type, event.topic_source)
        behind: WorkerSession | None = None
        replicas = self._directory.replicas
        deliveries = self.deliveries
        for recipient in self._directory.recipients(topic):
            if recipient == sender:
                continue
            if deliveries is not None:  # kept until handled; delivered by deliver()
                deliveries.store(
                    str(recipient), wire.encode_bytes(wire.event_for_recipient(attributes, recipient))
                )
                session.copies_delivered += 1
                continue
            target = self._directory.owner(recipient)
            if target is None:
                stats.event_copies_dropped += 1
                self._log.debug(
                    "No worker serves %s, subscribed to %s; event %s skipped", recipient, topic, event
                )
                continue
            if target.remote is not None and target.remote.unavailable is not None:
                stats.event_copies_dropped += 1  # served on another host, out of reach now
                continue
            data = wire.encode_bytes(wire.event_for_recipient(attributes, recipient))
            size = len(data)
            if size > target.max_message_size:
                self._log.warning(
                    "Event %s of %d bytes too large for worker %s; not delivered to %s",
                    attributes.get("id"),
                    size,
                    target.worker_id,
                    recipient,
                    extra=call_extra(None, attributes.get("traceparent"), event_id=attributes.get("id")),
                )
                stats.event_copies_dropped += 1
                continue
            stats.event_copies_delivered += 1
            session.copies_delivered += 1
            target.routed(recipient.type, recipient.key, replicas)
            target.send_encoded(data)
            if target.backlogged:
                behind = target
        return behind

    # -- at-least-once ------------------------------------------------------------------

    def deliver(self, delivery_id: str, recipient: str, copy: bytes) -> str | None:
        """Send a stored copy to its recipient's owner now (a worker here, or on another host).

        Returns:
            Why it was not sent (it stays pending, and is delivered again later), or ``None``.
        """
        deliveries = self.deliveries
        assert deliveries is not None
        agent_id = self._agent_id(recipient)
        target = self._directory.owner(agent_id)
        if target is None:
            reason = f"no worker serves {recipient}"
        elif target.remote is not None and target.remote.unavailable is not None:
            reason = f"its worker's host is out of reach ({target.remote.unavailable})"
        elif len(copy) > target.max_message_size:
            reason = f"{len(copy)} bytes, more than worker {target.worker_id} takes"
        else:
            target.routed(agent_id.type, agent_id.key, self._directory.replicas)
            deliveries.counts.delivered += 1
            self._stats.event_copies_delivered += 1
            if target.remote is not None or target.acks:
                target.send_encoded(with_delivery(copy, delivery_id))
                if target.remote is None:
                    _expect_ack(target, delivery_id)
            else:  # a worker that does not acknowledge: delivered once sent
                target.send_encoded(copy)
                deliveries.acked((delivery_id,))
            if target.backlogged:
                self.behind = target
            return None
        deliveries.failed(delivery_id, reason)
        return reason

    def owner_of(self, recipient: str) -> WorkerSession | None:
        """Who :meth:`deliver` would send a copy for ``recipient`` (``type/key``) to now."""
        return self._directory.owner(self._agent_id(recipient))

    def _agent_id(self, recipient: str) -> AgentId:
        agent_id = self._agent_ids.get(recipient)
        if agent_id is None:
            if len(self._agent_ids) >= _MAX_CACHED_IDS:
                self._agent_ids.clear()
            agent_type, _, key = recipient.partition("/")
            agent_id = self._agent_ids[recipient] = AgentId(agent_type, key)
        return agent_id

    def hand_over(self, target: WorkerSession | None, copy: bytes) -> None:
        """Another host sent a copy for a worker here (``None``: it left): send it on.

        A stored copy (it carries ``agdelivery``) for a worker that does not acknowledge is
        acknowledged for it once sent; one for a worker that left stays pending.
        """
        if target is None:
            self._stats.event_copies_dropped += 1
            return
        self._stats.event_copies_delivered += 1
        target.send_encoded(copy)
        if self.deliveries is not None:
            delivery_id = delivery_of(copy)
            if delivery_id is not None:
                if target.acks:
                    _expect_ack(target, delivery_id)
                else:
                    self.deliveries.acked((delivery_id,))

    def acknowledged(self, session: WorkerSession, params: Mapping[str, object]) -> None:
        """``event.ack`` from a worker: ``ids`` handled, ``failed`` ``[[id, reason], ...]``.

        Raises:
            MessageError: The params are not of that shape.
        """
        ids, failed = params.get("ids", []), params.get("failed", [])
        if not isinstance(ids, list) or not all(isinstance(one, str) for one in ids):
            raise MessageError(ErrorCode.INVALID_PARAMS, "event.ack: 'ids' must be a list of strings.")
        if not isinstance(failed, list) or not all(
            isinstance(one, list) and len(one) == 2 and all(isinstance(x, str) for x in one) for one in failed
        ):
            raise MessageError(ErrorCode.INVALID_PARAMS, "event.ack: 'failed' must be [[id, reason], ...].")
        if self.deliveries is None:
            return  # at most once: nothing to acknowledge
        # Only copies sent to this session: a worker cannot settle another's (nor made-up ids).
        unacked = session.unacked
        ids = [one for one in ids if unacked.pop(one, False) is None]
        if ids:
            self.deliveries.acked(ids)
        for delivery_id, reason in failed:
            if unacked.pop(delivery_id, False) is None:
                self.deliveries.failed(delivery_id, reason[:500])


def _expect_ack(session: WorkerSession, delivery_id: str) -> None:
    """Let ``session`` acknowledge ``delivery_id`` (the oldest id is forgotten past MAX_UNACKED)."""
    unacked = session.unacked
    if len(unacked) >= MAX_UNACKED:
        del unacked[next(iter(unacked))]
    unacked[delivery_id] = None
