"""CloudEvents 1.0 over HTTP, turned into the event frames workers receive. No I/O.

``POST /v1/events`` accepts the three content modes of the CloudEvents HTTP binding:

* **binary**: the attributes are ``ce-*`` headers, ``Content-Type`` is ``datacontenttype``
  and the body is the data itself;
* **structured**: ``Content-Type: application/cloudevents+json`` and one event in the
  JSON event format;
* **batched**: ``Content-Type: application/cloudevents-batch+json`` and a JSON array of
  events in that format.

Each event becomes the same JSON object a worker sends over its WebSocket (see the
"Events" section of ``docs/protocol.md``), so subscribers cannot tell where it came from:
``type`` is the topic type, ``source`` the topic source, ``agmsgtype`` the payload's type
name (``dataschema`` stands in when it is absent, as the gRPC runtime puts the type name
there), JSON data travels as ``data`` and anything else as ``data_base64``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote

from autogen_core import JSON_DATA_CONTENT_TYPE

from .._exceptions import ErrorCode
from .._protocol import json_codec as _json
from .._protocol import wire
from .._protocol.wire import JsonObject, MessageError
from .problems import Problem

STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json"
CE_HEADER_PREFIX: Final = "ce-"
#: Where the payload's type name is read from when ``agmsgtype`` is absent.
MESSAGE_TYPE_FALLBACK: Final = "dataschema"

#: CloudEvents attribute names: lower-case ASCII letters and digits.
_ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]+$")
#: Members of a JSON-format event that are not attributes.
_DATA_MEMBERS = ("data", "data_base64")
#: Context attributes that CloudEvents types as strings (URI, URI-reference, timestamp, ...),
#: and this protocol's extensions.
_STRING_ATTRIBUTES = (
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    wire.EXT_MESSAGE_TYPE,
    wire.EXT_SENDER,
)
#: Members that may not be null.
_TYPED_MEMBERS = frozenset(_STRING_ATTRIBUTES) | frozenset(_DATA_MEMBERS)
OCTET_STREAM_CONTENT_TYPE: Final = "application/octet-stream"


def media_type(content_type: str | None) -> str:
    """``"Application/JSON; charset=utf-8"`` -> ``"application/json"``; ``""`` when absent."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_media_type(content_type: str | None) -> bool:
    kind = media_type(content_type)
    return kind in (JSON_DATA_CONTENT_TYPE, "text/json") or kind.endswith("+json")


