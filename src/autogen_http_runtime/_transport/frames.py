"""The common WebSocket frame, read and written without websockets' framing: no I/O here.

Nearly every frame a worker and its host exchange is one whole text message: final and
uncompressed. websockets' sans-I/O parser handles each through a chain of generators, an
event list and a frame object: about 3 us a frame warm, several times that in a process
woken for each frame (docs/performance.md). :class:`FrameReader` takes such frames
straight from the bytes a socket reads, while websockets' parser has nothing of its own
under way (:func:`parser_idle`), so that its protocol ends in the state it would have
reached itself.

Everything else (control frames, fragments, binary or compressed frames, a frame over the
size limit, a protocol error) goes to websockets, from that frame on, which answers pings,
runs the closing handshake and fails the connection as it always does. A connection that
carries binary messages instead (the direct links between the hosts of a cluster) reads
its whole binary frames the same way (``binary=True``), and leaves text frames to websockets.
"""

from __future__ import annotations

import asyncio
import struct
import sys
from collections.abc import Sequence
from typing import Final

from websockets.protocol import Protocol, State
from websockets.streams import StreamReader

try:
    from websockets.speedups import apply_mask  # websockets' own choice, in frames.py
except ImportError:  # pragma: no cover - a build of websockets without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "FrameReader",
    "masked_frame",
    "parser_idle",
    "read_frame",
    "size_limit",
    "frame_header",
    "write_pieces",
]

#: The first byte of a final text (binary) frame with no extension bits (RFC 6455, section 5.2).
_FINAL_TEXT: Final = 0x81
_FINAL_BINARY: Final = 0x82

#: The largest frame the reader holds while the rest of it comes. A larger one, read in many
#: pieces, is left to websockets: its reader keeps one buffer for the connection, where
#: building a fresh one for each large message cost the host about 3 ms of page faults per
#: 1 MiB call. What saves time is not parsing the many small frames.
_LARGEST_HELD: Final = 64 * 1024

_PARSE: Final = Protocol.parse.__code__
_AT_EOF: Final = StreamReader.at_eof.__code__


class FrameReader:
    """Reads the whole text frames (binary ones, with ``binary``) at the start of what a socket
    reads, for one connection.

    :meth:`read` returns the messages it took and the bytes left for websockets' parser. A
    text frame cut short by the end of a read is held here until the rest comes, so
    websockets' parser is not left half-way through a frame it would then have to finish.
    """

    def __init__(self, protocol: Protocol, *, masked: bool, binary: bool = False) -> None:
        self._protocol = protocol
        self._masked = masked
        self._first = _FINAL_BINARY if binary else _FINAL_TEXT
        self._size_limit = size_limit(protocol)
        #: A websockets that does not say its size limit in a way known here reads it all.
        self._usable = hasattr(protocol, "max_message_size") or hasattr(protocol, "max_size")
        #: The start of a text frame cut short, waiting for the rest.
        self._partial: bytearray | None = None

    def read(self, data: bytes) -> tuple[list[bytes | bytearray], bytes | bytearray]:
        """The messages of the whole text frames at the start of what was read, and the
        rest, from the first frame of another kind on, for websockets' parser.

        What was read is ``data``, after the start of a frame held from earlier reads if
        there is one: the rest may begin with those held bytes.
        """
        buffer: bytes | bytearray = data
        if self._partial is not None:
            self._partial += data
            buffer, self._partial = self._partial, None
        if not self._usable or not parser_idle(self._protocol):
            # Held bytes go too: websockets' parser stopped where they start, between frames.
            return [], buffer
        messages: list[bytes | bytearray] = []
        start, end, masked, limit, first = 0, len(buffer), self._masked, self._size_limit, self._first
        while start < end and (
            frame := read_frame(buffer, start, masked=masked, max_size=limit, first=first)
        ):
            message, start = frame
            messages.append(message)
        if start == end:
            return messages, b""
        if _cut_short(buffer, start, masked=masked, max_size=limit, first=first):
            self._partial = (
                buffer if start == 0 and isinstance(buffer, bytearray) else bytearray(buffer[start:])
            )
            return messages, b""
        return messages, buffer[start:]


def read_frame(
    data: bytes | bytearray, start: int, *, masked: bool, max_size: int | None, first: int = _FINAL_TEXT
) -> tuple[bytes | bytearray, int] | None:
    """The payload of the text frame at ``data[start:]``, and where the frame after it starts.

    ``None`` unless a whole, final, uncompressed text frame is there (binary, if ``first`` is
    a final binary frame's first byte), masked if ``masked`` (a client's frame) and not if
    not, and no larger than ``max_size``: anything else is for websockets' parser.
    """
    end = len(data)
    if end - start < 2 or data[start] != first:
        return None
    second = data[start + 1]
    if bool(second & 0x80) is not masked:
        return None
    length = second & 0x7F
    position = start + 2
    if length == 126:
        if end - position < 2:
            return None
        length = int.from_bytes(data[position : position + 2], "big")
        position += 2
    elif length == 127:
        if end - position < 8:
            return None
        length = int.from_bytes(data[position : position + 8], "big")
        position += 8
    if max_size is not None and length > max_size:
        return None
    if masked:
        key = data[position : position + 4]
        position += 4
    after = position + length
    if after > end:
        return None
    payload = data[position:after]
    if masked:
        payload = apply_mask(payload, key)
    return payload, after


