"""When the transport's fast paths run: the off switch, and the versions they were written against.

The fast paths read and write WebSocket frames without websockets' framing (``frames.py``,
``client.py``) and route a worker's messages without ASGI (``uvicorn_protocol.py``). Both
rely on internals of websockets and uvicorn, so they run only with a release in the range
they were tested with, and only while ``AUTOGEN_HTTP_FASTPATH`` is not ``0``; otherwise the
public APIs do the same work, more slowly.
"""

from __future__ import annotations

import functools
import re
from importlib import metadata
from typing import Final

from .._compat import FASTPATH

#: ``[lowest, highest)`` releases each fast path was tested with.
UVICORN_TESTED: Final = ((0, 54), (0, 56))
WEBSOCKETS_TESTED: Final = ((13, 0), (18, 0))


@functools.cache
def _release(distribution: str) -> tuple[int, int] | None:
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:  # pragma: no cover - a vendored copy
        return None
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _tested(distribution: str, tested: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    release = _release(distribution)
    return release is not None and tested[0] <= release < tested[1]


def uvicorn_direct_path_allowed() -> bool:
    """Whether the host may route worker messages past ASGI (uvicorn and websockets internals)."""
    return FASTPATH and _tested("uvicorn", UVICORN_TESTED) and frame_reader_allowed()


def frame_reader_allowed() -> bool:
    """Whether frames may be read and written beside websockets' parser (its internals)."""
    return FASTPATH and _tested("websockets", WEBSOCKETS_TESTED)
