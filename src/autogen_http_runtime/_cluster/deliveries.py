"""At-least-once events on a cluster: the routing core's store of copies, on Redis Streams.

The core hands each copy to :meth:`StreamDeliveries.store`; the tasks here do the rest:

- the *writer* appends what was stored, acknowledged or failed in this event-loop turn,
  in one script call each (so a batch grows by itself under load);
- the *reader* takes the copies no host read yet (``XREADGROUP``) and has the core send
  each to its recipient's owner of the moment (a worker here, or on another host); the
  copies for a worker that is behind are held, in order, until it catches up, while the
  others go on (one slow worker does not hold up the rest);
- the *claimer* takes over, every quarter of the visibility timeout, the copies pending
  longer than that (their worker died or was dropped as too slow, their host died, their
  handler failed) and delivers them again, or moves them to the dead letters.

While Redis is out of reach, what was stored and acknowledged waits in memory (up to
:data:`MAX_WAITING` copies; past that, new copies are dropped and counted) and goes once
it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from .._exceptions import ClusterUnavailableError
from .._host.deliveries import DeadLetter, DeliveryCounts
from .delivery_store import DeliveryStore, Entry
from .engine import EngineUnavailable
from .tasks import cancel_tasks

if TYPE_CHECKING:
    from .._host.core import RoutingCore
    from .._host.session import WorkerSession

#: Copies read or claimed at a time.
BATCH: Final = 1000
#: Recipients and copies one script call carries at most (half as many copies).
SCRIPT_ITEMS: Final = 4000
#: Acknowledgements one script call carries at most (Lua's stack bounds ``unpack``).
ACK_ITEMS: Final = 1000
#: Copies (and acknowledgements) waiting in memory for Redis at most.
MAX_WAITING: Final = 100_000
#: Seconds between attempts while Redis is out of reach.
RETRY: Final = 0.25
#: Seconds copies are held at most for a worker that is behind, before the next goes anyway.
BEHIND_WAIT: Final = 5.0
#: Bytes of copies held for one worker that is behind, at most: its copies past that stay
#: pending, and are delivered again after the visibility timeout.
MAX_HELD_PER_WORKER: Final = 16 * 1024 * 1024
#: Bytes of copies held for all workers that are behind, at most: past it, the reader waits.
MAX_HELD_BYTES: Final = 64 * 1024 * 1024


@dataclass
class _Held:
    """The copies held for one worker that is behind, in the order read."""

    entries: list[Entry] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    size: int = 0


class StreamDeliveries:
    """The store of event copies of one host (:class:`~.._host.deliveries.Deliveries`).

    Args:
        store: The deliveries stream's commands.
        core: The routing core that delivers what is read.
        visibility_timeout: Seconds a copy may stay unacknowledged before it is delivered again.
        max_deliveries: Deliveries of a copy before it goes to the dead letters.
    """

    def __init__(
        self,
        store: DeliveryStore,
        core: RoutingCore,
        *,
        visibility_timeout: float,
        max_deliveries: int,
        logger: logging.Logger,
    ) -> None:
        self._store = store
        self._core = core
        self.visibility_timeout = visibility_timeout
        self.max_deliveries = max_deliveries
        self._log = logger
        self.counts = DeliveryCounts()
        #: Copies dropped because too many waited for Redis (MAX_WAITING).
        self.dropped = 0
        self._adds: list[bytes] = []
        self._acks: list[str] = []
        self._fails: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self.unavailable: str | None = None
        #: Copies read for workers that are behind, by worker, in the order read; each has
        #: a task in ``_holders`` that sends them once it caught up.
        self._held: dict[WorkerSession, _Held] = {}
        self._held_bytes = 0
        self._released = asyncio.Event()
        self._holders: set[asyncio.Task[None]] = set()

    # -- the routing core's side (never awaits) ---------------------------------------------

    def store(self, recipient: str, copy: bytes) -> None:
        if len(self._adds) >= 2 * MAX_WAITING:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % MAX_WAITING == 0:
                self._log.error(
                    "Dropped %d event cop%s: %d wait for Redis already (%s)",
                    self.dropped,
                    "y" if self.dropped == 1 else "ies",
                    MAX_WAITING,
                    self.unavailable,
                )
            return
        self._adds += (recipient.encode(), copy)
        self.counts.stored += 1
        self._poke()

    def acked(self, ids: Sequence[str]) -> None:
        if len(self._acks) < MAX_WAITING:
            self._acks.extend(ids)
            self.counts.acked += len(ids)
            self._poke()

    def failed(self, delivery_id: str, reason: str) -> None:
        if len(self._fails) < MAX_WAITING:
            self._fails[delivery_id] = reason
            self._poke()

    def _poke(self) -> None:
        if not self._wake.is_set():
            self._wake.set()
            self._idle.clear()

    # -- start and stop ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and create the group. Raises: EngineUnavailable: Redis cannot be reached."""
        await self._store.connect()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write(), name="autogen-http-deliveries writer"),
            loop.create_task(self._read(), name="autogen-http-deliveries reader"),
            loop.create_task(self._claim(), name="autogen-http-deliveries claimer"),
        ]

    async def stop(self, timeout: float = 2.0) -> None:
        """Write what waits (for up to ``timeout`` seconds), then stop. What this host read
        and did not see acknowledged stays pending: another host delivers it again."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        await cancel_tasks([*self._tasks, *self._holders], timeout)
        self._tasks = []
        self._held.clear()  # still pending in the stream: delivered again, by another host
        self._held_bytes = self.counts.held = 0
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._store.close(), timeout)

    # -- operators --------------------------------------------------------------------------

    async def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        try:
            return await self._store.dead_letters(count)
        except EngineUnavailable as exc:
            raise ClusterUnavailableError(str(exc)) from None

    async def replay(self, dead_id: str) -> bool:
        try:
            return await self._store.replay(dead_id)
        except EngineUnavailable as exc:
            raise ClusterUnavailableError(str(exc)) from None

    async def drop(self, dead_id: str) -> bool:
        try:
            return await self._store.drop(dead_id)
        except EngineUnavailable as exc:
            raise ClusterUnavailableError(str(exc)) from None

    # -- tasks ------------------------------------------------------------------------------

    def _out_of_reach(self, exc: EngineUnavailable) -> None:
        if self.unavailable is None:
            self._log.warning("At-least-once deliveries wait for Redis: %s", exc)
        self.unavailable = str(exc)

    def _back(self) -> None:
        if self.unavailable is not None:
            self.unavailable = None
            self._log.info("At-least-once deliveries reach Redis again")

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            adds, self._adds = self._adds, []
            acks, self._acks = self._acks, []
            fails, self._fails = self._fails, {}
            try:
                for start in range(0, len(adds), SCRIPT_ITEMS):
                    await self._store.add(adds[start : start + SCRIPT_ITEMS])
                if fails:
                    await self._store.fail(fails)
                for start in range(0, len(acks), ACK_ITEMS):
                    await self._store.ack(acks[start : start + ACK_ITEMS])
            except EngineUnavailable as exc:
                self._out_of_reach(exc)
                # Put back what may not have been written (adds twice at worst: at least once).
                self._adds[:0], self._acks[:0] = adds, acks
                self._fails = {**fails, **self._fails}
                self._wake.set()
                await asyncio.sleep(RETRY)
                continue
            self._back()
            if not self._wake.is_set():
                self._idle.set()

    async def _read(self) -> None:
        while True:
            try:
                entries = await self._store.read(BATCH, 1.0)
            except EngineUnavailable as exc:
                self._out_of_reach(exc)
                await asyncio.sleep(RETRY)
                with contextlib.suppress(EngineUnavailable):
                    await self._store.ensure_group()
                continue
            await self._deliver(entries)

    async def _claim(self) -> None:
        interval = max(0.05, min(self.visibility_timeout / 4, 1.0))
        while True:
            try:
                claimed = await self._store.claim(self.visibility_timeout, self.max_deliveries, BATCH)
            except EngineUnavailable as exc:
                self._out_of_reach(exc)
                await asyncio.sleep(RETRY)
                continue
            counts = self.counts
            counts.pending = claimed.pending
            counts.redelivered += len(claimed.entries)
            if claimed.dead:
                counts.dead_lettered += claimed.dead
                self._log.warning(
                    "Moved %d event cop%s to the dead letters (delivered %d times, never acknowledged)",
                    claimed.dead,
                    "y" if claimed.dead == 1 else "ies",
                    self.max_deliveries,
                )
            await self._deliver(claimed.entries)
            if len(claimed.entries) < BATCH:
                await asyncio.sleep(interval)

    async def _deliver(self, entries: list[Entry]) -> None:
        for entry in entries:
            while self._held_bytes > MAX_HELD_BYTES:
                self._released.clear()
                await self._released.wait()
            if self._core.events.deliveries is not self:
                return  # stopping: what was read stays pending in the stream
            self._send(entry)

    def _send(self, entry: Entry) -> None:
        """Have the core send a copy to its recipient's owner, or hold it while that is behind.

        Back-pressure, as for a publisher: a burst (copies taken over at once) must not push a
        worker past max_queued_bytes, which would drop it as too slow. Only that worker's
        copies wait for it (up to BEHIND_WAIT each time it falls behind).
        """
        delivery_id, recipient, copy = entry
        events = self._core.events
        if self._held:
            owner = events.owner_of(recipient)
            held = None if owner is None else self._held.get(owner)
            if owner is not None and held is not None:
                if delivery_id in held.ids:
                    return  # taken over again while held (past the visibility timeout): once is enough
                if held.size >= MAX_HELD_PER_WORKER:
                    self.failed(delivery_id, f"its worker {owner.worker_id} was behind")
                    return  # pending: delivered again after the visibility timeout
                held.entries.append(entry)
                held.ids.add(delivery_id)
                held.size += len(copy)
                self._held_bytes += len(copy)
                self.counts.held += 1
                return
        reason = events.deliver(delivery_id, recipient, copy)
        if reason is not None and self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("Event copy %s for %s not delivered now: %s", delivery_id, recipient, reason)
        behind = events.behind
        if behind is not None:
            events.behind = None
            if behind not in self._held:
                self._held[behind] = _Held()
                holder = asyncio.get_running_loop().create_task(
                    self._release(behind), name="autogen-http-deliveries holder"
                )
                self._holders.add(holder)
                holder.add_done_callback(self._holders.discard)

    async def _release(self, worker: WorkerSession) -> None:
        """Send the copies held for ``worker`` once it caught up (or BEHIND_WAIT passed), in
        order; if it falls behind again, the rest are held again (by a new task)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(worker.drained.wait(), BEHIND_WAIT)
        held = self._held.pop(worker)
        self._held_bytes -= held.size
        self.counts.held -= len(held.entries)
        self._released.set()
        if self._core.events.deliveries is self:  # not stopping
            for entry in held.entries:
                self._send(entry)
