"""Write frames in batches: when several wait, one WebSocket message carries them all.

Under load most of a frame's cost is the system call that writes it, so both the host and
the worker send the frames queued for a socket as one JSON array (see ``docs/protocol.md``,
"Batches"). Nothing waits to form a batch: a frame that is alone goes out alone, at once.
"""

from __future__ import annotations

import asyncio
from collections import deque

#: Most frames, and most bytes, one batch may carry.
MAX_BATCH_FRAMES = 512
MAX_BATCH_BYTES = 512 * 1024


async def next_batch(
    queue: asyncio.Queue[str | None], held: deque[str | None], limit: int, batching: bool
) -> list[str] | None:
    """The next frames to write, at least one; ``None`` when the queue says "close".

    Takes what is already queued, up to ``limit`` bytes on the wire (never more than one
    frame past it, so a large frame still goes alone). A frame that does not fit, or the
    close marker, is kept in ``held`` for the next call.
    """
    first = held.popleft() if held else await queue.get()
    if first is None:
        return None
    batch = [first]
    if not batching:
        return batch
    size = len(first) + 2
    limit = min(limit, MAX_BATCH_BYTES)
    while not queue.empty() and len(batch) < MAX_BATCH_FRAMES:
        following = queue.get_nowait()
        if following is None or size + len(following) + 1 > limit:
            held.append(following)
            break
        batch.append(following)
        size += len(following) + 1
    return batch


def joined(batch: list[str]) -> str:
    """One frame as itself; several as a JSON array of them."""
    return batch[0] if len(batch) == 1 else "[" + ",".join(batch) + "]"
