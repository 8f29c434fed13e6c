"""JSON for the wire: msgspec when it is installed (the ``[fast]`` extra), the standard library otherwise.

Both give the same value for the same text, and text that reads back as the same value,
so a host and a worker may use either. msgspec reads and writes strict RFC 8259 JSON;
what only the standard library handles goes to it:

* text with ``NaN`` or ``Infinity``, a number too large for a float, or an escaped lone
  surrogate is read by the standard library (msgspec refuses it), and
* a value msgspec cannot write as ASCII (it would write UTF-8; frames stay ASCII, see
  :func:`dumps`), or cannot write at all, is written by the standard library.

msgspec writes ``NaN`` and the infinities as ``null``, which would change a value. So the
standard library reads them as :class:`NonFiniteFloat`, a float msgspec refuses to write;
and a value that comes from user code rather than from reading JSON, and so may hold a
plain ``float("nan")``, goes through :func:`readable` before it is written.

``AUTOGEN_HTTP_JSON=stdlib`` in the environment turns msgspec off, for comparison or doubt.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

__all__ = ["FAST", "NonFiniteFloat", "dumpb", "dumps", "loads", "readable"]


class NonFiniteFloat(float):
    """``NaN``, ``Infinity`` or ``-Infinity`` read from JSON text.

    JSON has no such numbers, but Python's json module (and so autogen-core's serializers)
    reads and writes them. The subclass makes msgspec refuse to write it, so the standard
    library writes it back unchanged.
    """


def _read_float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else NonFiniteFloat(value)


_lenient = json.JSONDecoder(parse_float=_read_float, parse_constant=NonFiniteFloat)


#: json.dumps(value, separators=...) would build an encoder like this one at every call.
_compact = json.JSONEncoder(separators=(",", ":"))


def _std_dumps(value: Any) -> str:
    return _compact.encode(value)


def _std_dumpb(value: Any) -> bytes:
    return _std_dumps(value).encode("ascii")


def _std_loads(text: str | bytes | bytearray) -> Any:
    return json.loads(text)


def _lenient_loads(text: str | bytes | bytearray) -> Any:
    if isinstance(text, (bytes, bytearray)):
        # As json.loads reads bytes: a byte order mark, UTF-16 or UTF-32, lone surrogates.
        text = bytes(text).decode(json.detect_encoding(text), "surrogatepass")
    return _lenient.decode(text)


def _fast_codec() -> (
    tuple[Callable[[Any], str], Callable[[Any], bytes], Callable[[str | bytes | bytearray], Any]] | None
):
    if os.environ.get("AUTOGEN_HTTP_JSON", "").lower() == "stdlib":
        return None
    try:
        import msgspec
    except ImportError:
        return None
    encode = msgspec.json.Encoder().encode
    decode = msgspec.json.Decoder().decode
    DecodeError = msgspec.DecodeError

    def fast_dumpb(value: Any) -> bytes:
        try:
            data = encode(value)
        except (TypeError, ValueError, OverflowError):  # a NonFiniteFloat, a lone surrogate, ...
            return _std_dumpb(value)
        return data if data.isascii() else _std_dumpb(value)

    def fast_dumps(value: Any) -> str:
        return fast_dumpb(value).decode("ascii")

    def fast_loads(text: str | bytes | bytearray) -> Any:
        try:
            return decode(text)
        except (DecodeError, ValueError):
            # Not strict JSON, or not JSON at all: the standard library reads what can be
            # read and raises its own error (a ValueError) for the rest.
            return _lenient_loads(text)

    return fast_dumps, fast_dumpb, fast_loads


_codec = _fast_codec()

#: True when msgspec does the work.
FAST = _codec is not None

dumps: Callable[[Any], str]
dumpb: Callable[[Any], bytes]
loads: Callable[[str | bytes | bytearray], Any]
dumps, dumpb, loads = _codec or (_std_dumps, _std_dumpb, _std_loads)
# dumps(value) -> compact JSON text, pure ASCII (its length is its size in bytes); dumpb(value)
# -> the same as bytes, for a socket (no copy to str and back for a large frame). Each is given
# only what loads() returned, frames this package builds, and readable()'s results: msgspec
# would also write bytes, sets, dates and the like, which the standard library refuses.
# loads(text, bytes or a bytearray, read as json.loads reads them) -> the value; raises ValueError for
# text that is not JSON, RecursionError for text nested too deeply.


def readable(value: Any) -> Any:
    """``value`` (from user code) as :func:`loads` would give it back: safe to pass to :func:`dumps`.

    Raises:
        TypeError: ``value`` holds something JSON cannot carry (with msgspec on; without
            it ``value`` comes back as it is, and :func:`dumps` raises the same error).
    """
    return loads(_std_dumps(value)) if FAST else value
