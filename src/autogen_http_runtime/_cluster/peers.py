"""The other hosts of a cluster, as this one exchanges messages with them.

For each other host there is a :class:`Peer`. It is the ``remote`` of the sessions that
stand here for the workers connected there, and of its *proxy*: the session standing for
that host's callers (the calls it forwards to workers here, the answers going back). The
routing core queues messages in those sessions as in any other; the peer's task takes
everything they hold, seals it into one batch (:mod:`.envelope`) and publishes it to the
host's inbox, one publish at a time, so a peer's messages arrive in the order queued and
a batch grows by itself under load. With direct links on (``cluster_link_url``), the batch
goes over a WebSocket straight to that host instead (:class:`PeerLink`, made by the web
layer), and through Redis only while there is no link.

:class:`PeerTable` opens what arrives in this host's inbox and routes each item through
the core: a request, cancel or event copy for a worker here, or an answer to a call
forwarded there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Final

from .._host.security import Identity
from .._host.session import CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER, WorkerSession
from .engine import EngineUnavailable
from .envelope import (
    FOR_HOST,
    FOR_WORKER,
    Batch,
    BatchReader,
    BatchWriter,
    EnvelopeError,
    Item,
    Sequencer,
)
from .links import Dial, PeerLink

if TYPE_CHECKING:
    from .._host.core import RoutingCore
    from .node import ClusterNode

#: Bytes a batch holds at most (one item may be larger: it goes alone).
BATCH_BYTES: Final = 1 << 20
#: Stand-ins and proxies are never dropped as too slow: what they hold leaves through
#: the engine, and when that is stuck the node finds the cluster unavailable and empties
#: them. Back-pressure still holds (their high-water mark is a worker's).
UNBOUNDED: Final = 1 << 62
#: Seconds a batch waits for this host's view to reach the version its sender had, or for
#: a batch sent before it (on the other path) to come.
MAX_PARK: Final = 1.0
#: Seconds between attempts to open a direct link to a host that has one, once one failed.
LINK_RETRY: Final = 2.0


class Peer:
    """Another host of the cluster: where what is queued for its workers and callers goes."""

    def __init__(self, name: str, node: ClusterNode, logger: logging.Logger) -> None:
        self.name = name
        self._node = node
        self._log = logger
        self._dirty: deque[WorkerSession] = deque()
        self._marked: set[WorkerSession] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.frames_out = 0
        self.frames_in = 0
        self.gone = False
        self.proxy = self.stand_in(f"host:{name}", name=f"callers on host {name}")
        #: The direct link to the host, while one is open; and one just opened, that the
        #: sending task takes on between two batches (so its first batch is in order).
        self.link: PeerLink | None = None
        self._opened: PeerLink | None = None
        #: The number of the last batch handed over to Redis or the link (envelope.py), and
        #: the node's connection to the engine then. What was handed to an older connection,
        #: or to a link since closed, may have been lost with it: the next batch names none
        #: before it, so that the receiver does not wait for it.
        self._previous = 0
        self._generation = node.generation
        self._link_lost = False
        self._linked = asyncio.Event()  # the first attempt at a link is over
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name=f"autogen-http-peer {name}")]
        if node.dial is None:
            self._linked.set()
        else:
            self._tasks.append(loop.create_task(self._keep_link(node.dial), name=f"autogen-http-link {name}"))

    @property
    def unavailable(self) -> str | None:
        if self.gone:
            return f"host {self.name} is gone"
        return self._node.unavailable

    def stand_in(
        self,
        worker_id: str,
        *,
        name: str = "",
        max_message_size: int | None = None,
        connected_at: float | None = None,
        instance: str = "",
        identity: str = "",
    ) -> WorkerSession:
        """A session whose messages go to this host."""
        core = self._node.core
        session = WorkerSession(
            worker_id=worker_id,
            max_message_size=max_message_size or core.max_message_size,
            connected_at=time.time() if connected_at is None else connected_at,
            name=name,
            greeted=True,
            instance=instance,
            high_water=core.high_water,
            max_queued_bytes=UNBOUNDED,
            remote=self,
        )
        if identity:
            session.identity = Identity(identity)

        def queued() -> None:
            if session not in self._marked:
                self._marked.add(session)
                self._dirty.append(session)
                self._idle.clear()
                self._wake.set()

        session.outbox.listen(queued)
        return session

    def discard(self) -> None:
        """Drop what is queued (the engine is out of reach): let its senders go."""
        for session in self._dirty:
            session.outbox.clear()
            session.queued_bytes = 0
            session.release_senders()
        self._dirty.clear()
        self._marked.clear()
        self._idle.set()

    def close(self) -> list[PeerLink]:
        """The host is gone (or this one leaves): drop what is queued, refuse what comes.

        Returns:
            The links it was closing (their closing handshakes are under way).
        """
        self.gone = True
        self.discard()
        for task in self._tasks:
            task.cancel()
        links = [link for link in (self.link, self._opened) if link is not None]
        for link in links:
            link.close()
        return links

    async def flushed(self) -> None:
        """Wait until everything queued for this host has left (or was dropped)."""
        await self._idle.wait()

    def _take(self) -> tuple[list[Item], list[tuple[WorkerSession, bytes]]]:
        items: list[Item] = []
        taken: list[tuple[WorkerSession, bytes]] = []
        size = 0
        while self._dirty and size < BATCH_BYTES:
            session = self._dirty[0]
            outbox = session.outbox
            kind, to = (FOR_HOST, "") if session is self.proxy else (FOR_WORKER, session.worker_id)
            while not outbox.empty() and size < BATCH_BYTES:
                data = outbox.get_nowait()
                if isinstance(data, bytes):
                    items.append(Item(kind, to, data))
                    taken.append((session, data))
                    size += len(data)
            if outbox.empty():
                self._dirty.popleft()
                self._marked.discard(session)
        return items, taken

    async def _keep_link(self, dial: Dial) -> None:
        """Keep a direct link open to the host, if it takes links. The receiver puts batches
        back in order whichever path each took (``envelope.Sequencer``), except the first it
        has from this host, which starts the sequence: so the first batch waits for the first
        attempt at a link (a batch sent through Redis just before could come after it)."""
        link: PeerLink | None = None
        try:
            while True:
                try:
                    url = await self._node.link_address(self.name)
                except (EngineUnavailable, LookupError):
                    # Redis carries the batches until it can say (a host it does not know
                    # is joining, or gone: then asked seldom).
                    self._linked.set()
                    live = self._node.is_live(self.name)
                    await asyncio.sleep(LINK_RETRY if live else LINK_RETRY * 15)
                    continue
                if url is None:
                    return  # the host takes no links: Redis carries everything
                link = await dial(self.name, url)
                if link is not None:
                    self._opened = link  # the sending task takes it on, with a first batch
                    self._wake.set()
                self._linked.set()
                if link is not None:
                    why = await link.closed()
                    code = link.close_code
                    self._opened = self.link = link = None
                    self._link_lost = True
                    if not self.gone:
                        closed = f"this host's direct link to it closed ({why})"
                        lost_cluster = code == CLOSE_TRY_AGAIN_LATER
                        self._node.peer_silent(self.name, closed, both_ways=False, lost_cluster=lost_cluster)
                    if code == CLOSE_POLICY_VIOLATION:  # refused: it would be again; Redis carries on
                        self._log.warning(
                            "Host %s refused this host's direct link (%s): another cluster_secret, or "
                            "its cluster_link_url reaches another host; Redis carries what goes there",
                            self.name,
                            why,
                        )
                        return
                await asyncio.sleep(LINK_RETRY)
        finally:
            self._linked.set()  # whatever ended this, batches must not wait for it
            if link is not None:
                link.close()

    async def _take_link(self) -> None:
        """Send a first batch (empty) on the link just opened, and send over it from now on:
        the other host closes a link that sends no batch."""
        link, self._opened = self._opened, None
        if link is None or self._node.unavailable is not None:
            return
        sequence, hello = self._node.seal([], to=self.name, previous=self._previous)
        if await link.send(hello):
            self._previous = sequence
            self.link = link

    async def _send(self, data: bytes) -> int:
        """Send a batch over the link, or else through the engine; returns its receivers."""
        link = self.link
        # A batch over the frame limit the hosts share (one item as large as the limit, and
        # the envelope) would close the link: it goes through Redis.
        if link is not None and len(data) <= self._node.core.max_message_size and await link.send(data):
            return 1
        return await self._node.engine.publish(self.name, data)

    async def _run(self) -> None:
        node = self._node
        await self._linked.wait()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._opened is not None:
                await self._take_link()
            while self._dirty:
                if node.unavailable is not None:
                    self.discard()
                    break
                items, taken = self._take()
                if not items:
                    continue
                generation = node.generation
                if generation != self._generation or self._link_lost:
                    self._previous, self._generation, self._link_lost = 0, generation, False
                sequence, sealed = node.seal(items, to=self.name, previous=self._previous)
                try:
                    receivers = await self._send(sealed)
                except EngineUnavailable as exc:
                    node.lost_engine(str(exc), generation)
                    self.discard()
                    break
                for session, data in taken:
                    session.sent(data)
                self.frames_out += len(items)
                if receivers == 0:
                    node.peer_silent(self.name, "it does not listen (it died or lost Redis)")
                else:
                    self._previous = sequence
            if not self._dirty:
                self._idle.set()


class PeerTable:
    """Every other host this one has exchanged messages with, and what arrives from them."""

    def __init__(
        self, node: ClusterNode, reader: BatchReader, writer: BatchWriter, logger: logging.Logger
    ) -> None:
        self._node = node
        self._reader = reader
        self._writer = writer
        self._log = logger
        self.peers: dict[str, Peer] = {}
        self._parked: deque[tuple[Batch, float]] = deque()
        self._order = Sequencer(MAX_PARK)
        self._overdue: asyncio.TimerHandle | None = None
        #: The number of the last batch this host sealed (for any host).
        self._sequence = 0
        self.refused = 0
        self.bytes_in = 0

    def get(self, host: str) -> Peer:
        peer = self.peers.get(host)
        if peer is None:
            peer = self.peers[host] = Peer(host, self._node, self._log)
        return peer

    def drop(self, host: str) -> list[PeerLink]:
        """``host`` is gone: what is queued for it is dropped, and what stands for it refuses
        calls; returns the links to it, closing."""
        peer = self.peers.pop(host, None)
        self._order.forget(host, time.monotonic())
        self._parked = deque(entry for entry in self._parked if entry[0].source != host)
        return [] if peer is None else peer.close()

    def receive(self, data: bytes, version: int, core: RoutingCore, via: str = "inbox") -> str | None:
        """Route a batch from this host's inbox or a link (once this host's view has caught
        up with it, and those sent before it have come); its sender, or ``None``: refused."""
        self.bytes_in += len(data)
        try:
            batch = self._reader.open(data, int(time.time() * 1000))
            ready = self._order.offer(batch, time.monotonic())
        except EnvelopeError as exc:
            self.refused += 1
            log = self._log.warning if self.refused == 1 or self.refused % 1000 == 0 else self._log.debug
            log("Refused a batch from this host's %s (%d so far): %s", via, self.refused, exc)
            return None
        self._go_on(ready, version, core)
        return batch.source

    def _go_on(self, ready: list[Batch], version: int, core: RoutingCore) -> None:
        for batch in ready:
            if self._parked or batch.version > version:
                # Sent after a change this host's view has not applied yet (a registration the
                # sending host's caller learned of): routing it now could miss that change.
                self._parked.append((batch, time.monotonic()))
            else:
                self._route(batch, core)
        due = self._order.next_due()
        if due is not None and self._overdue is None:
            delay = max(0.0, due - time.monotonic())
            self._overdue = asyncio.get_running_loop().call_later(delay, self._give_up)

    def _give_up(self) -> None:
        """Batches that waited too long for one sent before them go on without it (it was lost)."""
        self._overdue = None
        ready = self._order.overdue(time.monotonic())
        if ready:
            self._log.warning(
                "A batch from host %s did not come within %.1f s of those sent after it; going on without it",
                ready[0].source,
                MAX_PARK,
            )
        node = self._node
        try:
            self._go_on(ready, node.directory.view.version, node.core)
        finally:
            if self._overdue is None and self._order.waiting:
                self._go_on([], node.directory.view.version, node.core)  # armed again

    def release(self, version: int, core: RoutingCore) -> None:
        """Route the batches parked for a view that has now reached ``version``, or waited too long."""
        now = time.monotonic()
        while self._parked:
            batch, since = self._parked[0]
            if batch.version > version and now - since < MAX_PARK:
                return
            if batch.version > version:
                self._log.warning(
                    "This host's view stayed behind version %d for %.1f s; routing a batch from %s anyway",
                    batch.version,
                    MAX_PARK,
                    batch.source,
                )
            self._parked.popleft()
            self._route(batch, core)

    def _route(self, batch: Batch, core: RoutingCore) -> None:
        peer = self.get(batch.source)
        peer.frames_in += len(batch.items)
        proxy = peer.proxy
        for item in batch.items:
            if item.kind == FOR_HOST:
                core.relay.answer(batch.source, item.data)
            else:
                core.relay.to_worker(proxy, item.to, item.data)

    def seal(self, items: list[Item], version: int, *, to: str, previous: int) -> tuple[int, bytes]:
        """A batch for host ``to``, with the next number: the number, and the sealed batch."""
        self._sequence += 1
        now = int(time.time() * 1000)
        sealed = self._writer.seal(items, version, now, to=to, sequence=self._sequence, previous=previous)
        return self._sequence, sealed

    def close(self) -> list[PeerLink]:
        """This host leaves: every peer goes, nothing more is routed; returns the links closing."""
        if self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None
        return [link for peer in self.each() for link in self.drop(peer.name)]

    def each(self) -> list[Peer]:
        return list(self.peers.values())

    def discard_all(self) -> None:
        for peer in self.peers.values():
            peer.discard()
