"""What one host of a cluster sends another: batches of messages, signed with the cluster's
secret, and put back in the order they were sent. No I/O.

Everything one host has for another within a moment leaves as one batch (one Redis
``PUBLISH``, or one message on a direct link)::

    b"AHC2" | tag (16 bytes) | header length (2 bytes) | header (JSON) | item | item | ...

    header: {"c": cluster name, "h": sending host, "d": receiving host,
             "s": sequence number, "p": sequence number of the batch sent before it,
             "t": sending time (ms since the epoch), "v": the sender's directory version}
    item:   kind (1 byte) | length of "to" (1 byte) | to | length of data (4 bytes) | data

``kind`` is :data:`FOR_WORKER` (``to`` names a worker of the receiving host: a request,
a cancel, or an event copy for it) or :data:`FOR_HOST` (an answer to a call the receiving
host forwarded; ``to`` is empty). Lengths are big-endian. A host numbers the batches it
seals from 1 up, for its whole life (its name is never reused); ``p`` is the number of the
last batch it handed over (to Redis or a link) for the same receiver before this one, 0
for the first.

The tag is HMAC-SHA256, cut to 16 bytes, over everything after it, keyed by the cluster's
secret (through :func:`batch_key`). A receiver drops a batch whose tag does not verify,
that names another cluster or another receiver, or that was sent more than
:data:`MAX_AGE_MS` from its own clock. Then :class:`Sequencer` puts each sender's batches
back in order, whichever path each took (Redis or a link, as a link opens and closes), and
drops one it has had already: whoever can write to Redis (or reach a host's link endpoint)
but lacks the secret can neither forge a batch nor replay one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Final

MAGIC: Final = b"AHC2"
TAG_SIZE: Final = 16
#: Batches sent longer ago (or later) than this by the receiver's clock are refused:
#: the hosts' clocks must agree within it.
MAX_AGE_MS: Final = 30_000
FOR_WORKER: Final = 0x77  # "w"
FOR_HOST: Final = 0x61  # "a"
_KINDS: Final = frozenset((FOR_WORKER, FOR_HOST))
#: Batches (and bytes) of one sender a receiver holds while one sent before them is on its way.
MAX_WAITING: Final = 1024
MAX_WAITING_BYTES: Final = 64 << 20
#: Seconds a receiver remembers the numbers of a host that is gone: past MAX_AGE_MS (and
#: a clock off by as much), none of its batches can be replayed.
REMEMBER_GONE: Final = 2 * MAX_AGE_MS / 1000


class EnvelopeError(ValueError):
    """A batch that is refused; the message says why."""


@dataclass(frozen=True, slots=True)
class Item:
    kind: int
    to: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    """A verified batch."""

    source: str
    sequence: int
    #: The sequence number of the batch the sender handed over before this one.
    previous: int
    #: The directory version the sender had applied when it sent the batch: what the
    #: receiver's view must have reached before it routes the items (causal order).
    version: int
    items: list[Item]
    #: Bytes of the sealed batch.
    size: int = 0


def batch_key(secret: str | bytes, cluster: str) -> bytes:
    """The key batches of ``cluster`` are signed with, derived from the cluster's secret."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.digest(raw, b"autogen-http-runtime cluster " + cluster.encode("utf-8"), "sha256")


def _tag(key: bytes, body: bytes | memoryview) -> bytes:
    return hmac.digest(key, body, "sha256")[:TAG_SIZE]


class BatchWriter:
    """Seals the batches one host sends: its name, the receiver's, the numbers, the time, a tag."""

    def __init__(self, key: bytes, cluster: str, host: str) -> None:
        self._key = key
        self._cluster = cluster
        self._host = host

    def seal(
        self, items: list[Item], version: int, now_ms: int, *, to: str, sequence: int, previous: int
    ) -> bytes:
        header = json.dumps(
            {
                "c": self._cluster,
                "h": self._host,
                "d": to,
                "s": sequence,
                "p": previous,
                "t": now_ms,
                "v": version,
            },
            separators=(",", ":"),
        ).encode("utf-8")
        parts = [len(header).to_bytes(2, "big"), header]
        for item in items:
            name = item.to.encode("ascii")
            parts += (
                bytes((item.kind, len(name))),
                name,
                len(item.data).to_bytes(4, "big"),
                item.data,
            )
        body = b"".join(parts)
        return MAGIC + _tag(self._key, body) + body


class BatchReader:
    """Verifies the batches one host receives (see :class:`Sequencer` for their order)."""

    def __init__(self, key: bytes, cluster: str, host: str) -> None:
        self._key = key
        self._cluster = cluster
        self._host = host

    def open(self, data: bytes, now_ms: int) -> Batch:
        """Raises: EnvelopeError: The batch is refused (the message says why)."""
        start = len(MAGIC) + TAG_SIZE
        if len(data) < start + 2 or not data.startswith(MAGIC):
            raise EnvelopeError("not a batch of this runtime (or of another version of it)")
        body = memoryview(data)[start:]
        if not hmac.compare_digest(_tag(self._key, body), data[len(MAGIC) : start]):
            raise EnvelopeError("bad signature (another cluster secret, or forged)")
        header_size = int.from_bytes(body[:2], "big")
        try:
            header = json.loads(bytes(body[2 : 2 + header_size]))
            cluster, source, receiver = header["c"], header["h"], header["d"]
            sequence, previous, sent, version = header["s"], header["p"], header["t"], header["v"]
        except (ValueError, KeyError, TypeError) as exc:
            raise EnvelopeError(f"bad header: {exc}") from None
        if not all(type(n) is int for n in (sequence, previous, sent, version)):
            raise EnvelopeError("bad header: numbers must be integers")
        if cluster != self._cluster:
            raise EnvelopeError(f"sent for cluster {cluster!r}")
        if receiver != self._host:
            raise EnvelopeError(
                f"sent to host {receiver!r}, not this one (that host's cluster_link_url reaches this one?)"
            )
        if abs(now_ms - sent) > MAX_AGE_MS:
            raise EnvelopeError(f"sent {(now_ms - sent) / 1000:.1f} s from this host's clock")
        if not 0 <= previous < sequence:
            raise EnvelopeError("bad sequence numbers")
        items = _items(body, 2 + header_size)
        return Batch(str(source), sequence, previous, version, items, len(data))


