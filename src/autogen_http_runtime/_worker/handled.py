"""At-least-once events on the worker: the ids each agent handled, and the acknowledgements.

A copy from a host with at-least-once delivery carries ``agdelivery``. Once its handler
returned, the worker acknowledges it (``event.ack``, the acknowledgements of one turn of
the event loop in one notification); a handler that raised is reported as failed, and the
host delivers the copy again later. The host may deliver a copy again that was handled (its
acknowledgement was lost with a connection or a host): the worker remembers the CloudEvents
ids each agent handled (the last :data:`WINDOW` per agent id, for the last
:data:`MAX_AGENTS` agent ids) and skips such a copy, acknowledging it again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from autogen_core import AgentId

from .._exceptions import HostConnectionError
from .._protocol import wire
from .._protocol.wire import Method
from .connection import HostConnection

#: What :meth:`HandledEvents.start` says to do with a copy.
RUN: Final = "run"
HANDLED: Final = "handled"
RUNNING: Final = "running"
#: Event ids remembered per agent id.
WINDOW: Final = 1024
#: Agent ids whose handled events are remembered (the least recently used are forgotten first).
MAX_AGENTS: Final = 10_000


#: Acknowledgements and failures in one ``event.ack``, at most (about 10 and 30 KB).
_IDS_PER_ACK = 500
_FAILED_PER_ACK = 50


class HandledEvents:
    """The event ids each agent handled or is handling, and the acknowledgements to send."""

    def __init__(self, window: int = WINDOW, max_agents: int = MAX_AGENTS) -> None:
        self._window = window
        self._max_agents = max_agents
        self._handled: OrderedDict[AgentId, OrderedDict[str, None]] = OrderedDict()
        self._running: set[tuple[AgentId, str]] = set()
        self._connection: HostConnection | None = None
        self._ids: list[str] = []
        self._failed: list[list[str]] = []
        self._scheduled = False
        #: Copies skipped because their agent handled (or is handling) them already.
        self.skipped = 0

    def start(self, agent: AgentId, event_id: str) -> str:
        """What to do with a copy of ``event_id`` for ``agent``: :data:`RUN` its handler (now
        marked running), skip it as :data:`HANDLED` (acknowledge it again), or skip it as
        :data:`RUNNING` (not acknowledged: the run in progress acknowledges it if it ends)."""
        handled = self._handled.get(agent)
        if handled is not None and event_id in handled:
            self.skipped += 1
            return HANDLED
        if (agent, event_id) in self._running:
            self.skipped += 1
            return RUNNING
        self._running.add((agent, event_id))
        return RUN

    def finish(self, agent: AgentId, event_id: str, ok: bool) -> None:
        self._running.discard((agent, event_id))
        if not ok:
            return
        handled = self._handled.get(agent)
        if handled is None:
            handled = self._handled[agent] = OrderedDict()
            if len(self._handled) > self._max_agents:
                self._handled.popitem(last=False)
        else:
            self._handled.move_to_end(agent)
        handled[event_id] = None
        if len(handled) > self._window:
            handled.popitem(last=False)

    def use(self, connection: HostConnection) -> None:
        """Copies arrive on ``connection``: acknowledgements go there from now on (those a
        lost connection could not take too)."""
        if connection is not self._connection:
            self._connection = connection
            if self._ids or self._failed:
                connection.loop.call_soon(self._flush)

    def ack(self, delivery_id: str, failed: str | None = None) -> None:
        """Acknowledge a copy (or report its handler ``failed``) at the end of this loop turn,
        on the connection copies arrive on now (a handler may outlive the one its copy came on)."""
        if failed is None:
            self._ids.append(delivery_id)
        else:
            self._failed.append([delivery_id, failed])
        if not self._scheduled and self._connection is not None:
            self._scheduled = True
            self._connection.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        connection = self._connection
        if connection is None or connection.closed or not (self._ids or self._failed):
            return  # kept for the next connection (see use())
        # In pieces that fit any sane message size limit (a failure reason is <= 500 characters).
        while self._ids or self._failed:
            ids, failed = self._ids[:_IDS_PER_ACK], self._failed[:_FAILED_PER_ACK]
            params: wire.JsonObject = {"ids": ids}
            if failed:
                params["failed"] = failed
            try:
                connection.notify(Method.EVENT_ACK, params)
            except HostConnectionError:
                return
            del self._ids[: len(ids)], self._failed[: len(failed)]
