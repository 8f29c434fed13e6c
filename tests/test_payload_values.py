"""Flat dataclasses skip the JSON text: what reaches the wire, and what comes back, is unchanged.

A codec turns a dataclass with autogen-core's ``DataclassJsonMessageSerializer`` into a JSON
value without writing text, and a JSON value from a frame into the dataclass without reading
any (``_serialization.json_round_trip``). The contract checked here, for awkward values too:
the frame written is the very text the serializer's bytes would have given, and the message
decoded is the one the serializer would have made, types included; whatever the short cut is
unsure of goes through the serializer, errors and all.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from autogen_core import JSON_DATA_CONTENT_TYPE
from autogen_core._serialization import DataclassJsonMessageSerializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autogen_http_runtime._exceptions import SerializationError
from autogen_http_runtime._protocol import json_codec as _json
from autogen_http_runtime._protocol import wire
from autogen_http_runtime._protocol.wire import NO_VALUE, Payload
from autogen_http_runtime._worker.serialization import PayloadCodec, json_round_trip, reads_back_the_same

from .test_json_codec import json_values

VALUES = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Holder:
    value: Any
    note: str = "n"


@dataclass
class Flat:
    text: str
    count: int
    ratio: float
    tags: list[str] = field(default_factory=list)


class Colour(enum.IntEnum):
    RED = 1


class Label(str):
    pass


SERIALIZER = DataclassJsonMessageSerializer(Holder)

#: Values a message may hold that JSON text changes, or that the serializer refuses.
AWKWARD = [
    float("nan"), float("inf"), -float("inf"), -0.0, 5e-324, 1.7976931348623157e308,
    (1, 2), [(1,), {"a": (2,)}], Colour.RED, Label("x"), True, 2**64 - 1, 2**64, -(2**64), 10**5000,
    {1: "int key"}, {1.5: "x"}, {True: 1}, {None: 1}, {(1, 2): "tuple key"}, {"a": {2: 3}},
    b"bytes", {1, 2}, object(), _json.NonFiniteFloat("nan"), "\ud800", "é😀", "",
    [[[[["deep"]]]]], {"": None},
]  # fmt: skip
message_values = st.one_of(json_values, st.sampled_from(AWKWARD))


def codec() -> PayloadCodec:
    c = PayloadCodec()
    c.add(DataclassJsonMessageSerializer(Holder))
    c.add(DataclassJsonMessageSerializer(Flat))
    return c


def frame_text(payload: Payload) -> str:
    return wire.encode(wire.request(1, "send", {"payload": wire.payload_to_wire(payload)}))


def exactly(a: Any, b: Any) -> bool:
    """The same value and the same types all the way down; NaN is NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(exactly(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(exactly(a[key], b[key]) for key in a)
    return bool(a == b)


@VALUES
@given(message_values)
def test_the_frame_is_what_the_serializers_bytes_would_give(value: Any) -> None:
    message = Holder(value)
    try:
        expected = Payload("Holder", JSON_DATA_CONTENT_TYPE, SERIALIZER.serialize(message))
    except Exception:
        with pytest.raises(SerializationError):
            codec().encode(message)
        return
    assert frame_text(codec().encode(message)) == frame_text(expected)


@VALUES
@given(json_values)
def test_a_value_from_a_frame_decodes_as_the_serializer_would(value: Any) -> None:
    # Read from text, as a frame is: with msgspec, NaN then reads as a NonFiniteFloat.
    text = _json.dumps({"payload": {"data_type": "Holder", "data": {"value": value}}})
    payload = wire.payload_from_wire(_json.loads(text)["payload"])
    expected = SERIALIZER.deserialize(payload.data)
    decoded = codec().decode(payload)
    assert type(decoded) is Holder and exactly(decoded.value, expected.value)


@pytest.mark.parametrize("data", [[1, 2], "text", None, {"value": 1, "unknown": 2}, {}])
def test_data_the_dataclass_cannot_take_fails_as_the_serializer_fails(data: Any) -> None:
    payload = wire.payload_from_wire({"data_type": "Holder", "data": data})
    with pytest.raises(TypeError) as expected:
        SERIALIZER.deserialize(payload.data)
    with pytest.raises(TypeError) as raised:
        codec().decode(payload)
    assert str(raised.value) == str(expected.value)


def test_plain_fields_skip_the_text_both_ways() -> None:
    c = codec()
    message = Flat("日本 \ud800", -3, 0.1, ["a", "b"])
    payload = c.encode(message)
    assert payload.value == {"text": "日本 \ud800", "count": -3, "ratio": 0.1, "tags": ["a", "b"]}
    back = c.decode(wire.payload_from_wire(_json.loads(frame_text(payload))["params"]["payload"]))
    assert back == message
    # Asked for, its bytes are the JSON of that value.
    assert json.loads(payload.data) == payload.value


def test_a_message_changed_after_encoding_does_not_change_the_payload() -> None:
    message = Flat("t", 1, 1.0, ["a"])
    payload = codec().encode(message)
    message.tags.append("b")
    assert payload.value["tags"] == ["a"]


def test_other_values_and_serializers_take_the_serializers_path() -> None:
    c = codec()
    assert c.encode(Holder((1, 2))).value is NO_VALUE  # a tuple: the serializer writes a list
    assert c.encode(Holder(float("nan"))).value is NO_VALUE

    @dataclass
    class Sub(Holder):
        extra: int = 0

    Sub.__name__ = "Holder"  # the same type name, another class: not the serializer's class
    assert c.encode(Sub(1)).value is NO_VALUE

    class Custom(DataclassJsonMessageSerializer[Holder]):
        def serialize(self, message: Holder) -> bytes:
            return b'{"value": "custom", "note": "n"}'

    c.add(Custom(Holder))  # replaces the plain one: its own JSON is the rule
    payload = c.encode(Holder(1))
    assert payload.value is NO_VALUE and wire.payload_to_wire(payload)["data"]["value"] == "custom"
    decoded = c.decode(wire.payload_from_wire({"data_type": "Holder", "data": {"value": 7}}))
    assert decoded == Holder(7)


def test_json_round_trip_refuses_what_json_text_would_change() -> None:
    assert json_round_trip({"a": [1, 2.5, None, True, "x"]}) == {"a": [1, 2.5, None, True, "x"]}
    for value in ((1,), Colour.RED, Label("x"), float("inf"), {1: 2}, 2**64, b"x", object()):
        assert json_round_trip([value]) is NO_VALUE
    nested: list[Any] = []
    deepest = nested
    for _ in range(100_000):
        deepest.append([])
        deepest = deepest[0]
    assert json_round_trip(nested) is NO_VALUE  # too deep to walk: left to the serializer
    assert not reads_back_the_same(nested)


@VALUES
@given(message_values)
def test_json_round_trip_is_json_text_there_and_back(value: Any) -> None:
    copied = json_round_trip(value)
    assert (copied is not NO_VALUE) == reads_back_the_same(value)
    if copied is not NO_VALUE:
        assert exactly(copied, json.loads(json.dumps(value)))
        assert exactly(copied, _json.loads(_json.dumps(value)))


def test_a_payload_has_bytes_or_a_value_and_compares_by_its_bytes() -> None:
    by_value = Payload("T", JSON_DATA_CONTENT_TYPE, value={"a": [1, None]})
    by_bytes = Payload("T", JSON_DATA_CONTENT_TYPE, b'{"a":[1,null]}')
    assert by_value == by_bytes and hash(by_value) == hash(by_bytes)
    assert by_value != Payload("T", JSON_DATA_CONTENT_TYPE, b'{"a":[1]}')
    assert by_bytes.value is NO_VALUE and "value=" in repr(by_value) and "data=" in repr(by_bytes)
    with pytest.raises(TypeError):
        Payload("T", JSON_DATA_CONTENT_TYPE)
    with pytest.raises(TypeError):
        Payload("T", JSON_DATA_CONTENT_TYPE, b"{}", value={})