def events_from_http(headers: Mapping[str, str], body: bytes, *, max_frame_size: int) -> list[wire.Event]:
    """The events a ``POST /v1/events`` request carries, checked as the WebSocket's events are, in order.

    Args:
        headers: The request headers; names are matched without regard to case.
        body: The request body.
        max_frame_size: The largest event frame, in bytes, the host forwards.

    Raises:
        Problem: The request is not one of the three content modes, or an event in
            it is invalid (for a batch, every bad event is listed and none is published).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    content_type = lowered.get("content-type")
    kind = media_type(content_type)
    if kind == STRUCTURED_CONTENT_TYPE:
        objects = [_json_body(body, "a structured-mode event")]
        if not isinstance(objects[0], dict):
            raise _invalid("A structured-mode event must be a JSON object.")
    elif kind == BATCH_CONTENT_TYPE:
        batch = _json_body(body, "a batch of events")
        if not isinstance(batch, list):
            raise _invalid("A batch must be a JSON array of events.")
        objects = batch
    elif kind.startswith("application/cloudevents"):
        raise Problem(
            415,
            "unsupported-event-format",
            "Unsupported event format",
            f"Event format {kind!r} is not supported; send {STRUCTURED_CONTENT_TYPE}, "
            f"{BATCH_CONTENT_TYPE} or binary mode (ce-* headers).",
        )
    else:
        try:
            return [_checked(_binary_event(lowered, content_type, body), max_frame_size)]
        except MessageError as exc:
            raise _invalid(exc.message) from None

    frames: list[wire.Event] = []
    errors: list[JsonObject] = []
    too_large = 0
    for index, obj in enumerate(objects):
        try:
            if not isinstance(obj, dict):
                raise MessageError(ErrorCode.INVALID_REQUEST, "An event must be a JSON object.")
            frames.append(_checked(_structured_event(obj), max_frame_size))
        except Problem as exc:
            if kind == STRUCTURED_CONTENT_TYPE:
                raise
            too_large += 1
            errors.append({"index": index, "detail": exc.detail})
        except MessageError as exc:
            errors.append({"index": index, "detail": exc.message})
    if not errors:
        return frames
    first = errors[0]
    if kind == STRUCTURED_CONTENT_TYPE:
        raise Problem(400, "invalid-event", "Invalid CloudEvent", first["detail"], errors)
    detail = (
        f"{len(errors)} of {len(objects)} events are invalid; none was published. "
        f"Event {first['index']}: {first['detail']}"
    )
    if too_large == len(errors):
        raise Problem(413, "too-large", "Event too large", detail, errors)
    raise Problem(400, "invalid-event", "Invalid CloudEvent", detail, errors)


def _json_body(body: bytes, what: str) -> Any:
    try:
        return _json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _invalid(f"The body of {what} is not JSON: {exc}") from None


def _invalid(detail: str) -> Problem:
    return Problem(400, "invalid-event", "Invalid CloudEvent", detail)


def _binary_event(headers: Mapping[str, str], content_type: str | None, body: bytes) -> JsonObject:
    attributes: JsonObject = {}
    for name, value in headers.items():
        if name.startswith(CE_HEADER_PREFIX):
            attribute = name[len(CE_HEADER_PREFIX) :]
            if not _ATTRIBUTE_NAME.match(attribute):
                raise _invalid(f"Header {name!r}: an attribute name is lower-case letters and digits only.")
            attributes[attribute] = unquote(value)
    if "specversion" not in attributes:
        raise _invalid(
            "Not a CloudEvent: a binary-mode event needs the ce-specversion, ce-id, ce-source and "
            f"ce-type headers; for structured mode send Content-Type {STRUCTURED_CONTENT_TYPE}."
        )
    attributes.pop("datacontenttype", None)  # the binding carries it in Content-Type only
    if not body:
        raise _invalid("The event carries no data: the body is empty.")
    if content_type is None:
        # The JSON event format's rule: no datacontenttype means JSON.
        try:
            attributes["data"] = _json.loads(body)
        except (ValueError, RecursionError):
            raise _invalid(
                "The body is not JSON and there is no Content-Type header saying what it is."
            ) from None
        attributes["datacontenttype"] = JSON_DATA_CONTENT_TYPE
    elif media_type(content_type) == JSON_DATA_CONTENT_TYPE:
        try:
            attributes["data"] = _json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _invalid(f"Content-Type is {content_type!r} but the body is not JSON: {exc}") from None
        attributes["datacontenttype"] = JSON_DATA_CONTENT_TYPE
    else:
        attributes["datacontenttype"] = content_type
        attributes["data_base64"] = base64.b64encode(body).decode("ascii")
    return _finish(attributes)


def _structured_event(obj: JsonObject) -> JsonObject:
    # An extension attribute set to null is absent; the attributes this protocol reads must
    # have values of their own type.
    attributes = {name: value for name, value in obj.items() if value is not None or name in _TYPED_MEMBERS}
    for name, value in attributes.items():
        if name in _DATA_MEMBERS:
            if value is None:
                raise MessageError(ErrorCode.INVALID_REQUEST, f"'{name}' is null: an event must carry data.")
            continue
        if not _ATTRIBUTE_NAME.match(name):
            raise MessageError(
                ErrorCode.INVALID_REQUEST,
                f"Attribute {name!r}: an attribute name is lower-case letters and digits only.",
            )
        if name in _STRING_ATTRIBUTES and not isinstance(value, str):
            raise MessageError(ErrorCode.INVALID_REQUEST, f"Attribute {name!r} must be a string.")
        if not isinstance(value, (str, int)):  # bool is an int; CloudEvents allow both
            raise MessageError(
                ErrorCode.INVALID_REQUEST,
                f"Attribute {name!r} must be a string, an integer or a boolean.",
            )
    if attributes.get("specversion") != wire.CLOUDEVENTS_SPEC_VERSION:
        raise MessageError(ErrorCode.INVALID_REQUEST, "Only CloudEvents 'specversion' '1.0' is supported.")
    if "data" in attributes and "data_base64" in attributes:
        raise MessageError(ErrorCode.INVALID_REQUEST, "An event carries 'data' or 'data_base64', not both.")
    if "data" not in attributes and "data_base64" not in attributes:
        raise MessageError(ErrorCode.INVALID_REQUEST, "The event carries no data ('data' or 'data_base64').")
    if "datacontenttype" not in attributes:
        # Unlabelled: a JSON value is JSON, bytes are just bytes.
        attributes["datacontenttype"] = (
            JSON_DATA_CONTENT_TYPE if "data" in attributes else OCTET_STREAM_CONTENT_TYPE
        )
    content_type = attributes["datacontenttype"]
    if media_type(content_type) == JSON_DATA_CONTENT_TYPE:
        attributes["datacontenttype"] = JSON_DATA_CONTENT_TYPE
        if "data_base64" in attributes:
            raw = _base64(attributes.pop("data_base64"))
            try:
                attributes["data"] = _json.loads(raw)
            except (ValueError, RecursionError):
                raise MessageError(
                    ErrorCode.INVALID_REQUEST,
                    "'data_base64' holds no JSON, but 'datacontenttype' says application/json.",
                ) from None
    elif "data" in attributes:
        # A string is the data itself (its UTF-8 bytes); any other value, its JSON text, as
        # the SDKs write it in binary mode.
        data = attributes.pop("data")
        if isinstance(data, str) and not is_json_media_type(content_type):
            raw = data.encode("utf-8")
        else:
            raw = json.dumps(data, separators=(",", ":")).encode("utf-8")
        attributes["data_base64"] = base64.b64encode(raw).decode("ascii")
    else:
        _base64(attributes["data_base64"])
    return _finish(attributes)


def _base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise MessageError(ErrorCode.INVALID_REQUEST, "'data_base64' must be a base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError(ErrorCode.INVALID_REQUEST, "'data_base64' is not valid base64.") from None


def _finish(attributes: JsonObject) -> JsonObject:
    """Fill in ``agmsgtype`` and drop what only the host may set."""
    attributes.pop(wire.EXT_RECIPIENT, None)
    if wire.EXT_MESSAGE_TYPE not in attributes:
        fallback = attributes.get(MESSAGE_TYPE_FALLBACK)
        if not isinstance(fallback, str) or not fallback:
            raise MessageError(
                ErrorCode.INVALID_REQUEST,
                f"The event needs '{wire.EXT_MESSAGE_TYPE}' (or '{MESSAGE_TYPE_FALLBACK}'): "
                "the payload's type name, which subscribers use to decode it.",
            )
        attributes[wire.EXT_MESSAGE_TYPE] = fallback
    elif not isinstance(attributes[wire.EXT_MESSAGE_TYPE], str) or not attributes[wire.EXT_MESSAGE_TYPE]:
        raise MessageError(
            ErrorCode.INVALID_REQUEST, f"'{wire.EXT_MESSAGE_TYPE}' must be a non-empty string."
        )
    return attributes


def _checked(frame: JsonObject, max_frame_size: int) -> wire.Event:
    """Run the event through the WebSocket codec's own checks, and the size limit."""
    try:
        size = len(wire.encode_bytes(frame))
    except (RecursionError, ValueError) as exc:
        raise MessageError(ErrorCode.INVALID_REQUEST, f"The event cannot be encoded: {exc}") from None
    event = wire.read_message(frame)
    assert isinstance(event, wire.Event)
    if size > max_frame_size:
        raise Problem(
            413,
            "too-large",
            "Event too large",
            f"The event is {size} bytes as a frame; this host forwards at most {max_frame_size}.",
        )
    return event
