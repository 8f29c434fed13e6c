"""One peer of the routing core, as the core sees it: what is queued for it, and its accounting. No I/O.

A session is a connected worker, or a caller inside the host process (an HTTP request).
The core queues what it sends to a session in the session's :class:`Outbox`; a
:class:`~._host.transport.Transport` carries the messages both ways. The session keeps
the accounting back-pressure and limits need: bytes queued, whether the peer is behind.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, Union

from .._constants import DEFAULT_HIGH_WATER, DEFAULT_MAX_QUEUED_BYTES
from .._protocol import wire
from .._protocol.batching import take_batch
from .._protocol.wire import JsonObject, RequestId
from .security import ANONYMOUS, Identity

if TYPE_CHECKING:
    from .calls import PendingCall

#: WebSocket close codes the host uses.
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_AGAIN_LATER: Final = 1013

#: Agent ids a worker's placement counts are kept for, at most (``placed_keys``).
MAX_TRACKED_KEYS: Final = 100_000

#: What an outbox holds: an encoded message for a WebSocket peer, the message itself for a
#: caller inside the process (nothing to encode for it), or ``None`` for "close".
Outgoing = Union[bytes, JsonObject, None]


class RemoteHost(Protocol):
    """Another host of a cluster, as the sessions standing for its peers know it."""

    #: The host's name in the cluster.
    name: str

    @property
    def unavailable(self) -> str | None:
        """Why nothing can be sent to the host now (the cluster's engine is unreachable), or ``None``."""


class Outbox:
    """The messages queued for one session, and ``None`` for "close": a FIFO with one reader.

    Has ``asyncio.Queue``'s ``put_nowait``, ``get_nowait``, ``get`` and ``empty`` in a fifth
    of its memory (one deque, and a future only while the reader waits): the host keeps
    one per connection. One task at a time may wait on it; a transport may instead
    :meth:`listen` to it.
    """

    __slots__ = ("_items", "_listener", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Outgoing] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._listener: Callable[[], None] | None = None

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (which must not raise) each time something is queued."""
        self._listener = listener

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Outgoing) -> None:
        self._items.append(item)
        if self._listener is not None:
            self._listener()
        if self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(None)
            self._waiter = None

    def get_nowait(self) -> Outgoing:
        """Raises: asyncio.QueueEmpty: Nothing is queued."""
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> Outgoing:
        while not self._items:
            await self.wait()
        return self._items.popleft()

    def wait(self) -> asyncio.Future[None]:
        """A future done once something is queued (at once if something is).

        Raises:
            RuntimeError: Another task is waiting already.
        """
        if self._waiter is not None and not self._waiter.done():
            raise RuntimeError("Another task is already waiting on this outbox.")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._items:
            waiter.set_result(None)
        else:
            self._waiter = waiter
        return waiter

    def clear(self) -> None:
        self._items.clear()

    def take_batch(self, limit: int, batching: bool) -> list[bytes] | None:
        """The next encoded messages to write (see :func:`batching.take_batch`); the outbox
        must not be empty and must hold encoded messages only (a WebSocket peer's)."""
        items: deque[Any] = self._items
        return take_batch(items, limit, batching)


#: At-least-once copies a session may have unacknowledged; past it the oldest is forgotten
#: (its acknowledgement is then ignored, and the copy delivered again after the visibility timeout).
MAX_UNACKED: Final = 100_000


@dataclass(eq=False, slots=True)
class WorkerSession:
    """One peer of the routing core: a connected worker, or a caller inside the host process.

    The core queues what it sends in ``outbox``; a ``None`` there means "close the
    connection with ``close_code``". A WebSocket peer gets encoded messages (bytes); a
    ``local`` caller the message objects themselves.
    """

    worker_id: str
    max_message_size: int
    connected_at: float = field(default_factory=time.time)
    name: str = ""
    greeted: bool = False
    agent_types: set[str] = field(default_factory=set)
    subscription_ids: set[str] = field(default_factory=set)
    #: Calls this worker made that are in flight: its request id -> host request id.
    calls_made: dict[RequestId, int] = field(default_factory=dict)
    #: Calls this worker is serving: host request id -> the call.
    calls_served: dict[int, PendingCall] = field(default_factory=dict)
    #: Calls it made, and calls routed to it, since it connected (in flight or not).
    total_calls_made: int = 0
    total_calls_served: int = 0
    outbox: Outbox = field(default_factory=Outbox)
    #: Bytes in ``outbox``. Past ``high_water`` the host stops reading from the peers that
    #: send to this one until it catches up; past ``max_queued_bytes`` it is dropped.
    queued_bytes: int = 0
    high_water: int = DEFAULT_HIGH_WATER
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES
    #: ``drained``, created when first needed: ``None`` means "set" (most workers never fall behind).
    _drained: asyncio.Event | None = field(default=None, init=False, repr=False)
    #: The worker's own id for itself, the same across its reconnections.
    instance: str = ""
    bad_frames: int = 0
    #: A caller inside the host process (an HTTP request), not a connected worker.
    local: bool = False
    #: The worker reads batches (it said so in ``hello``): messages queued together go as one.
    batching: bool = False
    #: The worker acknowledges the event copies it handled (``event.ack``; it said so in ``hello``).
    acks: bool = False
    #: Delivery ids of the at-least-once copies sent to it and not yet acknowledged, oldest
    #: first (at most MAX_UNACKED): it may acknowledge only those.
    unacked: dict[str, None] = field(default_factory=dict)
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: Copies of the events this session published that were queued for their recipients.
    copies_delivered: int = 0
    #: Calls and event copies routed to this worker, by agent type.
    routed_by_type: dict[str, int] = field(default_factory=dict)
    #: With replicas: the keys of the agent ids placed on this worker, by agent type
    #: (at most MAX_TRACKED_KEYS in all: past it, new ones are not counted).
    placed_keys: dict[str, set[str]] = field(default_factory=dict)
    placed_total: int = 0
    close_code: int = CLOSE_NORMAL
    close_reason: str = ""
    closed: bool = False
    #: The worker sent ``drain``: it is out of the directory (nothing new is routed to it),
    #: and its session stays open only for the answers it still owes.
    draining: bool = False
    #: Dropped as too slow (see :meth:`drop_as_slow`).
    overflowed: bool = False
    #: Cut off (see :meth:`cut`): its connection is to be closed at once, not flushed first.
    cut_off: bool = False
    #: Set by the transport: called when the host cuts the peer off (:meth:`cut`): dropped as
    #: too slow (it overflowed), or its credentials were revoked or expired.
    on_overflow: Callable[[WorkerSession], None] | None = None
    #: Set by the transport: called with ``True`` when the peer falls more than ``high_water``
    #: behind, with ``False`` once it has caught up (it times the peer, see ``transport.py``).
    on_behind: Callable[[bool], None] | None = None
    #: Set by a transport that can tell: bytes written to the socket that the peer has not
    #: taken yet. They count against ``max_queued_bytes`` with those in the outbox.
    unsent: Callable[[], int] | None = None
    #: Who the transport authenticated this session as (``docs/security.md``).
    identity: Identity = ANONYMOUS
    #: In a cluster: the other host this session stands for a peer of. A worker connected
    #: there (what is queued for it goes to that host), or that host's callers (the calls
    #: they route to workers here, and the answers going back). ``None``: a peer of this host.
    remote: RemoteHost | None = None
    #: For a local caller: its own id of each request, by the id the core knows it under
    #: (the HTTP API hands the core each item of a batch under its position).
    client_ids: dict[RequestId, RequestId | None] | None = None

    @property
    def peer(self) -> str:
        """Who the session is, as the operator knows it: the worker id, or ``http (<identity>)``."""
        return f"{self.name} ({self.identity.name})" if self.local else self.worker_id

    def client_id(self, request_id: RequestId | None) -> RequestId | None:
        """The peer's own id for a request the core knows as ``request_id``."""
        if self.client_ids is not None and request_id is not None:
            return self.client_ids.get(request_id, request_id)
        return request_id

    def routed(self, agent_type: str, key: str, track_keys: bool) -> None:
        """Count a call or event copy routed to this worker for ``agent_type``/``key``."""
        self.routed_by_type[agent_type] = self.routed_by_type.get(agent_type, 0) + 1
        if track_keys:
            keys = self.placed_keys.setdefault(agent_type, set())
            if key not in keys and self.placed_total < MAX_TRACKED_KEYS:
                keys.add(key)
                self.placed_total += 1

    @property
    def drained(self) -> asyncio.Event:
        """Set while ``queued_bytes`` is at most half of ``high_water``."""
        if self._drained is None:
            self._drained = asyncio.Event()
            self._drained.set()
        return self._drained

    def send(self, message: JsonObject) -> None:
        """Queue a message for the peer: encoded for a WebSocket peer, as it is for a local one."""
        if self.local:
            if not self.closed:
                self.outbox.put_nowait(message)
            return
        self.send_encoded(wire.encode_bytes(message))

    def send_encoded(self, data: bytes) -> None:
        """Queue a message the core has encoded (ASCII JSON)."""
        if self.closed:
            return
        queued = self.queued_bytes + len(data)
        if queued > self.high_water:
            # Behind: what the socket still holds counts too (a peer that reads nothing
            # costs at most max_queued_bytes), and the transport starts timing it.
            if queued + (0 if self.unsent is None else self.unsent()) > self.max_queued_bytes:
                self.drop_as_slow(f"more than {self.max_queued_bytes} bytes queued for it")
                return
            drained = self.drained
            if drained.is_set():
                drained.clear()
                if self.on_behind is not None:
                    self.on_behind(True)
        self.queued_bytes = queued
        self.outbox.put_nowait(data)

    @property
    def backlogged(self) -> bool:
        return self.queued_bytes > self.high_water

    def sent(self, data: bytes) -> None:
        """The transport wrote ``data`` to the socket."""
        size = len(data)
        self.queued_bytes -= size
        self.frames_out += 1
        self.bytes_out += size
        drained = self._drained
        if drained is not None and not drained.is_set() and self.queued_bytes <= self.high_water // 2:
            drained.set()
            if self.on_behind is not None:
                self.on_behind(False)

    def release_senders(self) -> None:
        """Let the senders held back for this peer go on: it is gone."""
        if self._drained is not None:
            self._drained.set()

    def drop_as_slow(self, why: str) -> None:
        """Disconnect a peer that does not read as fast as messages arrive for it.

        What it has not read is let go, rather than let the host's memory grow.
        """
        if self.closed or self.remote is not None:
            # A stand-in for a peer on another host: what it holds leaves through the
            # cluster's engine, and when that is stuck the node finds it unavailable.
            return
        self.overflowed = True
        self.cut(CLOSE_POLICY_VIOLATION, f"too slow: {why}")

    def cut(self, code: int, reason: str) -> None:
        """Close the peer's connection now: what it has not read is let go, the close goes
        out if the socket takes it, and the transport cuts the socket if the peer does not
        complete the closing handshake within a second (``docs/operations.md``)."""
        if self.closed:
            return
        self.outbox.clear()
        self.queued_bytes = 0
        self.release_senders()
        self.cut_off = True
        self.close(code, reason)
        if self.on_overflow is not None:
            self.on_overflow(self)

    def close(self, code: int, reason: str) -> None:
        """Ask the transport to close this peer's connection once its outbox is flushed."""
        if not self.closed:
            self.closed = True
            self.close_code, self.close_reason = code, reason
            self.outbox.put_nowait(None)
