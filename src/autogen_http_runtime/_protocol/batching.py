"""Write frames in batches: when several wait, one WebSocket message carries them all.

Under load most of a frame's cost is the system call that writes it, so both the host and
the worker send the frames queued for a socket as one JSON array (see ``docs/protocol.md``,
"Batches"). Nothing waits to form a batch: the host writes what is queued when its writer
runs, the worker what it sent during one turn of the event loop (or as soon as
:data:`FLUSH_FRAMES` wait); a frame that is alone goes out alone.
"""

from __future__ import annotations

from collections import deque
from typing import AnyStr

#: Most frames, and most bytes, one batch may carry.
MAX_BATCH_FRAMES = 512
MAX_BATCH_BYTES = 512 * 1024
#: A worker writes what it has as soon as this many frames wait, without waiting for the
#: end of the loop's turn: the host and the serving worker then work on the first frames
#: while this one makes the next. At 128 calls in flight this doubled throughput (a batch of
#: all 128 kept the three processes taking turns on one core's worth of work); 32 to 64
#: measured best.
FLUSH_FRAMES = 32
#: Early writes (of FLUSH_FRAMES each) in one turn of the loop after which a sender's next
#: ``drain()`` lets the loop run once: a loop that publishes without ever waiting would
#: otherwise hold it (replies, pings and other tasks wait) for as long as the socket takes data.
YIELD_AFTER_WRITES = 8


def take_batch(frames: deque[AnyStr | None], limit: int, batching: bool = True) -> list[AnyStr] | None:
    """Take the next frames to write from the front of ``frames`` (which must not be empty),
    at least one; ``None`` for the close marker.

    Takes up to ``limit`` bytes on the wire (a frame larger than that goes alone) and
    :data:`MAX_BATCH_FRAMES` frames. A frame that does not fit, and the close marker, stay
    in ``frames``.
    """
    first = frames.popleft()
    if first is None:
        return None
    batch = [first]
    if not batching:
        return batch
    size = len(first) + 2  # of joined(batch): the brackets, and a comma before each next frame
    limit = min(limit, MAX_BATCH_BYTES)
    while frames and len(batch) < MAX_BATCH_FRAMES:
        following = frames[0]
        if following is None or size + len(following) + 1 > limit:
            break
        frames.popleft()
        batch.append(following)
        size += len(following) + 1
    return batch


def joined(batch: list[AnyStr]) -> AnyStr:
    """One frame as itself; several as a JSON array of them (text or bytes, as the frames are)."""
    if len(batch) == 1:
        return batch[0]
    first = batch[0]
    comma, open_, close = (b",", b"[", b"]") if isinstance(first, bytes) else (",", "[", "]")
    return open_ + comma.join(batch) + close
