"""At-least-once events: what the routing core asks of the store that keeps each copy until
its recipient handled it. No I/O.

With ``delivery="at-least-once"`` (a cluster only), the fan-out sends no copy itself: it
hands each one to :class:`Deliveries` (``_cluster/deliveries.py`` keeps them in a Redis
stream), which gives it back to some host's core, :meth:`.events.EventFanOut.deliver`,
to send to the recipient's owner of the moment with the ``agdelivery`` extension. The
worker acknowledges the copy once its handler returned (``event.ack``), and the core
passes that on. A copy nobody acknowledged within the visibility timeout is delivered
again, up to ``max_deliveries`` times, then kept as a dead letter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from .._protocol.wire import EXT_DELIVERY

AT_MOST_ONCE: Final = "at-most-once"
AT_LEAST_ONCE: Final = "at-least-once"
DELIVERY_MODES: Final = (AT_MOST_ONCE, AT_LEAST_ONCE)

#: How a copy with its delivery id starts (the copies are JSON objects the core encoded).
_PREFIX: Final = b'{"' + EXT_DELIVERY.encode() + b'":"'


@dataclass(slots=True)
class DeliveryCounts:
    """What the at-least-once store counts on this host, for ``/metrics``."""

    #: Copies this host put in the store, and copies it took from there and sent on.
    stored: int = 0
    delivered: int = 0
    #: Acknowledgements this host passed on (handled copies, and copies to workers that do not ack).
    acked: int = 0
    #: Copies this host took over from another consumer, to deliver again.
    redelivered: int = 0
    #: Copies this host moved to the dead letters.
    dead_lettered: int = 0
    #: Copies delivered and not yet acknowledged, in the whole cluster (last seen).
    pending: int = 0
    #: Copies this host read and holds for workers that are behind.
    held: int = 0


class Deliveries(Protocol):
    """The store of event copies, each kept until its recipient handled it."""

    counts: DeliveryCounts

    def store(self, recipient: str, copy: bytes) -> None:
        """Keep ``copy`` (a CloudEvent encoded for ``recipient``, ``type/key``) until handled."""

    def acked(self, ids: Sequence[str]) -> None:
        """These copies were handled (or sent to a worker that does not acknowledge)."""

    def failed(self, delivery_id: str, reason: str) -> None:
        """The copy's handler failed: it is delivered again later, and ``reason`` is kept
        as the last reason, for its dead letter."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event copy delivered ``attempts`` times and never acknowledged."""

    #: Its id among the dead letters (a stream entry id, ``<ms>-<n>``).
    id: str
    recipient: str
    #: The CloudEvent, encoded for its recipient.
    copy: bytes
    attempts: int
    #: Why the last delivery failed, as far as the host knows.
    reason: str
    #: When it became a dead letter (Unix time, seconds).
    time: float


class DeadLetters(Protocol):
    """What operators do with dead letters. Each method raises ``ClusterUnavailableError``
    while the store cannot be reached."""

    async def dead_letters(self, count: int) -> list[DeadLetter]:
        """The newest ``count`` dead letters, newest first."""

    async def replay(self, dead_id: str) -> bool:
        """Deliver it again (from its first delivery); ``False``: no such dead letter."""

    async def drop(self, dead_id: str) -> bool:
        """Forget it; ``False``: no such dead letter."""


def check_delivery(delivery: str, visibility_timeout: float, max_deliveries: int) -> None:
    """Raises: ValueError: A delivery setting that cannot work (the message says which)."""
    if delivery not in DELIVERY_MODES:
        raise ValueError(f"delivery must be 'at-most-once' or 'at-least-once', not {delivery!r}.")
    if not 0.05 <= visibility_timeout <= 86_400:
        raise ValueError(
            f"visibility_timeout must be between 0.05 and 86400 seconds, not {visibility_timeout}."
        )
    if isinstance(max_deliveries, bool) or not 1 <= max_deliveries <= 1000:
        raise ValueError(f"max_deliveries must be between 1 and 1000, not {max_deliveries}.")


def with_delivery(copy: bytes, delivery_id: str) -> bytes:
    """``copy`` with the ``agdelivery`` extension first (no parsing: the copy is a JSON object)."""
    return _PREFIX + delivery_id.encode() + b'",' + copy[1:]


def delivery_of(copy: bytes) -> str | None:
    """The ``agdelivery`` a copy made by :func:`with_delivery` carries, or ``None``."""
    if not copy.startswith(_PREFIX):
        return None
    end = copy.find(b'"', len(_PREFIX))
    return copy[len(_PREFIX) : end].decode() if end > 0 else None
