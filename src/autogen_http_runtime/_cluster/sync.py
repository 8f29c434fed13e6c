"""Keeping this host's view of the directory in step with the engine: writes out, changes in.

:class:`ViewSync` sends the directory's writes to the engine in order (in batches, one
script call each) and answers each once this host's view shows it; follows the change
log into the view; and lets a call that missed in the view wait until the view has caught
up with the engine. It runs on its node's connection (``node.engine``, ``node.generation``)
and tells the node when the engine fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from .directory import ClusterDirectory, Finished, Provisional
from .engine import EngineUnavailable, Gap, NotJoined, Write

if TYPE_CHECKING:
    from .node import ClusterNode

#: Writes sent to the engine in one go, at most.
WRITE_BATCH: Final = 256
#: Seconds a write waits for this host's view to show it before it is answered anyway.
WRITE_SETTLE: Final = 2.0
#: Seconds a routing miss waits for this host's view to catch up with the engine.
CATCH_UP: Final = 1.0
#: Calls waiting for the view to catch up, at most; more fail at once.
MAX_CATCHING_UP: Final = 10_000


class ViewSync:
    """The writes on their way to the engine, and the view's progress along the change log."""

    def __init__(self, node: ClusterNode, directory: ClusterDirectory, logger: logging.Logger) -> None:
        self._node = node
        self._directory = directory
        self._log = logger
        self._writes: deque[tuple[Write, Finished | None, Provisional | None]] = deque()
        self._wake = asyncio.Event()
        #: Set while no write is queued or on its way.
        self.writes_done = asyncio.Event()
        self.writes_done.set()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._retries: list[Callable[[], None]] = []
        self._catching_up: asyncio.Task[None] | None = None
        #: Called each time the view moves on (the node routes the batches parked for it).
        self.moved: Callable[[], None] = lambda: None

    # -- writes -------------------------------------------------------------------------

    def submit(self, write: Write, finished: Finished | None, provisional: Provisional | None) -> None:
        """Send ``write`` to the engine; while it is out of reach, make it here only."""
        if self._node.unavailable is not None:
            refusal = provisional() if provisional is not None else None
            if finished is not None:
                finished(refusal)
            return
        self._writes.append((write, finished, provisional))
        self.writes_done.clear()
        self._wake.set()

    def fail_writes(self) -> None:
        """The engine is out of reach: the writes still queued take effect here only (they
        reach the engine when it is back, with everything this host holds)."""
        writes, self._writes = self._writes, deque()
        self.writes_done.set()
        for _write, finished, provisional in writes:
            refusal = provisional() if provisional is not None else None
            if finished is not None:
                finished(refusal)

    async def write_loop(self) -> None:
        node = self._node
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._writes and node.unavailable is None:
                batch = [self._writes.popleft() for _ in range(min(len(self._writes), WRITE_BATCH))]
                generation = node.generation
                try:
                    results = await node.engine.write([write for write, _, _ in batch])
                except (EngineUnavailable, NotJoined) as exc:
                    self._writes.extendleft(reversed(batch))
                    why = str(exc) if isinstance(exc, EngineUnavailable) else "this host's lease expired"
                    node.lost_engine(why, generation)
                    break
                versions = [r for r in results if isinstance(r, int)]
                if versions:
                    await self.reached(max(versions), WRITE_SETTLE)
                for (_, finished, _), result in zip(batch, results, strict=True):
                    if finished is not None:
                        finished(None if isinstance(result, int) else result)
            if not self._writes:
                self.writes_done.set()

    # -- the view -----------------------------------------------------------------------

    async def reached(self, version: int, timeout: float) -> None:
        """Wait until this host's view has applied ``version`` (at most ``timeout`` seconds)."""
        if self._directory.view.version >= version or self._node.unavailable is not None:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((version, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except asyncio.TimeoutError:
            self._log.warning("This host's view did not reach version %d within %.1f s", version, timeout)

    def settled(self, *, everything: bool = False) -> None:
        """The view moved on (or, ``everything``, will not for now): wake who waited for it."""
        version = self._directory.view.version
        still = []
        for wanted, waiter in self._waiters:
            if everything or wanted <= version:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((wanted, waiter))
        self._waiters = still
        self.moved()

    async def follow(self, up: asyncio.Event) -> None:
        """Apply the change log to the view, for as long as the engine is in reach (``up``)."""
        node, directory = self._node, self._directory
        while True:
            await up.wait()
            generation = node.generation
            try:
                changes = await node.engine.changes(directory.view.version, 1.0)
            except Gap:
                changes = None
            except EngineUnavailable as exc:
                node.lost_engine(str(exc), generation)
                continue
            if generation != node.generation or node.unavailable is not None:
                continue  # read on a connection since replaced: the view was reloaded
            if changes is None:
                self._log.warning("This host's view fell behind the cluster's change log; reloading")
                try:
                    directory.load(await node.engine.snapshot())
                except EngineUnavailable as exc:
                    node.lost_engine(str(exc), generation)
                    continue
            else:
                for change in changes:
                    directory.apply(change)
            self.settled()

    def catch_up(self, retry: Callable[[], None]) -> bool:
        """A call missed in the view: ``retry`` it once the view has caught up with the engine."""
        if self._node.unavailable is not None or len(self._retries) >= MAX_CATCHING_UP:
            return False
        self._retries.append(retry)
        if self._catching_up is None:
            self._catching_up = asyncio.get_running_loop().create_task(self._catch_up())
        return True

    async def _catch_up(self) -> None:
        try:
            while self._retries:
                retries, self._retries = self._retries, []
                with contextlib.suppress(EngineUnavailable):
                    await self.reached(await self._node.engine.version(), CATCH_UP)
                for retry in retries:
                    retry()
        finally:
            self._catching_up = None
