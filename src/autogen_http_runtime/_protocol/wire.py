"""The wire protocol: JSON-RPC 2.0 and CloudEvents 1.0 frames over one WebSocket. No I/O.

Every WebSocket message is one JSON object in a text frame. A frame is either

* a JSON-RPC 2.0 request, notification or response (``"jsonrpc": "2.0"``), used for
  point-to-point calls and for control (hello, registration, subscriptions), or
* a CloudEvent 1.0 in JSON format (``"specversion": "1.0"``), used for pub/sub.

This module turns text into typed frames (:func:`decode`), checks the parameters of
each method, and builds the dictionaries that :func:`encode` turns back into text.
It never touches a socket, so the host, the worker and the tests share it as is.
``docs/protocol.md`` is the human-readable specification of the same rules.
"""

from __future__ import annotations

import base64
import binascii
import functools
import sys
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, Union

from autogen_core import JSON_DATA_CONTENT_TYPE, AgentId
from autogen_core._agent_id import is_valid_agent_type
from autogen_core._topic import is_valid_topic_type

from . import json_codec as _json

JsonObject = dict[str, Any]
RequestId = Union[int, str]


class ErrorCode(IntEnum):
    """JSON-RPC error codes: the standard five, then ours (-32001 to -32012)."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    AGENT_NOT_FOUND = -32001
    WORKER_DISCONNECTED = -32002
    REMOTE_ERROR = -32003
    AGENT_TYPE_CONFLICT = -32004
    SUBSCRIPTION_EXISTS = -32005
    SUBSCRIPTION_NOT_FOUND = -32006
    DEADLINE_EXCEEDED = -32007
    MESSAGE_TOO_LARGE = -32008
    CANCELLED = -32009
    SHUTTING_DOWN = -32010
    TOO_MANY_CALLS = -32011
    FORBIDDEN = -32012


class Method:
    """Names of the JSON-RPC methods. See ``docs/protocol.md`` for each one's params and result."""

    # worker -> host, answered by the host
    HELLO: Final = "hello"
    REGISTER_AGENT_TYPE: Final = "register_agent_type"
    UNREGISTER_AGENT_TYPE: Final = "unregister_agent_type"
    ADD_SUBSCRIPTION: Final = "add_subscription"
    REMOVE_SUBSCRIPTION: Final = "remove_subscription"
    BYE: Final = "bye"
    # worker -> host -> the worker serving params.recipient.type, answered by that worker
    SEND: Final = "send"
    AGENT_METADATA: Final = "agent_metadata"
    AGENT_SAVE_STATE: Final = "agent_save_state"
    AGENT_LOAD_STATE: Final = "agent_load_state"
    # notification, either direction: stop working on the call with this id
    CANCEL: Final = "cancel"


#: Methods the host forwards to the worker that serves ``params.recipient.type``.
ROUTED_METHODS: Final = frozenset(
    {Method.SEND, Method.AGENT_METADATA, Method.AGENT_SAVE_STATE, Method.AGENT_LOAD_STATE}
)

CLOUDEVENTS_SPEC_VERSION: Final = "1.0"
#: CloudEvent extension attributes defined by this protocol.
EXT_MESSAGE_TYPE: Final = "agmsgtype"
EXT_SENDER: Final = "agsender"
EXT_RECIPIENT: Final = "agrecipient"


