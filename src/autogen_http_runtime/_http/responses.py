"""JSON answers of the HTTP API, written as ASCII.

Starlette's ``JSONResponse`` writes UTF-8, which cannot carry a lone surrogate: a string a
peer sent as ``"\\ud800"`` (JSON allows it, Python reads it) would make the answer fail
after the work was done. Written as the wire writes frames, with ``\\u`` escapes, every
answer can be written, whatever the strings in it.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from .._protocol import json_codec


class AsciiJSONResponse(JSONResponse):
    """``application/json``, ASCII only."""

    def render(self, content: Any) -> bytes:
        return json_codec.dumpb(content)
