"""The wire protocol: JSON-RPC 2.0 and CloudEvents 1.0 messages over one WebSocket. No I/O.

Every WebSocket message is one JSON object in a text frame (or a batch of them, a JSON
array). A message is either

* a JSON-RPC 2.0 request, notification or response (``"jsonrpc": "2.0"``), used for
  point-to-point calls and for control (hello, registration, subscriptions), or
* a CloudEvent 1.0 in JSON format (``"specversion": "1.0"``), used for pub/sub.

This module turns text into typed messages (:func:`decode`, :func:`decode_batch`) and
builds the dictionaries that :func:`encode` turns back into text; the values inside
params are read by :mod:`.params`, payloads by :mod:`.payloads` and subscriptions by
:mod:`.subscriptions`, which it re-exports so that callers have one namespace for the
wire. It never touches a socket, so the host, the worker and the tests share it as is.
``docs/protocol.md`` is the human-readable specification of the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Union

from autogen_core import JSON_DATA_CONTENT_TYPE, AgentId

from .._compat import is_valid_topic_type
from .._exceptions import ErrorCode
from . import json_codec as _json
from .errors import MessageError, RequestId
from .params import (
    agent_id_from_str,
    agent_id_from_wire,
    agent_id_to_wire,
    event_agent,
    optional_number,
    required_agent_id,
    required_str,
    tagged,
)
from .payloads import NO_VALUE, Payload, data_members, payload_from_wire, payload_to_wire, read_payload
from .subscriptions import SubscriptionSpec, subscription_from_wire, subscription_to_wire

__all__ = [
    "CLOUDEVENTS_SPEC_VERSION",
    "EXT_DELIVERY",
    "EXT_MESSAGE_TYPE",
    "EXT_RECIPIENT",
    "EXT_SENDER",
    "NO_VALUE",
    "ROUTED_METHODS",
    "ErrorResponse",
    "Event",
    "JsonObject",
    "Message",
    "MessageError",
    "Method",
    "Notification",
    "Payload",
    "Request",
    "RequestId",
    "Response",
    "SubscriptionSpec",
    "agent_id_from_wire",
    "agent_id_to_wire",
    "decode",
    "decode_batch",
    "encode",
    "encode_bytes",
    "encoded_size",
    "error",
    "event",
    "event_agent",
    "event_for_recipient",
    "event_payload",
    "notification",
    "optional_number",
    "payload_from_wire",
    "payload_to_wire",
    "read_message",
    "request",
    "required_agent_id",
    "required_str",
    "result",
    "subscription_from_wire",
    "subscription_to_wire",
    "tagged",
]

JsonObject = dict[str, Any]


class Method:
    """Names of the JSON-RPC methods. See ``docs/protocol.md`` for each one's params and result."""

    # worker -> host, answered by the host
    HELLO: Final = "hello"
    REGISTER_AGENT_TYPE: Final = "register_agent_type"
    UNREGISTER_AGENT_TYPE: Final = "unregister_agent_type"
    REGISTER_AGENT_INSTANCE: Final = "register_agent_instance"
    DESCRIBE_AGENT_TYPE: Final = "describe_agent_type"
    ADD_SUBSCRIPTION: Final = "add_subscription"
    REMOVE_SUBSCRIPTION: Final = "remove_subscription"
    #: The worker is stopping: route nothing new to it, but relay the answers it still sends.
    DRAIN: Final = "drain"
    BYE: Final = "bye"
    #: Durable agents (``persist_agent_state``): an agent's last saved state, and a new one.
    STATE_LOAD: Final = "state.load"
    STATE_SAVE: Final = "state.save"
    # worker -> host -> the worker serving params.recipient.type, answered by that worker
    SEND: Final = "send"
    AGENT_METADATA: Final = "agent_metadata"
    AGENT_SAVE_STATE: Final = "agent_save_state"
    AGENT_LOAD_STATE: Final = "agent_load_state"
    # notification, either direction: stop working on the call with this id
    CANCEL: Final = "cancel"
    # notification, worker -> host (at-least-once delivery): these event copies were handled
    EVENT_ACK: Final = "event.ack"


#: Methods the host forwards to the worker that serves ``params.recipient.type``.
ROUTED_METHODS: Final = frozenset(
    {Method.SEND, Method.AGENT_METADATA, Method.AGENT_SAVE_STATE, Method.AGENT_LOAD_STATE}
)

CLOUDEVENTS_SPEC_VERSION: Final = "1.0"
#: CloudEvent extension attributes defined by this protocol.
EXT_MESSAGE_TYPE: Final = "agmsgtype"
EXT_SENDER: Final = "agsender"
EXT_RECIPIENT: Final = "agrecipient"
#: At-least-once delivery: the copy's entry in the cluster's deliveries stream, to acknowledge.
EXT_DELIVERY: Final = "agdelivery"


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


Message = Union[Request, Notification, Response, ErrorResponse, Event]


# ---------------------------------------------------------------------------------------
# Text <-> messages


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


def decode(text: str | bytes) -> Message:
    """Parse one frame (a single JSON object) into a typed frame.

    Raises:
        MessageError: With ``PARSE_ERROR`` for text that is not JSON, ``INVALID_REQUEST`` for
            JSON that is neither a JSON-RPC 2.0 message nor a CloudEvent 1.0.
    """
    return read_message(_parse(text))


