"""What one host of a cluster sends another: batches of messages, signed with the cluster's secret. No I/O.

Everything one host has for another within a moment leaves as one batch (one Redis
``PUBLISH``)::

    b"AHC1" | tag (16 bytes) | header length (2 bytes) | header (JSON) | item | item | ...

    header: {"c": cluster name, "h": sending host, "s": sequence number,
             "t": sending time (ms since the epoch), "v": the sender's directory version}
    item:   kind (1 byte) | length of "to" (1 byte) | to | length of data (4 bytes) | data

``kind`` is :data:`FOR_WORKER` (``to`` names a worker of the receiving host: a request,
a cancel, or an event copy for it) or :data:`FOR_HOST` (an answer to a call the receiving
host forwarded; ``to`` is empty). Lengths are big-endian.

The tag is HMAC-SHA256, cut to 16 bytes, over everything after it, keyed by the cluster's
secret (through :func:`batch_key`). A receiver drops a batch whose tag does not verify,
that names another cluster, that was sent more than :data:`MAX_AGE_MS` from its own clock,
or whose sequence number it has seen from that host already: whoever can write to Redis
(or reach a host's link endpoint) but lacks the secret can neither forge a batch nor
replay one. A batch may arrive after a later one of its sender, when the two took
different paths (a direct link and Redis, as a link opens or breaks): it is taken if its
number is within the last :data:`REPLAY_WINDOW` of the highest seen and was not seen, as
IPsec's anti-replay window does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Final

MAGIC: Final = b"AHC1"
TAG_SIZE: Final = 16
#: Batches sent longer ago (or later) than this by the receiver's clock are refused:
#: the hosts' clocks must agree within it.
MAX_AGE_MS: Final = 30_000
FOR_WORKER: Final = 0x77  # "w"
FOR_HOST: Final = 0x61  # "a"
_KINDS: Final = frozenset((FOR_WORKER, FOR_HOST))
#: Sequence numbers below a sender's highest seen that a batch may still carry (if unseen).
REPLAY_WINDOW: Final = 1024


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
    #: The directory version the sender had applied when it sent the batch: what the
    #: receiver's view must have reached before it routes the items (causal order).
    version: int
    items: list[Item]


def batch_key(secret: str | bytes, cluster: str) -> bytes:
    """The key batches of ``cluster`` are signed with, derived from the cluster's secret."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.digest(raw, b"autogen-http-runtime cluster " + cluster.encode("utf-8"), "sha256")


def _tag(key: bytes, body: bytes | memoryview) -> bytes:
    return hmac.digest(key, body, "sha256")[:TAG_SIZE]


class BatchWriter:
    """Seals the batches one host sends: its name, a sequence number, the time, a tag."""

    def __init__(self, key: bytes, cluster: str, host: str) -> None:
        self._key = key
        self._cluster = cluster
        self._host = host
        self._sequence = 0

    def seal(self, items: list[Item], version: int, now_ms: int) -> bytes:
        self._sequence += 1
        header = json.dumps(
            {"c": self._cluster, "h": self._host, "s": self._sequence, "t": now_ms, "v": version},
            separators=(",", ":"),
        ).encode("utf-8")
        parts = [len(header).to_bytes(2, "big"), header]
        for item in items:
            to = item.to.encode("ascii")
            parts += (
                bytes((item.kind, len(to))),
                to,
                len(item.data).to_bytes(4, "big"),
                item.data,
            )
        body = b"".join(parts)
        return MAGIC + _tag(self._key, body) + body


class BatchReader:
    """Verifies the batches one host receives, remembering each sender's last sequence number."""

    def __init__(self, key: bytes, cluster: str) -> None:
        self._key = key
        self._cluster = cluster
        #: Per sender: the highest sequence number seen, and a bit for each of the
        #: REPLAY_WINDOW numbers below it (bit n: highest - 1 - n was seen).
        self._seen: dict[str, tuple[int, int]] = {}

    def forget(self, host: str) -> None:
        """``host`` is gone: its sequence numbers need not be remembered."""
        self._seen.pop(host, None)

    def open(self, data: bytes, now_ms: int) -> Batch:
        """Raises: EnvelopeError: The batch is refused (the message says why)."""
        start = len(MAGIC) + TAG_SIZE
        if len(data) < start + 2 or not data.startswith(MAGIC):
            raise EnvelopeError("not a batch of this runtime")
        body = memoryview(data)[start:]
        if not hmac.compare_digest(_tag(self._key, body), data[len(MAGIC) : start]):
            raise EnvelopeError("bad signature (another cluster secret, or forged)")
        header_size = int.from_bytes(body[:2], "big")
        try:
            header = json.loads(bytes(body[2 : 2 + header_size]))
            cluster, source = header["c"], header["h"]
            sequence, sent, version = int(header["s"]), int(header["t"]), int(header["v"])
        except (ValueError, KeyError, TypeError) as exc:
            raise EnvelopeError(f"bad header: {exc}") from None
        if cluster != self._cluster:
            raise EnvelopeError(f"sent for cluster {cluster!r}")
        if abs(now_ms - sent) > MAX_AGE_MS:
            raise EnvelopeError(f"sent {(now_ms - sent) / 1000:.1f} s from this host's clock")
        highest, below = self._seen.get(source, (0, 0))
        if sequence > highest:
            shift = sequence - highest
            below = ((below << shift) | (1 << (shift - 1))) & _WINDOW_MASK if shift <= REPLAY_WINDOW else 0
            seen = (sequence, below)
        else:
            behind = highest - sequence  # 0: the highest itself
            bit = 1 << (behind - 1) if 0 < behind <= REPLAY_WINDOW else 0
            if not bit or below & bit:
                raise EnvelopeError(f"sequence number {sequence} from {source} seen already (replayed)")
            seen = (highest, below | bit)
        items = _items(body, 2 + header_size)
        self._seen[source] = seen
        return Batch(str(source), sequence, version, items)


_WINDOW_MASK: Final = (1 << REPLAY_WINDOW) - 1


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
