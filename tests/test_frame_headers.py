"""Frame headers written by hand (host and worker) must be what websockets writes."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from autogen_http_runtime._transport.frames import frame_header


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 1 << 20, 32 * 1024 * 1024])
def test_text_frame_header_matches_websockets(length: int) -> None:
    data = b"x" * length
    expected = Frame(Opcode.TEXT, data).serialize(mask=False)
    assert frame_header(length, masked=False) + data == expected


@pytest.mark.parametrize("length", [0, 125, 126, 65536])
def test_masked_text_frame_header_matches_websockets(length: int) -> None:
    data, mask = b"y" * length, b"\x01\x02\x03\x04"
    serialized = Frame(Opcode.TEXT, data).serialize(mask=True)
    header = frame_header(length, masked=True)
    # websockets draws its own key: compare all but the key and what it masks.
    assert serialized[: len(header)] == header
    assert len(serialized) == len(header) + len(mask) + length