def decode_batch(text: str | bytes | bytearray) -> list[Message | MessageError]:
    """Parse one WebSocket message: a frame, or a batch of frames (a JSON array of them).

    Never raises: each frame that breaks the protocol stands in the list as the
    :class:`MessageError` to answer it with, so one bad frame spoils no other of its batch.
    """
    try:
        obj = _parse(text)
    except MessageError as exc:
        return [exc]
    if isinstance(obj, list):
        if not obj:
            return [MessageError(ErrorCode.INVALID_REQUEST, "A batch must hold at least one frame.")]
        return [_message_or_error(item) for item in obj]
    return [_message_or_error(obj)]


def _parse(text: str | bytes | bytearray) -> Any:
    try:
        return _json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MessageError(ErrorCode.PARSE_ERROR, f"Parse error: {exc}") from None


def _message_or_error(obj: Any) -> Message | MessageError:
    try:
        return read_message(obj)
    except MessageError as exc:
        return exc


def read_message(obj: Any) -> Message:
    """Check a parsed JSON value as one message (what :func:`decode` does after parsing).

    Raises:
        MessageError: ``INVALID_REQUEST`` for a value that is neither a JSON-RPC 2.0
            message nor a CloudEvent 1.0.
    """
    if not isinstance(obj, dict):
        raise MessageError(ErrorCode.INVALID_REQUEST, "A frame must be a JSON object.")
    if "specversion" in obj:
        return _decode_event(obj)
    return _decode_jsonrpc(obj)


def _decode_jsonrpc(obj: JsonObject) -> Message:
    raw_id = obj.get("id")
    request_id: RequestId | None = raw_id if _is_request_id(raw_id) else None
    if obj.get("jsonrpc") != "2.0":
        raise MessageError(
            ErrorCode.INVALID_REQUEST,
            "Not a JSON-RPC 2.0 message ('jsonrpc' must be '2.0') nor a CloudEvent ('specversion').",
            request_id,
        )
    if "id" in obj and raw_id is not None and request_id is None:
        raise MessageError(ErrorCode.INVALID_REQUEST, "'id' must be a string or an integer.")
    method = obj.get("method")
    if method is not None:
        if not isinstance(method, str) or not method:
            raise MessageError(ErrorCode.INVALID_REQUEST, "'method' must be a non-empty string.", request_id)
        params = obj.get("params", {})
        if not isinstance(params, dict):
            raise MessageError(ErrorCode.INVALID_PARAMS, "'params' must be an object.", request_id)
        if request_id is None:
            if "id" in obj:
                raise MessageError(ErrorCode.INVALID_REQUEST, "'id' must be a string or an integer.")
            return Notification(method, params)
        return Request(request_id, method, params)
    if request_id is None and "error" not in obj:
        raise MessageError(ErrorCode.INVALID_REQUEST, "A response needs an 'id'.")
    if "error" in obj:
        error = obj["error"]
        if (
            not isinstance(error, dict)
            or not isinstance(error.get("code"), int)
            or not isinstance(error.get("message"), str)
        ):
            raise MessageError(
                ErrorCode.INVALID_REQUEST, "'error' must be an object with an integer 'code' and a 'message'."
            )
        return ErrorResponse(request_id, error["code"], error["message"], error.get("data"))
    if "result" not in obj:
        raise MessageError(
            ErrorCode.INVALID_REQUEST, "A JSON-RPC message needs 'method', 'result' or 'error'.", request_id
        )
    assert request_id is not None
    return Response(request_id, obj["result"])


def _is_request_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def _decode_event(obj: JsonObject) -> Event:
    if obj.get("specversion") != CLOUDEVENTS_SPEC_VERSION:
        raise MessageError(ErrorCode.INVALID_REQUEST, "Only CloudEvents 'specversion' '1.0' is supported.")
    for name in ("id", "source", "type"):
        value = obj.get(name)
        if not isinstance(value, str) or not value:
            raise MessageError(
                ErrorCode.INVALID_REQUEST, f"CloudEvent attribute '{name}' must be a non-empty string."
            )
    if not is_valid_topic_type(obj["type"]):
        raise MessageError(
            ErrorCode.INVALID_REQUEST,
            "CloudEvent attribute 'type' is the topic type: letters, digits and _ - . : = only.",
        )
    for name in (
        "datacontenttype",
        EXT_MESSAGE_TYPE,
        EXT_SENDER,
        EXT_RECIPIENT,
        EXT_DELIVERY,
        "traceparent",
        "tracestate",
    ):
        if name in obj and not isinstance(obj[name], str):
            raise MessageError(ErrorCode.INVALID_REQUEST, f"CloudEvent attribute '{name}' must be a string.")
    if "data" in obj and "data_base64" in obj:
        raise MessageError(
            ErrorCode.INVALID_REQUEST, "A CloudEvent carries 'data' or 'data_base64', not both."
        )
    for name in (EXT_SENDER, EXT_RECIPIENT):
        if name in obj:
            agent_id_from_str(obj[name], name, ErrorCode.INVALID_REQUEST)
    return Event(obj)


# ---------------------------------------------------------------------------------------
# Building messages


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
    attributes.update(data_members(payload))
    attributes["datacontenttype"] = payload.data_content_type
    return attributes


def event_for_recipient(attributes: JsonObject, recipient: AgentId) -> JsonObject:
    """The host's copy of a published event for one subscribed agent."""
    copy = dict(attributes)
    copy.pop(EXT_DELIVERY, None)  # only the host sets it (at least once): never a publisher
    copy[EXT_RECIPIENT] = str(recipient)
    return copy


def event_payload(attributes: JsonObject) -> Payload:
    """The payload of a decoded CloudEvent."""
    data_type = attributes.get(EXT_MESSAGE_TYPE, "")
    content_type = attributes.get("datacontenttype", JSON_DATA_CONTENT_TYPE)
    return read_payload(data_type, content_type, attributes, "event")
