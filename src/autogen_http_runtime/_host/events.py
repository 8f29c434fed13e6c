"""Events the routing core fans out: one copy for each agent subscribed to the topic. No I/O."""

from __future__ import annotations

import logging

from autogen_core import TopicId

from .._exceptions import ErrorCode
from .._logging import call_extra
from .._protocol import wire
from .._protocol.wire import MessageError
from .directory import Directory
from .guard import Guard
from .session import WorkerSession
from .stats import RouterStats


class EventFanOut:
    """Delivers each published event to the workers serving its subscribers, at most once each."""

    def __init__(
        self, directory: Directory, guard: Guard, stats: RouterStats, logger: logging.Logger
    ) -> None:
        self._directory = directory
        self._guard = guard
        self._stats = stats
        self._log = logger

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
        for recipient in self._directory.recipients(topic):
            if recipient == sender:
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
