"""What carries one session's messages between its peer and the routing core, and back-pressure.

Three transports implement :class:`Transport`: the worker WebSocket on the host's direct
path and on the ASGI path (``_http/worker_socket.py``), and the HTTP API's in-process
caller (``_http/local.py``). What they share is here, once:

- **In**: :meth:`Transport.receive` routes what the peer sent, in order. When routing a
  call or an event leaves a worker the core sends to more than ``high_water`` bytes
  behind, the transport stops reading from its own peer (:meth:`Transport.pause_reading`)
  and holds what it had already read, until that worker has caught up. So a fast sender
  waits for its slowest receiver, and the host's memory stays bounded. An answer never
  holds its sender back: the worker answering serves other callers too.
- **Out**: the core queues messages in ``session.outbox``; :meth:`Transport.wake` is
  called each time, and the subclass writes them its own way. Each transport times its
  own peer: one that stays more than ``high_water`` bytes behind for
  ``slow_consumer_timeout`` seconds is dropped as too slow, whoever sent it the messages.
- **The end**: :meth:`Transport.end` reports why the connection ended, once the messages
  held before it have been routed.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from typing import Union

from .._protocol.wire import Message, MessageError
from .core import RoutingCore
from .session import CLOSE_POLICY_VIOLATION, WorkerSession

#: What a peer sent: one WebSocket message's text (its bytes when ASCII), ``None`` for a
#: binary message, or messages already decoded (an HTTP request's).
Received = Union[str, bytes, None, Sequence[Union[Message, MessageError]]]


class Transport(ABC):
    """Carries one session's messages; subclasses say how to pause reading and write.

    Args:
        core: The routing core.
        session: The session this transport carries (it must be open in ``core``).
        slow_consumer_timeout: Seconds to hold this peer back for a worker that is behind.
        hello_timeout: Seconds the peer has to say hello before it is closed (1008);
            ``None`` for a peer that needs no hello.
    """

    def __init__(
        self,
        core: RoutingCore,
        session: WorkerSession,
        *,
        slow_consumer_timeout: float,
        hello_timeout: float | None = None,
    ) -> None:
        self.core = core
        self.session = session
        self._slow_consumer_timeout = slow_consumer_timeout
        self._loop = asyncio.get_running_loop()
        #: Messages read while waiting for a worker to catch up, routed once it has.
        self._held: deque[Received] | None = None
        self._waiting: asyncio.Task[None] | None = None
        #: Why the connection ended, kept while messages read before it are held.
        self._end_reason: str | None = None
        self.ended: asyncio.Future[str] = self._loop.create_future()
        # A peer that never says hello holds nothing and is not kept.
        self._hello_timer: asyncio.TimerHandle | None = (
            None if hello_timeout is None else self._loop.call_later(hello_timeout, self._hello_overdue)
        )
        #: Runs while the peer is more than ``high_water`` bytes behind; drops it when due.
        self._slow_timer: asyncio.TimerHandle | None = None
        session.outbox.listen(self.wake)
        session.on_overflow = self._cut
        session.on_behind = self._behind

    # -- what subclasses provide --------------------------------------------------------

    @abstractmethod
    def pause_reading(self) -> None:
        """Read nothing more from the peer until :meth:`resume_reading`."""

    @abstractmethod
    def resume_reading(self) -> None:
        """Read from the peer again."""

    def wake(self) -> None:  # noqa: B027 - a hook: transports that wait on the outbox need none
        """Something was queued in the session's outbox (called synchronously; must not raise)."""

    def dropped(self) -> None:  # noqa: B027 - a hook
        """The peer was cut off (too slow, revoked, expired): what it has not read is gone;
        close its connection now, and cut the socket if the close does not go through."""

    # -- in -------------------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        """Whether reading is held back for a worker that is behind."""
        return self._held is not None

    def receive(self, received: Received) -> None:
        """Route what the peer sent, or hold it while reading is held back."""
        if self._held is not None:
            self._held.append(received)
            return
        behind = self._route(received)
        if behind is not None:
            self._hold(behind)

    async def readable(self) -> None:
        """Return once reading is no longer held back (at once if it is not)."""
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            await asyncio.shield(waiting)

    def _route(self, received: Received) -> WorkerSession | None:
        core, session = self.core, self.session
        if received is None:
            core.handle_binary(session)
            return None
        if isinstance(received, (str, bytes)):
            behind = core.handle_text(session, received)
        else:
            behind = core.handle_messages(session, received)
        if self._hello_timer is not None and session.greeted:
            self._hello_timer.cancel()  # frees what it holds now rather than when it was due
            self._hello_timer = None
        return behind

    def _hold(self, behind: WorkerSession) -> None:
        self._held = deque()
        self.pause_reading()
        self._waiting = self._loop.create_task(self._catch_up_then_route(behind))

    async def _catch_up_then_route(self, behind: WorkerSession) -> None:
        held = self._held
        assert held is not None
        try:
            while True:
                await self._catch_up(behind)
                while held:
                    if (next_behind := self._route(held.popleft())) is not None:
                        behind = next_behind
                        break
                else:
                    break
        finally:
            self._held = None
            self.resume_reading()
            if self._end_reason is not None:
                self.end(self._end_reason)  # what ended meanwhile, now that the held are routed

    async def _catch_up(self, behind: WorkerSession) -> None:
        """Wait until ``behind`` has caught up; drop it if it does not in time.

        Its own transport times it too (see :meth:`_behind`); this bound holds for a peer
        whose transport is not one of ours.
        """
        self.core.stats.senders_held += 1
        try:
            await asyncio.wait_for(behind.drained.wait(), self._slow_consumer_timeout)
        except asyncio.TimeoutError:
            behind.drop_as_slow(f"did not catch up within {self._slow_consumer_timeout} s")

    def _behind(self, behind: bool) -> None:
        """The peer fell more than ``high_water`` behind (``True``), or caught up."""
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        if behind:
            self._slow_timer = self._loop.call_later(self._slow_consumer_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._slow_timer = None
        if not self.session.drained.is_set():
            self.session.drop_as_slow(f"did not catch up within {self._slow_consumer_timeout} s")

    # -- the end ----------------------------------------------------------------------------

    def end(self, reason: str) -> None:
        """The connection ended; reported once what was read before it has been routed."""
        if self._held is not None:
            self._end_reason = reason
            return
        if not self.ended.done():
            self.ended.set_result(reason)

    def lost(self) -> None:
        """The peer is gone: nobody to read from, so whatever was held goes with it."""
        if self._waiting is not None:
            self._waiting.cancel()

    def close(self) -> None:
        """Stop the timers; called once the session is closed in the core."""
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        self._behind(False)
        self.lost()

    def _hello_overdue(self) -> None:
        self._hello_timer = None
        if not self.session.greeted:
            self.session.close(CLOSE_POLICY_VIOLATION, "no hello received in time")

    def _cut(self, session: WorkerSession) -> None:
        self._behind(False)
        self.dropped()
