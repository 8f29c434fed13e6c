"""What the routing core counts beyond plain integers: call outcomes, latency, recent errors.

Plain data with no I/O and no metrics library: the core updates it inline while routing,
and ``/metrics`` and the dashboard read it through :mod:`.views` when asked. Updating costs a few hundred
nanoseconds per call (see ``benchmarks/routing_overhead.py``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from .._protocol.wire import RequestId

if TYPE_CHECKING:
    from .session import WorkerSession


class CallOutcome:
    """How a call the host routed ended: the ``outcome`` label of ``autogen_http_calls_total``."""

    #: The serving worker answered with a result.
    OK: Final = "ok"
    #: The serving worker answered with an error (its handler raised, unknown agent, ...).
    ERROR: Final = "error"
    #: The caller cancelled the call (or its deadline passed) before the answer came.
    CANCELLED: Final = "cancelled"
    #: The serving worker disconnected before answering.
    WORKER_DISCONNECTED: Final = "worker_disconnected"
    #: The calling worker disconnected before the answer came.
    CALLER_DISCONNECTED: Final = "caller_disconnected"
    #: The host shut down before the answer came.
    SHUTDOWN: Final = "shutdown"

    ALL: Final = (OK, ERROR, CANCELLED, WORKER_DISCONNECTED, CALLER_DISCONNECTED, SHUTDOWN)


#: Upper bounds, in seconds, of the host's call latency buckets. Agent calls range from
#: microseconds (a lookup) to minutes (a model call), hence the long tail.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

#: How many recent errors the host keeps for the dashboard.
RECENT_ERRORS: Final = 50
_MAX_ERROR_TEXT = 300


class LatencyHistogram:
    """A fixed-bucket histogram: ``counts[i]`` is how many values fell at or below ``bounds[i]``
    and above the bound before it; the last count is for values above every bound."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, values at or below it)`` pairs, ending with ``(inf, count)``."""
        running, pairs = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q``; ``None`` before any value."""
        total = self.count
        if not total:
            return None
        rank = q * total
        for bound, running in self.cumulative():
            if running >= rank:
                return bound
        return float("inf")  # pragma: no cover - the last pair always holds every value


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One error response the host sent or relayed, kept for the dashboard's "recent errors".

    ``worker_id`` is the worker it was sent to (``http (<identity>)`` for an HTTP request) and
    ``request_id`` that caller's own id for the call.
    """

    at: float
    code: int
    message: str
    worker_id: str
    request_id: RequestId | None


def error_record(code: int, message: str, worker_id: str, request_id: RequestId | None) -> ErrorRecord:
    if len(message) > _MAX_ERROR_TEXT:  # a hostile peer's 16 MiB error message is not kept
        message = message[:_MAX_ERROR_TEXT] + "…"
    return ErrorRecord(time.time(), code, message, worker_id, request_id)


def recent_errors() -> deque[ErrorRecord]:
    return deque(maxlen=RECENT_ERRORS)


@dataclass
class RouterStats:
    """Running totals since the host started: what the metrics and listings report."""

    calls_routed: int = 0
    calls_answered: int = 0
    events_published: int = 0
    event_copies_delivered: int = 0
    #: Copies for agents whose type no worker serves, or too large for their worker.
    event_copies_dropped: int = 0
    #: Error responses seen, by JSON-RPC code: sent by the host or relayed from workers.
    errors: dict[int, int] = field(default_factory=dict)
    #: Routed calls that ended, by :class:`CallOutcome`.
    call_outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CallOutcome.ALL, 0))
    #: Seconds from forwarding a call to its answer, for answered calls.
    call_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: Times the host stopped reading from a worker until one it sends to caught up (back-pressure).
    senders_held: int = 0
    #: The last few errors, newest last.
    recent_errors: deque[ErrorRecord] = field(default_factory=recent_errors)
    #: Frames and bytes of workers that have disconnected (connected ones count on their session).
    closed_frames_in: int = 0
    closed_frames_out: int = 0
    closed_bytes_in: int = 0
    closed_bytes_out: int = 0

    def count_error(
        self, code: int, message: str = "", worker_id: str = "", request_id: RequestId | None = None
    ) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        self.recent_errors.append(error_record(code, message, worker_id, request_id))

    def count_error_for(
        self, session: WorkerSession, code: int, message: str, request_id: RequestId | None
    ) -> None:
        """Count an error answered to ``session``, recorded under the names its peer knows:
        ``http (<identity>)`` and the client's own request id for an HTTP request."""
        self.count_error(code, message, session.peer, session.client_id(request_id))

    def count_closed(self, session: WorkerSession) -> None:
        """Keep the traffic of a worker that disconnected in the totals."""
        self.closed_frames_in += session.frames_in
        self.closed_frames_out += session.frames_out
        self.closed_bytes_in += session.bytes_in
        self.closed_bytes_out += session.bytes_out