class Sequencer:
    """Puts each sender's batches back in the order it sent them, and refuses one seen before.

    A batch goes on once the one its sender handed over before it (``previous``) has gone
    on: one that overtook another (it took a link while the other was in Redis) waits for
    it, up to ``max_wait`` seconds (see :meth:`overdue`); then the missing one is taken as
    lost and the waiting ones go on. A sender's first batch goes on at once. The numbers
    of a host that is gone are kept :data:`REMEMBER_GONE` seconds (:meth:`forget`): one
    that comes back (it was declared gone while it lived) goes on where it was.
    """

    def __init__(self, max_wait: float) -> None:
        self._max_wait = max_wait
        #: Per sender: the highest sequence number gone on (or given up on).
        self._done: dict[str, int] = {}
        #: Per sender with batches waiting: those, by sequence number, with when they came
        #: (empty while every batch comes in order: nothing to look at per batch then).
        self._waiting: dict[str, dict[int, tuple[Batch, float]]] = {}
        #: Hosts gone, and when: their numbers are remembered a while.
        self._gone: dict[str, float] = {}

    def forget(self, host: str, now: float) -> None:
        """``host`` is gone: what waits from it is dropped; its numbers go a while later."""
        self._waiting.pop(host, None)
        self._gone[host] = now
        for name, since in list(self._gone.items()):
            if now - since > REMEMBER_GONE:
                del self._gone[name]
                self._done.pop(name, None)

    @property
    def waiting(self) -> int:
        return sum(len(batches) for batches in self._waiting.values())

    def next_due(self) -> float | None:
        """When the batch that has waited longest must go on without what it waits for."""
        if not self._waiting:
            return None
        oldest = min(since for batches in self._waiting.values() for _, since in batches.values())
        return oldest + self._max_wait

    def offer(self, batch: Batch, now: float) -> list[Batch]:
        """The batches that go on now, in order: ``batch`` and those it was holding up, or none.

        Raises:
            EnvelopeError: ``batch`` was seen before (replayed).
        """
        source, sequence = batch.source, batch.sequence
        done = self._done.get(source, batch.previous)
        waiting = self._waiting.get(source, {})
        if sequence <= done or sequence in waiting:
            raise EnvelopeError(f"sequence number {sequence} from {source} seen already (replayed)")
        if self._gone:
            self._gone.pop(source, None)  # it lives
        self._done[source] = done
        if not waiting and batch.previous <= done:  # in order, as nearly always: on at once
            self._done[source] = sequence
            return [batch]
        self._waiting[source] = waiting
        waiting[sequence] = (batch, now)
        if len(waiting) > MAX_WAITING or sum(b.size for b, _ in waiting.values()) > MAX_WAITING_BYTES:
            return self._give_up(source)
        return self._ready(source)

    def overdue(self, now: float) -> list[Batch]:
        """The batches that waited ``max_wait`` for one sent before them: they go on without it."""
        ready: list[Batch] = []
        for source, waiting in list(self._waiting.items()):
            while waiting and now - min(since for _, since in waiting.values()) >= self._max_wait:
                ready += self._give_up(source)
        return ready

    def _ready(self, source: str) -> list[Batch]:
        done, waiting = self._done[source], self._waiting[source]
        ready: list[Batch] = []
        while waiting:
            first = min(waiting)
            batch = waiting[first][0]
            if batch.previous > done:
                break
            del waiting[first]
            ready.append(batch)
            done = first
        self._done[source] = done
        if not waiting:
            del self._waiting[source]
        return ready

    def _give_up(self, source: str) -> list[Batch]:
        """The first waiting batch goes on as if what it waits for had come; then the rest in order."""
        waiting = self._waiting[source]
        first = min(waiting)
        batch = waiting.pop(first)[0]
        self._done[source] = first
        return [batch, *self._ready(source)]


def _items(body: memoryview, at: int) -> list[Item]:
    items: list[Item] = []
    end = len(body)
    while at < end:
        if at + 2 > end:
            raise EnvelopeError("truncated item")
        kind, to_size = body[at], body[at + 1]
        at += 2
        to = bytes(body[at : at + to_size]).decode("ascii", "replace")
        at += to_size
        if kind not in _KINDS or at + 4 > end:
            raise EnvelopeError("bad item")
        size = int.from_bytes(body[at : at + 4], "big")
        at += 4
        if at + size > end:
            raise EnvelopeError("truncated item")
        items.append(Item(kind, to, bytes(body[at : at + size])))
        at += size
    return items


def keyed_digest(key: bytes, text: str) -> str:
    """A digest of a setting the hosts must agree on, keyed so that Redis learns nothing of it."""
    return hmac.new(key, b"setting " + text.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
