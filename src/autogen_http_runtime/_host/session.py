"""One connected worker as the routing core sees it, and a call it forwarded. No I/O.

The transport (``_service.py``) reads a worker's frames for the core to route and writes
what the core queues in the session's ``outbox``; the session keeps the accounting the
core needs for back-pressure and limits.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .._constants import DEFAULT_HIGH_WATER, DEFAULT_MAX_QUEUED_BYTES
from .._protocol import wire
from .._protocol.batching import take_batch
from .._protocol.wire import JsonObject, RequestId
from .security import ANONYMOUS, Identity

#: WebSocket close codes the host uses.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013


class Outbox:
    """The frames queued for one session, and ``None`` for "close": a FIFO with one reader.

    Has ``asyncio.Queue``'s ``put_nowait``, ``get_nowait``, ``get`` and ``empty`` in a fifth
    of its memory (one deque, and a future only while the reader waits): the host keeps
    one per connection. One task at a time may wait on it; or a transport may
    :meth:`listen` to it instead.
    """

    __slots__ = ("_items", "_listener", "_waiter")

    def __init__(self) -> None:
        self._items: deque[bytes | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._listener: Callable[[], None] | None = None

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (which must not raise) each time something is queued."""
        self._listener = listener

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: bytes | None) -> None:
        self._items.append(item)
        if self._listener is not None:
            self._listener()
        if self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(None)
            self._waiter = None

    def get_nowait(self) -> bytes | None:
        """Raises: asyncio.QueueEmpty: Nothing is queued."""
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> bytes | None:
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
        """The next frames to write (see :func:`_batching.take_batch`); the outbox must not be empty."""
        return take_batch(self._items, limit, batching)


@dataclass(eq=False, slots=True)
class WorkerSession:
    """One connected worker, as the routing core sees it.

    The transport reads frames for the core to route and writes what the core puts in
    ``outbox``; a ``None`` in the outbox means "close the WebSocket with ``close_code``".
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
    outbox: Outbox = field(default_factory=Outbox)
    #: Bytes in ``outbox``. Past ``high_water`` the host stops reading from the workers that
    #: send to this one until it catches up; past ``max_queued_bytes`` it is dropped.
    queued_bytes: int = 0
    high_water: int = DEFAULT_HIGH_WATER
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES
    #: ``drained``, created when first needed: ``None`` means "set" (most workers never fall behind).
    _drained: asyncio.Event | None = field(default=None, init=False, repr=False)
    #: The worker's own id for itself, the same across its reconnections.
    instance: str = ""
    bad_frames: int = 0
    #: A caller inside the host process (an HTTP endpoint), not a connected worker.
    local: bool = False
    #: The worker reads batches (it said so in ``hello``): frames queued together go as one.
    batching: bool = False
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    close_code: int = CLOSE_NORMAL
    close_reason: str = ""
    closed: bool = False
    overflowed: bool = False
    #: Set by the transport: called when the worker is dropped for being too slow.
    on_overflow: Callable[[WorkerSession], None] | None = None
    #: Who the transport authenticated this session as (``docs/security.md``).
    identity: Identity = ANONYMOUS

    @property
    def drained(self) -> asyncio.Event:
        """Set while ``queued_bytes`` is at most half of ``high_water``."""
        if self._drained is None:
            self._drained = asyncio.Event()
            self._drained.set()
        return self._drained

    def send(self, frame: JsonObject) -> None:
        self.send_encoded(wire.encode_bytes(frame))

    def send_encoded(self, data: bytes) -> None:
        """Queue a frame the core has encoded (ASCII JSON)."""
        if self.closed:
            return
        size = len(data)
        if self.queued_bytes + size > self.max_queued_bytes:
            self.drop_as_slow(f"more than {self.max_queued_bytes} bytes queued for it")
            return
        self.queued_bytes += size
        if self.queued_bytes > self.high_water:
            self.drained.clear()
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
        if self._drained is not None and self.queued_bytes <= self.high_water // 2:
            self._drained.set()

    def release_senders(self) -> None:
        """Let the senders held back for this worker go on: it is gone."""
        if self._drained is not None:
            self._drained.set()

    def drop_as_slow(self, why: str) -> None:
        """Disconnect a worker that does not read as fast as frames arrive for it.

        What it has not read is let go, rather than let the host's memory grow.
        """
        if self.closed:
            return
        self.outbox.clear()
        self.queued_bytes = 0
        self.release_senders()
        self.overflowed = True
        self.close(CLOSE_POLICY_VIOLATION, f"too slow: {why}")
        if self.on_overflow is not None:
            self.on_overflow(self)

    def close(self, code: int, reason: str) -> None:
        """Ask the transport to close this worker's WebSocket once its outbox is flushed."""
        if not self.closed:
            self.closed = True
            self.close_code, self.close_reason = code, reason
            self.outbox.put_nowait(None)


@dataclass(eq=False, slots=True)
class PendingCall:
    """A routed call the host forwarded and is waiting to see answered."""

    host_id: int
    caller: WorkerSession
    caller_id: RequestId
    target: WorkerSession
    method: str
    #: ``time.perf_counter()`` when the host forwarded it: the latency histogram's start.
    started: float = 0.0
    #: The call's W3C ``traceparent``, for log lines about it.
    traceparent: str | None = None
