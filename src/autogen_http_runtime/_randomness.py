"""Random values drawn from ``os.urandom`` a page at a time, not a system call each.

WebSocket masking keys (one per frame a worker writes) and message ids (one per call and
event) come from the operating system's source, as websockets' and ``uuid.uuid4()`` draw
them; a draw of 4 KiB serves a thousand masking keys, or 256 message ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

__all__ = ["message_ids", "random_chunks"]

_PAGE = 4096


def random_chunks(size: int) -> Iterator[bytes]:
    """Endless random ``size``-byte strings (``size`` divides 4096)."""
    while True:
        page = os.urandom(_PAGE)
        for start in range(0, _PAGE, size):
            yield page[start : start + size]


def message_ids() -> Iterator[str]:
    """Endless random UUIDs, version 4, as ``str(uuid.uuid4())`` writes them."""
    for chunk in random_chunks(16):
        digits = chunk.hex()
        # RFC 9562: version 4 in the 13th digit, variant 0b10 in the top bits of the 17th.
        variant = "89ab"[int(digits[16], 16) & 3]
        yield f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"
