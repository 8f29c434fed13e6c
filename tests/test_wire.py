"""The wire protocol module on its own: text in, typed frames out, and back. No sockets."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from autogen_core import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    AgentId,
    try_get_known_serializers_for_type,
)
from google.protobuf.wrappers_pb2 import StringValue

from autogen_http_runtime._protocol import params, wire
from autogen_http_runtime._protocol.wire import ErrorCode, MessageError

from .utils import Text


def decode_error(text: str | bytes) -> MessageError:
    with pytest.raises(MessageError) as caught:
        wire.decode(text)
    return caught.value


def event_attributes(**overrides: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e1",
        "source": "default",
        "type": "news",
        "agmsgtype": "Text",
        "datacontenttype": JSON_DATA_CONTENT_TYPE,
        "data": {"content": "hi"},
    }
    attributes.update(overrides)
    return {key: value for key, value in attributes.items() if value is not None}


# -- decoding well-formed frames ------------------------------------------------------


@pytest.mark.parametrize("request_id", [0, 7, -3, "abc", ""])
def test_decode_request(request_id: int | str) -> None:
    text = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "send", "params": {"a": [1, 2]}})
    assert wire.decode(text) == wire.Request(request_id, "send", {"a": [1, 2]})


def test_decode_request_without_params_has_empty_params() -> None:
    assert wire.decode('{"jsonrpc":"2.0","id":1,"method":"hello"}') == wire.Request(1, "hello", {})


def test_decode_accepts_bytes() -> None:
    assert wire.decode(b'{"jsonrpc":"2.0","id":1,"method":"m"}') == wire.Request(1, "m", {})


def test_decode_notification() -> None:
    frame = wire.decode('{"jsonrpc":"2.0","method":"cancel","params":{"id":4}}')
    assert frame == wire.Notification("cancel", {"id": 4})


@pytest.mark.parametrize("value", [None, 0, "text", [1], {"payload": None}])
def test_decode_response(value: Any) -> None:
    frame = wire.decode(json.dumps({"jsonrpc": "2.0", "id": 3, "result": value}))
    assert frame == wire.Response(3, value)


def test_decode_error_response() -> None:
    text = json.dumps(
        {"jsonrpc": "2.0", "id": "x", "error": {"code": -32001, "message": "gone", "data": {"k": 1}}}
    )
    assert wire.decode(text) == wire.ErrorResponse("x", -32001, "gone", {"k": 1})


def test_decode_error_response_without_id_or_data() -> None:
    text = '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}'
    assert wire.decode(text) == wire.ErrorResponse(None, -32700, "Parse error", None)


def test_decode_event() -> None:
    attributes = event_attributes(agsender="writer/k1", agrecipient="reader/k/with/slashes")
    frame = wire.decode(json.dumps(attributes))
    assert isinstance(frame, wire.Event)
    assert frame.attributes == attributes
    assert (frame.topic_type, frame.topic_source) == ("news", "default")
    assert wire.event_agent(frame.attributes, wire.EXT_SENDER) == AgentId("writer", "k1")
    assert wire.event_agent(frame.attributes, wire.EXT_RECIPIENT) == AgentId("reader", "k/with/slashes")


def test_decode_event_without_sender() -> None:
    frame = wire.decode(json.dumps(event_attributes()))
    assert isinstance(frame, wire.Event)
    assert wire.event_agent(frame.attributes, wire.EXT_SENDER) is None


# -- decoding malformed frames ----------------------------------------------------------


@pytest.mark.parametrize("text", ["", "{", "not json", '{"a":1,}', b"\xff\xfe", "[" * 100_000])
def test_non_json_is_parse_error(text: str | bytes) -> None:
    error = decode_error(text)
    assert error.code == ErrorCode.PARSE_ERROR == -32700
    assert error.request_id is None


@pytest.mark.parametrize("text", ["[]", "[1, 2]", "1", '"text"', "null", "true"])
def test_json_that_is_not_an_object_is_invalid_request(text: str) -> None:
    error = decode_error(text)
    assert error.code == ErrorCode.INVALID_REQUEST == -32600
    assert error.request_id is None


@pytest.mark.parametrize(
    ("frame", "request_id"),
    [
        ({"hello": "world"}, None),
        ({"id": 5, "method": "send"}, 5),
        ({"jsonrpc": "1.0", "id": "r", "method": "send"}, "r"),
        ({"jsonrpc": 2.0, "id": 9, "result": {}}, 9),
    ],
)
def test_missing_or_wrong_jsonrpc_member(frame: dict[str, Any], request_id: Any) -> None:
    error = decode_error(json.dumps(frame))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.request_id == request_id


@pytest.mark.parametrize("bad_id", [1.5, True, False, [1], {"n": 1}])
@pytest.mark.parametrize("extra", [{"method": "send"}, {"result": 1}])
def test_bad_id_type_is_invalid_request(bad_id: Any, extra: dict[str, Any]) -> None:
    error = decode_error(json.dumps({"jsonrpc": "2.0", "id": bad_id, **extra}))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.request_id is None
    assert "'id'" in error.message


def test_notification_with_null_id_is_invalid_request() -> None:
    error = decode_error('{"jsonrpc":"2.0","id":null,"method":"cancel"}')
    assert error.code == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("method", ["", 5, None, ["send"]])
def test_bad_method_is_invalid_request_with_the_id(method: Any) -> None:
    frame: dict[str, Any] = {"jsonrpc": "2.0", "id": 11, "method": method}
    if method is None:
        frame.pop("method")  # no method and no result/error: not a valid message either
    error = decode_error(json.dumps(frame))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.request_id == 11


@pytest.mark.parametrize("params", [[1, 2], "p", 3, None, True])
def test_params_not_an_object_is_invalid_params_with_the_id(params: Any) -> None:
    error = decode_error(json.dumps({"jsonrpc": "2.0", "id": "q", "method": "send", "params": params}))
    assert error.code == ErrorCode.INVALID_PARAMS == -32602
    assert error.request_id == "q"


def test_notification_params_not_an_object_is_invalid_params() -> None:
    error = decode_error('{"jsonrpc":"2.0","method":"cancel","params":[1]}')
    assert error.code == ErrorCode.INVALID_PARAMS
    assert error.request_id is None


def test_response_without_id_is_invalid_request() -> None:
    error = decode_error('{"jsonrpc":"2.0","result":1}')
    assert error.code == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    "error_member",
    [
        "boom",
        None,
        [],
        {"code": "x", "message": "m"},
        {"code": 1},
        {"message": "m"},
        {"code": 1, "message": 2},
    ],
)
def test_malformed_error_member_is_invalid_request(error_member: Any) -> None:
    error = decode_error(json.dumps({"jsonrpc": "2.0", "id": 1, "error": error_member}))
    assert error.code == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    "overrides",
    [
        {"specversion": "0.3"},
        {"specversion": 1.0},
        {"id": None},
        {"id": ""},
        {"id": 5},
        {"source": None},
        {"source": ""},
        {"type": None},
        {"type": ["news"]},
        {"datacontenttype": 1},
        {"agmsgtype": 1},
        {"agsender": 7},
        {"agsender": "no-slash"},
        {"agsender": "bad type!/key"},
        {"agrecipient": "/key"},
        {"traceparent": {"not": "a string"}},
        {"tracestate": 1},
        {"data_base64": "AAAA"},
    ],
)
def test_bad_event_attributes_are_invalid_request(overrides: dict[str, Any]) -> None:
    attributes = event_attributes()
    attributes.update(overrides)
    attributes = {key: value for key, value in attributes.items() if value is not None}
    error = decode_error(json.dumps(attributes))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.request_id is None


def test_frame_error_carries_code_message_and_id() -> None:
    error = MessageError(ErrorCode.METHOD_NOT_FOUND, "nope", "r1")
    assert (error.code, error.message, error.request_id, str(error)) == (-32601, "nope", "r1", "nope")


# -- builders round-trip through encode/decode -----------------------------------------


def test_request_round_trip() -> None:
    built = wire.request(12, wire.Method.SEND, {"recipient": {"type": "a", "key": "b"}})
    assert wire.decode(wire.encode(built)) == wire.Request(
        12, "send", {"recipient": {"type": "a", "key": "b"}}
    )


def test_notification_round_trip() -> None:
    built = wire.notification(wire.Method.CANCEL, {"id": "r9"})
    assert wire.decode(wire.encode(built)) == wire.Notification("cancel", {"id": "r9"})


def test_result_round_trip() -> None:
    assert wire.decode(wire.encode(wire.result("r", {"x": ["é", 1]}))) == wire.Response("r", {"x": ["é", 1]})


def test_error_round_trip_with_and_without_data() -> None:
    with_data = wire.error(4, ErrorCode.REMOTE_ERROR, "failed", {"type": "ValueError"})
    assert wire.decode(wire.encode(with_data)) == wire.ErrorResponse(
        4, -32003, "failed", {"type": "ValueError"}
    )
    without = wire.error(None, ErrorCode.PARSE_ERROR, "bad")
    assert "data" not in without["error"]
    assert wire.decode(wire.encode(without)) == wire.ErrorResponse(None, -32700, "bad", None)


def test_encode_is_compact_ascii_and_round_trips_any_string() -> None:
    value = {"a": "ü", "b": [1, 2], "lone": "x\ud800y"}
    text = wire.encode(value)
    assert text == '{"a":"\\u00fc","b":[1,2],"lone":"x\\ud800y"}'
    # Pure ASCII: valid UTF-8 whatever the strings held, and its length is its size.
    assert text.isascii() and wire.encoded_size(text) == len(text)
    frame = wire.decode(wire.encode(wire.request(1, "m", value)))
    assert isinstance(frame, wire.Request) and frame.params == value
    assert wire.encoded_size("ü") == 2


def test_json_event_round_trip() -> None:
    payload = wire.Payload("Text", JSON_DATA_CONTENT_TYPE, b'{"content": "hi"}')
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    built = wire.event(
        event_id="e7",
        topic_type="news",
        topic_source="src",
        payload=payload,
        sender=AgentId("writer", "default"),
        trace=trace,
    )
    assert built["data"] == {"content": "hi"}  # JSON travels as JSON, not as a string
    assert "data_base64" not in built
    copy = wire.event_for_recipient(built, AgentId("reader", "r1"))
    assert wire.EXT_RECIPIENT not in built  # the original is left alone
    frame = wire.decode(wire.encode(copy))
    assert isinstance(frame, wire.Event)
    assert (frame.topic_type, frame.topic_source) == ("news", "src")
    assert frame.attributes["id"] == "e7"
    assert frame.attributes["traceparent"] == trace["traceparent"]
    assert wire.event_agent(frame.attributes, wire.EXT_SENDER) == AgentId("writer", "default")
    assert wire.event_agent(frame.attributes, wire.EXT_RECIPIENT) == AgentId("reader", "r1")
    decoded = wire.event_payload(frame.attributes)
    assert (decoded.data_type, decoded.data_content_type) == ("Text", JSON_DATA_CONTENT_TYPE)
    assert json.loads(decoded.data) == {"content": "hi"}


def test_protobuf_event_round_trip_without_sender() -> None:
    payload = wire.Payload("google.protobuf.StringValue", PROTOBUF_DATA_CONTENT_TYPE, b"\x00\x01\xff")
    built = wire.event(
        event_id="e8", topic_type="t", topic_source="s", payload=payload, sender=None, trace={}
    )
    assert wire.EXT_SENDER not in built
    assert built["data_base64"] == base64.b64encode(b"\x00\x01\xff").decode("ascii")
    frame = wire.decode(wire.encode(built))
    assert isinstance(frame, wire.Event)
    assert wire.event_payload(frame.attributes) == payload


# -- payloads ----------------------------------------------------------------------------


def test_json_payload_is_embedded_and_round_trips_through_a_serializer() -> None:
    (serializer,) = try_get_known_serializers_for_type(Text)
    payload = wire.Payload(serializer.type_name, JSON_DATA_CONTENT_TYPE, serializer.serialize(Text("ü ok")))
    body = wire.payload_to_wire(payload)
    assert body == {
        "data_type": serializer.type_name,
        "data_content_type": JSON_DATA_CONTENT_TYPE,
        "data": {"content": "ü ok"},
    }
    back = wire.payload_from_wire(json.loads(wire.encode(body)))
    assert (back.data_type, back.data_content_type) == (serializer.type_name, JSON_DATA_CONTENT_TYPE)
    assert serializer.deserialize(back.data) == Text("ü ok")


def test_protobuf_payload_travels_as_base64() -> None:
    (serializer,) = try_get_known_serializers_for_type(StringValue)
    raw = serializer.serialize(StringValue(value="proto \x00 bytes"))
    payload = wire.Payload(serializer.type_name, PROTOBUF_DATA_CONTENT_TYPE, raw)
    body = wire.payload_to_wire(payload)
    assert "data" not in body
    assert base64.b64decode(body["data_base64"]) == raw
    back = wire.payload_from_wire(json.loads(wire.encode(body)))
    assert back == payload
    assert serializer.deserialize(back.data) == StringValue(value="proto \x00 bytes")


def test_payload_content_type_defaults_to_json() -> None:
    back = wire.payload_from_wire({"data_type": "Text", "data": [1, None]})
    assert back == wire.Payload("Text", JSON_DATA_CONTENT_TYPE, b"[1,null]")


@pytest.mark.parametrize(
    "value",
    [
        None,
        "payload",
        [],
        {"data": {}},
        {"data_type": 5, "data": {}},
        {"data_type": "T", "data_content_type": None, "data": {}},
        {"data_type": "T"},
        {"data_type": "T", "data_content_type": PROTOBUF_DATA_CONTENT_TYPE, "data_base64": "not base64!"},
        {"data_type": "T", "data_content_type": PROTOBUF_DATA_CONTENT_TYPE, "data_base64": "QUJ"},
        {"data_type": "T", "data_content_type": PROTOBUF_DATA_CONTENT_TYPE, "data_base64": 123},
    ],
)
def test_malformed_payload_is_invalid_params(value: Any) -> None:
    with pytest.raises(MessageError) as caught:
        wire.payload_from_wire(value, "reply")
    assert caught.value.code == ErrorCode.INVALID_PARAMS


def test_malformed_payload_error_names_the_field() -> None:
    with pytest.raises(MessageError, match=r"'reply\.data_base64' is not valid base64"):
        wire.payload_from_wire({"data_type": "T", "data_base64": "%%%"}, "reply")


# -- subscriptions ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["type", "type_prefix"])
def test_subscription_round_trip(kind: str) -> None:
    body = wire.subscription_to_wire(wire.SubscriptionSpec("sub-1", kind, "agent.type-1", "topic"))
    assert wire.subscription_from_wire(json.loads(wire.encode(body))) == wire.SubscriptionSpec(
        "sub-1", kind, "agent.type-1", "topic"
    )


def test_subscription_topic_may_be_empty() -> None:
    spec = wire.subscription_from_wire({"id": "s", "kind": "type_prefix", "agent_type": "a", "topic": ""})
    assert spec.topic == ""


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (None, "'subscription' must be an object"),
        ([], "'subscription' must be an object"),
        ({"id": "s", "agent_type": "a", "topic": "t"}, "kind"),
        ({"id": "s", "kind": "default", "agent_type": "a", "topic": "t"}, "kind"),
        ({"kind": "type", "agent_type": "a", "topic": "t"}, "id"),
        ({"id": "", "kind": "type", "agent_type": "a", "topic": "t"}, "id"),
        ({"id": 1, "kind": "type", "agent_type": "a", "topic": "t"}, "id"),
        ({"id": "s", "kind": "type", "topic": "t"}, "agent_type"),
        ({"id": "s", "kind": "type", "agent_type": "bad type", "topic": "t"}, "agent_type"),
        ({"id": "s", "kind": "type", "agent_type": "a/b", "topic": "t"}, "agent_type"),
        ({"id": "s", "kind": "type", "agent_type": "a"}, "topic"),
        ({"id": "s", "kind": "type", "agent_type": "a", "topic": 3}, "topic"),
    ],
)
def test_bad_subscription_is_invalid_params(value: Any, field: str) -> None:
    with pytest.raises(MessageError, match=field) as caught:
        wire.subscription_from_wire(value)
    assert caught.value.code == ErrorCode.INVALID_PARAMS


# -- agent ids and other params -----------------------------------------------------------


def test_agent_id_round_trip() -> None:
    agent = AgentId("my_agent.v2-x", "key/with spaces")
    params = {"recipient": wire.agent_id_to_wire(agent)}
    assert wire.agent_id_from_wire(params, "recipient") == agent
    assert wire.required_agent_id(params, "recipient") == agent


def test_agent_ids_are_cached_only_when_short() -> None:
    """Ids recur and are cached; a long key is read each time, so callers cannot fill the
    cache with large keys."""
    short, long = AgentId("cached", "k" * 10), AgentId("cached", "k" * 10_000)
    before = params._cached_agent_id.cache_info().currsize
    for agent in (short, long, short, long):
        assert wire.required_agent_id({"recipient": wire.agent_id_to_wire(agent)}, "recipient") == agent
    assert params._cached_agent_id.cache_info().currsize == before + 1
    with pytest.raises(MessageError, match="recipient.type"):
        wire.required_agent_id({"recipient": {"type": "bad type", "key": "k" * 10_000}}, "recipient")


def test_optional_agent_id() -> None:
    assert wire.agent_id_from_wire({}, "sender", optional=True) is None
    assert wire.agent_id_from_wire({"sender": None}, "sender", optional=True) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "upper/default",
        ["upper", "default"],
        {"key": "k"},
        {"type": "", "key": "k"},
        {"type": "has space", "key": "k"},
        {"type": "a/b", "key": "k"},
        {"type": 3, "key": "k"},
        {"type": "upper"},
        {"type": "upper", "key": 5},
    ],
)
def test_bad_agent_id_is_invalid_params_naming_the_field(value: Any) -> None:
    with pytest.raises(MessageError, match="recipient") as caught:
        wire.required_agent_id({"recipient": value}, "recipient")
    assert caught.value.code == ErrorCode.INVALID_PARAMS


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a/b", AgentId("a", "b")), ("a/", AgentId("a", "")), ("a.b-c_d/x/y", AgentId("a.b-c_d", "x/y"))],
)
def test_event_agent_parses_type_and_key(text: str, expected: AgentId) -> None:
    assert wire.event_agent({wire.EXT_SENDER: text}, wire.EXT_SENDER) == expected


@pytest.mark.parametrize("text", ["nokey", "/k", "bad type/k", ""])
def test_event_agent_rejects_malformed_ids(text: str) -> None:
    with pytest.raises(MessageError) as caught:
        wire.event_agent({wire.EXT_SENDER: text}, wire.EXT_SENDER)
    assert caught.value.code == ErrorCode.INVALID_REQUEST


def test_required_str() -> None:
    assert wire.required_str({"type": "upper"}, "type") == "upper"
    for given in ({}, {"type": ""}, {"type": 1}, {"type": None}):
        with pytest.raises(MessageError, match="'type'") as caught:
            wire.required_str(given, "type")
        assert caught.value.code == ErrorCode.INVALID_PARAMS


def test_optional_number() -> None:
    assert wire.optional_number({}, "timeout") is None
    assert wire.optional_number({"timeout": None}, "timeout") is None
    assert wire.optional_number({"timeout": 2}, "timeout") == 2.0
    assert wire.optional_number({"timeout": 0.5}, "timeout") == 0.5
    for bad in (-1, True, "3", [3]):
        with pytest.raises(MessageError, match="non-negative number") as caught:
            wire.optional_number({"timeout": bad}, "timeout")
        assert caught.value.code == ErrorCode.INVALID_PARAMS


def test_routed_methods() -> None:
    assert wire.ROUTED_METHODS == {"send", "agent_metadata", "agent_save_state", "agent_load_state"}