def _cut_short(
    data: bytes | bytearray, start: int, *, masked: bool, max_size: int | None, first: int
) -> bool:
    """Whether ``data[start:]`` begins a frame :func:`read_frame` would read, but ends
    first, and is no larger than :data:`_LARGEST_HELD`."""
    available = len(data) - start
    if available == 0 or data[start] != first:
        return False
    if available == 1:
        return True
    second = data[start + 1]
    if bool(second & 0x80) is not masked:
        return False
    length = second & 0x7F
    if length == 126 or length == 127:
        width = 2 if length == 126 else 8
        if available < 2 + width:
            return True
        length = int.from_bytes(data[start + 2 : start + 2 + width], "big")
    return length <= (_LARGEST_HELD if max_size is None else min(max_size, _LARGEST_HELD))


def parser_idle(protocol: Protocol) -> bool:
    """Whether websockets' ``protocol`` waits for the first byte of a new frame, on an open
    connection, with no extension, fragmented message or frame logging to keep track of.

    Then a frame :func:`read_frame` takes changes nothing in ``protocol``: websockets
    would hand the same payload on and keep no state of it. ``False`` for a websockets whose
    parser is built differently: everything then goes through its parser.
    """
    if protocol.state is not State.OPEN or protocol.extensions or protocol.debug:
        return False
    if getattr(protocol, "current_size", getattr(protocol, "cur_size", None)) is not None:
        return False  # a fragmented message is under way (``cur_size`` before websockets 14)
    # The parser is a chain of generators: the handshake's parse(), Protocol.parse(), and
    # the innermost, which between frames is the reader's at_eof() (not discard(), which
    # replaces parse() once a close frame is received or the connection failed).
    outer, inner = None, protocol.parser
    while (next_inner := getattr(inner, "gi_yieldfrom", None)) is not None:
        outer, inner = inner, next_inner
    return getattr(inner, "gi_code", None) is _AT_EOF and getattr(outer, "gi_code", None) is _PARSE


def size_limit(protocol: Protocol) -> int | None:
    """The largest unfragmented message ``protocol`` accepts, from the ``max_size`` it was given."""
    if hasattr(protocol, "max_message_size"):  # websockets 15 and later
        limits = [protocol.max_message_size, getattr(protocol, "max_fragment_size", None)]
    else:
        limits = [getattr(protocol, "max_size", None)]
    given = [limit for limit in limits if isinstance(limit, int)]
    return min(given) if given else None


def frame_header(length: int, *, masked: bool, binary: bool = False) -> bytes:
    """The header of an unfragmented, uncompressed text (or ``binary``) frame of ``length``
    bytes (RFC 6455, section 5.2), without the masking key that follows it in a masked frame."""
    first = _FINAL_BINARY if binary else _FINAL_TEXT
    second = 0x80 if masked else 0
    if length < 126:
        return struct.pack("!BB", first, second | length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, second | 126, length)
    return struct.pack("!BBQ", first, second | 127, length)


def masked_frame(data: bytes, mask: bytes, *, binary: bool = False) -> tuple[bytes, bytes]:
    """A client's text (or ``binary``) frame with the masking key ``mask``: its header, and the
    masked data (two pieces, so a large message is not copied once more to prefix it)."""
    return frame_header(len(data), masked=True, binary=binary) + mask, apply_mask(data, mask)


#: ``writelines()`` of asyncio's transports calls ``pause_writing()`` when the buffer fills
#: except on 3.12.0-3.12.8 and 3.13.0-3.13.1 (CPython gh-127655): there a write of many
#: pieces would bypass flow control, so the pieces are joined and written as one.
_WRITELINES_PAUSES = not (
    (3, 12) <= sys.version_info[:3] < (3, 12, 9) or (3, 13) <= sys.version_info[:3] < (3, 13, 2)
)


def write_pieces(transport: asyncio.WriteTransport, pieces: Sequence[bytes]) -> None:
    """Write ``pieces`` in order, without joining them where the transport allows it."""
    if _WRITELINES_PAUSES:
        transport.writelines(pieces)
    else:  # pragma: no cover - only on the Pythons named above
        transport.write(b"".join(pieces))
