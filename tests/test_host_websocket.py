"""The host's direct WebSocket path on its own: what it writes by hand must be what websockets writes."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from autogen_http_runtime._host_websocket import text_frame_header


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 1 << 20, 32 * 1024 * 1024])
def test_text_frame_header_matches_websockets(length: int) -> None:
    data = b"x" * length
    expected = Frame(Opcode.TEXT, data).serialize(mask=False)
    assert text_frame_header(length) + data == expected
