"""Payloads: a serialized message as it travels inside a call or an event. No I/O.

A payload is the serializer's type name, its content type and the bytes. A JSON payload
travels as a JSON value (``data``), so that any language reads it without a second
decode; anything else as base64 text (``data_base64``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

from autogen_core import JSON_DATA_CONTENT_TYPE

from .._exceptions import ErrorCode
from . import json_codec as _json
from .errors import MessageError

JsonObject = dict[str, Any]


class _NoValue:
    def __repr__(self) -> str:
        return "NO_VALUE"


#: What :attr:`Payload.value` is for a payload known only by its bytes.
NO_VALUE: Final = _NoValue()


class Payload:
    """A serialized message: the serializer's type name, its content type and the bytes.

    A JSON payload may be known by its JSON value instead (``value``; :data:`NO_VALUE`
    otherwise): one read from a frame, or made from a message without writing it as text
    (see ``_serialization``). Its ``data`` is then that value as compact JSON, written when
    first asked for: a payload that only passes from a frame to a message, or from a message
    to a frame, never becomes bytes.
    """

    __slots__ = ("data_type", "data_content_type", "_data", "value")

    def __init__(
        self, data_type: str, data_content_type: str, data: bytes | None = None, *, value: Any = NO_VALUE
    ) -> None:
        if (data is None) == (value is NO_VALUE):
            raise TypeError("A payload has either bytes (data) or a JSON value (value).")
        self.data_type = data_type
        self.data_content_type = data_content_type
        self._data = data
        self.value = value

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = _json.dumpb(self.value)
        return self._data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Payload):
            return NotImplemented
        return (self.data_type, self.data_content_type, self.data) == (
            other.data_type,
            other.data_content_type,
            other.data,
        )

    def __hash__(self) -> int:
        return hash((self.data_type, self.data_content_type, self.data))

    def __repr__(self) -> str:
        held = f"value={self.value!r}" if self.value is not NO_VALUE else f"data={self._data!r}"
        return f"Payload({self.data_type!r}, {self.data_content_type!r}, {held})"


def data_members(payload: Payload) -> JsonObject:
    if payload.data_content_type == JSON_DATA_CONTENT_TYPE:
        # JSON payloads travel as JSON, so any language reads them without a second decode.
        if payload.value is not NO_VALUE:
            return {"data": payload.value}
        try:
            return {"data": _json.loads(payload.data)}
        except ValueError:
            pass  # a serializer that says JSON but is not: carry its bytes untouched
    return {"data_base64": base64.b64encode(payload.data).decode("ascii")}


def payload_to_wire(payload: Payload) -> JsonObject:
    body: JsonObject = {"data_type": payload.data_type, "data_content_type": payload.data_content_type}
    body.update(data_members(payload))
    return body


def payload_from_wire(value: Any, name: str = "payload") -> Payload:
    """Read a payload object ``{"data_type", "data_content_type", "data" | "data_base64"}``.

    The payload holds ``data`` as its JSON value; its bytes are written only if asked for.

    Raises:
        MessageError: ``INVALID_PARAMS`` when the object is malformed.
    """
    if not isinstance(value, dict):
        raise MessageError(ErrorCode.INVALID_PARAMS, f"'{name}' must be an object.")
    data_type = value.get("data_type")
    content_type = value.get("data_content_type", JSON_DATA_CONTENT_TYPE)
    if not isinstance(data_type, str):
        raise MessageError(ErrorCode.INVALID_PARAMS, f"'{name}.data_type' must be a string.")
    if not isinstance(content_type, str):
        raise MessageError(ErrorCode.INVALID_PARAMS, f"'{name}.data_content_type' must be a string.")
    return read_payload(data_type, content_type, value, name)


def read_payload(data_type: str, content_type: str, value: JsonObject, name: str) -> Payload:
    """The payload ``value`` carries in ``data`` or ``data_base64`` (``name`` says where, in errors).

    Raises:
        MessageError: ``INVALID_PARAMS`` when neither member is there or the base64 is bad.
    """
    if "data_base64" in value:
        encoded = value["data_base64"]
        if not isinstance(encoded, str):
            raise MessageError(ErrorCode.INVALID_PARAMS, f"'{name}.data_base64' must be a base64 string.")
        try:
            return Payload(data_type, content_type, base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise MessageError(
                ErrorCode.INVALID_PARAMS, f"'{name}.data_base64' is not valid base64."
            ) from None
    if "data" in value:
        return Payload(data_type, content_type, value=value["data"])
    raise MessageError(ErrorCode.INVALID_PARAMS, f"'{name}' needs 'data' or 'data_base64'.")