class FrameError(Exception):
    """A frame or its params broke the protocol; ``code`` and ``id`` say how to answer it."""

    def __init__(self, code: ErrorCode, message: str, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(slots=True)
class Request:
    id: RequestId
    method: str
    params: JsonObject


@dataclass(slots=True)
class Notification:
    method: str
    params: JsonObject


@dataclass(slots=True)
class Response:
    id: RequestId
    result: Any


@dataclass(slots=True)
class ErrorResponse:
    id: RequestId | None
    code: int
    message: str
    data: Any


@dataclass(slots=True)
class Event:
    """A CloudEvent; ``attributes`` is the whole JSON object, data included."""

    attributes: JsonObject

    @property
    def topic_type(self) -> str:
        return str(self.attributes["type"])

    @property
    def topic_source(self) -> str:
        return str(self.attributes["source"])


Frame = Union[Request, Notification, Response, ErrorResponse, Event]


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


# ---------------------------------------------------------------------------------------
# Text <-> frames


def encode(message: JsonObject) -> str:
    """Encode a frame dictionary as compact JSON text.

    The text is pure ASCII (non-ASCII characters are ``\\u`` escapes), so it is always valid
    UTF-8, even for strings holding lone surrogates, and its length is its size on the wire.
    """
    return _json.dumps(message)


def encode_bytes(message: JsonObject) -> bytes:
    """:func:`encode`, as ASCII bytes."""
    return _json.dumpb(message)


def encoded_size(text: str) -> int:
    """Bytes ``text`` takes on the wire (UTF-8)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def decode(text: str | bytes) -> Frame:
    """Parse one frame (a single JSON object) into a typed frame.

    Raises:
        FrameError: With ``PARSE_ERROR`` for text that is not JSON, ``INVALID_REQUEST`` for
            JSON that is neither a JSON-RPC 2.0 message nor a CloudEvent 1.0.
    """
    return _decode_object(_parse(text))


def decode_message(text: str | bytes | bytearray) -> list[Frame | FrameError]:
    """Parse one WebSocket message: a frame, or a batch of frames (a JSON array of them).

    Never raises: each frame that breaks the protocol stands in the list as the
    :class:`FrameError` to answer it with, so one bad frame spoils no other of its batch.
    """
    try:
        obj = _parse(text)
    except FrameError as exc:
        return [exc]
    if isinstance(obj, list):
        if not obj:
            return [FrameError(ErrorCode.INVALID_REQUEST, "A batch must hold at least one frame.")]
        return [_frame_or_error(item) for item in obj]
    return [_frame_or_error(obj)]


def _parse(text: str | bytes | bytearray) -> Any:
    try:
        return _json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FrameError(ErrorCode.PARSE_ERROR, f"Parse error: {exc}") from None


def _frame_or_error(obj: Any) -> Frame | FrameError:
    try:
        return _decode_object(obj)
    except FrameError as exc:
        return exc


def _decode_object(obj: Any) -> Frame:
    if not isinstance(obj, dict):
        raise FrameError(ErrorCode.INVALID_REQUEST, "A frame must be a JSON object.")
    if "specversion" in obj:
        return _decode_event(obj)
    return _decode_jsonrpc(obj)


def _decode_jsonrpc(obj: JsonObject) -> Frame:
    raw_id = obj.get("id")
    request_id: RequestId | None = raw_id if _is_request_id(raw_id) else None
    if obj.get("jsonrpc") != "2.0":
        raise FrameError(
            ErrorCode.INVALID_REQUEST,
            "Not a JSON-RPC 2.0 message ('jsonrpc' must be '2.0') nor a CloudEvent ('specversion').",
            request_id,
        )
    if "id" in obj and raw_id is not None and request_id is None:
        raise FrameError(ErrorCode.INVALID_REQUEST, "'id' must be a string or an integer.")
    method = obj.get("method")
    if method is not None:
        if not isinstance(method, str) or not method:
            raise FrameError(ErrorCode.INVALID_REQUEST, "'method' must be a non-empty string.", request_id)
        params = obj.get("params", {})
        if not isinstance(params, dict):
            raise FrameError(ErrorCode.INVALID_PARAMS, "'params' must be an object.", request_id)
        if request_id is None:
            if "id" in obj:
                raise FrameError(ErrorCode.INVALID_REQUEST, "'id' must be a string or an integer.")
            return Notification(method, params)
        return Request(request_id, method, params)
    if request_id is None and "error" not in obj:
        raise FrameError(ErrorCode.INVALID_REQUEST, "A response needs an 'id'.")
    if "error" in obj:
        error = obj["error"]
        if (
            not isinstance(error, dict)
            or not isinstance(error.get("code"), int)
            or not isinstance(error.get("message"), str)
        ):
            raise FrameError(
                ErrorCode.INVALID_REQUEST, "'error' must be an object with an integer 'code' and a 'message'."
            )
        return ErrorResponse(request_id, error["code"], error["message"], error.get("data"))
    if "result" not in obj:
        raise FrameError(
            ErrorCode.INVALID_REQUEST, "A JSON-RPC message needs 'method', 'result' or 'error'.", request_id
        )
    assert request_id is not None
    return Response(request_id, obj["result"])


def _is_request_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def _decode_event(obj: JsonObject) -> Event:
    if obj.get("specversion") != CLOUDEVENTS_SPEC_VERSION:
        raise FrameError(ErrorCode.INVALID_REQUEST, "Only CloudEvents 'specversion' '1.0' is supported.")
    for name in ("id", "source", "type"):
        value = obj.get(name)
        if not isinstance(value, str) or not value:
            raise FrameError(
                ErrorCode.INVALID_REQUEST, f"CloudEvent attribute '{name}' must be a non-empty string."
            )
    if not is_valid_topic_type(obj["type"]):
        raise FrameError(
            ErrorCode.INVALID_REQUEST,
            "CloudEvent attribute 'type' is the topic type: letters, digits and _ - . : = only.",
        )
    for name in ("datacontenttype", EXT_MESSAGE_TYPE, EXT_SENDER, EXT_RECIPIENT, "traceparent", "tracestate"):
        if name in obj and not isinstance(obj[name], str):
            raise FrameError(ErrorCode.INVALID_REQUEST, f"CloudEvent attribute '{name}' must be a string.")
    if "data" in obj and "data_base64" in obj:
        raise FrameError(ErrorCode.INVALID_REQUEST, "A CloudEvent carries 'data' or 'data_base64', not both.")
    for name in (EXT_SENDER, EXT_RECIPIENT):
        if name in obj:
            _agent_id_from_str(obj[name], name, ErrorCode.INVALID_REQUEST)
    return Event(obj)


# ---------------------------------------------------------------------------------------
# Building frames


def request(request_id: RequestId, method: str, params: JsonObject) -> JsonObject:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def notification(method: str, params: JsonObject) -> JsonObject:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def result(request_id: RequestId, value: Any) -> JsonObject:
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def error(request_id: RequestId | None, code: int, message: str, data: Any = None) -> JsonObject:
    body: JsonObject = {"code": int(code), "message": message}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": body}


def event(
    *,
    event_id: str,
    topic_type: str,
    topic_source: str,
    payload: Payload,
    sender: AgentId | None,
    trace: dict[str, str],
) -> JsonObject:
    """A CloudEvent for a publish; the topic is (``type``, ``source``)."""
    attributes: JsonObject = {
        "specversion": CLOUDEVENTS_SPEC_VERSION,
        "id": event_id,
        "source": topic_source,
        "type": topic_type,
        EXT_MESSAGE_TYPE: payload.data_type,
    }
    if sender is not None:
        attributes[EXT_SENDER] = str(sender)
    attributes.update(trace)
    attributes.update(_data_members(payload))
    attributes["datacontenttype"] = payload.data_content_type
    return attributes


def event_for_recipient(attributes: JsonObject, recipient: AgentId) -> JsonObject:
    """The host's copy of a published event for one subscribed agent."""
    copy = dict(attributes)
    copy[EXT_RECIPIENT] = str(recipient)
    return copy


# ---------------------------------------------------------------------------------------
# Values inside params


def agent_id_to_wire(agent_id: AgentId) -> JsonObject:
    return {"type": agent_id.type, "key": agent_id.key}


def agent_id_from_wire(params: JsonObject, name: str, *, optional: bool = False) -> AgentId | None:
    """Read ``params[name]``, an object ``{"type": str, "key": str}``, as an AgentId.

    Raises:
        FrameError: ``INVALID_PARAMS`` naming the field when it is missing or malformed.
    """
    value = params.get(name)
    if value is None:
        if optional:
            return None
        raise FrameError(ErrorCode.INVALID_PARAMS, f"'{name}' is required.")
    if not isinstance(value, dict):
        raise FrameError(ErrorCode.INVALID_PARAMS, f"'{name}' must be an object with 'type' and 'key'.")
    agent_type, key = value.get("type"), value.get("key")
    if isinstance(agent_type, str) and isinstance(key, str):
        short = len(agent_type) + len(key) <= _CACHED_ID_LENGTH
        agent_id = (_cached_agent_id if short else _cached_agent_id.__wrapped__)(agent_type, key)
        if agent_id is not None:
            return agent_id
    if not isinstance(agent_type, str) or not is_valid_agent_type(agent_type):
        raise FrameError(
            ErrorCode.INVALID_PARAMS, f"'{name}.type' must be a valid agent type (letters, digits, _-.)."
        )
    raise FrameError(ErrorCode.INVALID_PARAMS, f"'{name}.key' must be a string.")


#: Agent ids up to this many characters (type and key) are cached, so that the cache holds
#: a few megabytes at most whatever keys callers send.
_CACHED_ID_LENGTH: Final = 200


@functools.lru_cache(maxsize=4096)
def _cached_agent_id(agent_type: str, key: str) -> AgentId | None:
    """The AgentId, or ``None`` for an invalid type: the ids calls name recur, and checking
    a type takes autogen-core's regular expression twice (ours, then ``AgentId()``'s)."""
    return AgentId(agent_type, key) if is_valid_agent_type(agent_type) else None


def required_agent_id(params: JsonObject, name: str) -> AgentId:
    agent_id = agent_id_from_wire(params, name)
    assert agent_id is not None
    return agent_id


def _agent_id_from_str(value: str, name: str, code: ErrorCode) -> AgentId:
    agent_type, sep, key = value.partition("/")
    if not sep or not is_valid_agent_type(agent_type):
        raise FrameError(code, f"'{name}' must be an agent id 'type/key'.")
    return AgentId(agent_type, key)


def event_agent(attributes: JsonObject, name: str) -> AgentId | None:
    """The agent named by the ``agsender``/``agrecipient`` attribute of a decoded event."""
    value = attributes.get(name)
    return None if value is None else _agent_id_from_str(value, name, ErrorCode.INVALID_REQUEST)


def required_str(params: JsonObject, name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise FrameError(ErrorCode.INVALID_PARAMS, f"'{name}' must be a non-empty string.")
    return value


def optional_number(params: JsonObject, name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    # json reads NaN, Infinity and integers too large for a float: none is a usable number.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= sys.float_info.max:
        raise FrameError(ErrorCode.INVALID_PARAMS, f"'{name}' must be a non-negative number.")
    return float(value)


def _data_members(payload: Payload) -> JsonObject:
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
    body.update(_data_members(payload))
    return body


def payload_from_wire(value: Any, name: str = "payload") -> Payload:
    """Read a payload object ``{"data_type", "data_content_type", "data" | "data_base64"}``.

    The payload holds ``data`` as its JSON value; its bytes are written only if asked for.

    Raises:
        FrameError: ``INVALID_PARAMS`` when the object is malformed.
    """
    if not isinstance(value, dict):
        raise FrameError(ErrorCode.INVALID_PARAMS, f"'{name}' must be an object.")
    data_type = value.get("data_type")
    content_type = value.get("data_content_type", JSON_DATA_CONTENT_TYPE)
    if not isinstance(data_type, str):
        raise FrameError(ErrorCode.INVALID_PARAMS, f"'{name}.data_type' must be a string.")
    if not isinstance(content_type, str):
        raise FrameError(ErrorCode.INVALID_PARAMS, f"'{name}.data_content_type' must be a string.")
    return _payload(data_type, content_type, value, name, "data_base64")


def event_payload(attributes: JsonObject) -> Payload:
    """The payload of a decoded CloudEvent."""
    data_type = attributes.get(EXT_MESSAGE_TYPE, "")
    content_type = attributes.get("datacontenttype", JSON_DATA_CONTENT_TYPE)
    return _payload(data_type, content_type, attributes, "event", "data_base64")


def _payload(data_type: str, content_type: str, value: JsonObject, name: str, base64_member: str) -> Payload:
    if base64_member in value:
        encoded = value[base64_member]
        if not isinstance(encoded, str):
            raise FrameError(ErrorCode.INVALID_PARAMS, f"'{name}.{base64_member}' must be a base64 string.")
        try:
            return Payload(data_type, content_type, base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise FrameError(
                ErrorCode.INVALID_PARAMS, f"'{name}.{base64_member}' is not valid base64."
            ) from None
    if "data" in value:
        return Payload(data_type, content_type, value=value["data"])
    raise FrameError(ErrorCode.INVALID_PARAMS, f"'{name}' needs 'data' or '{base64_member}'.")


def subscription_to_wire(kind: str, subscription_id: str, agent_type: str, topic: str) -> JsonObject:
    """A subscription: ``kind`` is ``"type"`` (exact topic type) or ``"type_prefix"``."""
    return {"id": subscription_id, "kind": kind, "agent_type": agent_type, "topic": topic}


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    id: str
    kind: str
    agent_type: str
    topic: str


def subscription_from_wire(value: Any) -> SubscriptionSpec:
    """Read and check a subscription object.

    Raises:
        FrameError: ``INVALID_PARAMS`` naming the bad field.
    """
    if not isinstance(value, dict):
        raise FrameError(ErrorCode.INVALID_PARAMS, "'subscription' must be an object.")
    kind = value.get("kind")
    if kind not in ("type", "type_prefix"):
        raise FrameError(ErrorCode.INVALID_PARAMS, "'subscription.kind' must be 'type' or 'type_prefix'.")
    sub_id, agent_type, topic = value.get("id"), value.get("agent_type"), value.get("topic")
    if not isinstance(sub_id, str) or not sub_id:
        raise FrameError(ErrorCode.INVALID_PARAMS, "'subscription.id' must be a non-empty string.")
    if not isinstance(agent_type, str) or not is_valid_agent_type(agent_type):
        raise FrameError(ErrorCode.INVALID_PARAMS, "'subscription.agent_type' must be a valid agent type.")
    if not isinstance(topic, str):
        raise FrameError(ErrorCode.INVALID_PARAMS, "'subscription.topic' must be a string.")
    return SubscriptionSpec(sub_id, kind, agent_type, topic)
