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


#: Counts the forks this process came out of: a child draws a fresh page, so that it does
#: not hand out the rest of its parent's.
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forked)


def random_chunks(size: int) -> Iterator[bytes]:
    """Endless random ``size``-byte strings.

    Raises:
        ValueError: ``size`` does not divide 4096.
    """
    if size <= 0 or _PAGE % size:
        raise ValueError(f"size must divide {_PAGE}, not {size}")
    return _chunks(size)


def _chunks(size: int) -> Iterator[bytes]:
    while True:
        page, drawn_after = os.urandom(_PAGE), _forks
        for start in range(0, _PAGE, size):
            if _forks != drawn_after:
                break
            yield page[start : start + size]


def message_ids() -> Iterator[str]:
    """Endless random UUIDs, version 4, as ``str(uuid.uuid4())`` writes them."""
    for chunk in random_chunks(16):
        digits = chunk.hex()
        # RFC 9562: version 4 in the 13th digit, variant 0b10 in the top bits of the 17th.
        variant = "89ab"[int(digits[16], 16) & 3]
        yield f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"
