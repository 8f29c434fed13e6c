"""The AutoGen message <-> A2A parts rule (autogen_http_runtime/a2a/_parts.py) and the A2A
errors, without a server."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import pytest
from a2a.helpers import new_data_part, new_raw_part, new_text_part, new_url_part
from a2a.types import Message, Part
from a2a.utils.errors import InternalError, TaskNotFoundError
from pydantic import BaseModel

from autogen_http_runtime import HttpRuntimeError, SerializationError
from autogen_http_runtime.a2a import A2AAgentError, A2ATimeoutError
from autogen_http_runtime.a2a._errors import error_from_sdk
from autogen_http_runtime.a2a._parts import ReplyTypeError, from_parts, to_parts, value_for


class Point(BaseModel):
    x: int
    y: float


@dataclass
class Pair:
    left: str
    right: list[int]


@dataclass
class Note:
    text: str
    author: str = "anonymous"


def kinds(parts: list[Part]) -> list[str | None]:
    return [part.WhichOneof("content") for part in parts]


@pytest.mark.parametrize(
    ("value", "kind", "back"),
    [
        ("hi", "text", "hi"),
        (b"\x00\x01", "raw", b"\x00\x01"),
        (Point(x=1, y=2.5), "data", {"x": 1, "y": 2.5}),
        (Pair("a", [1, 2]), "data", {"left": "a", "right": [1, 2]}),
        ({"k": [1, None, True]}, "data", {"k": [1, None, True]}),
        (7, "data", 7),
    ],
)
def test_one_value_one_part_and_back(value: Any, kind: str, back: Any) -> None:
    parts = to_parts(value)
    assert kinds(parts) == [kind]
    assert from_parts(parts) == back


def test_a2a_message_keeps_its_parts() -> None:
    message = Message(parts=[new_text_part("a"), new_url_part("https://x.example/f.png")])
    assert kinds(to_parts(message)) == ["text", "url"]


def test_a_value_without_json_form_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError):
        to_parts(object())


def test_several_parts() -> None:
    assert from_parts([]) is None
    assert from_parts([new_text_part("a"), new_text_part("b")]) == "a\nb"
    mixed = [new_text_part("a"), new_data_part({"n": 2.0}), new_raw_part(b"z")]
    assert from_parts(mixed) == ["a", {"n": 2}, b"z"]


def test_whole_numbers_come_back_as_int_unless_too_large() -> None:
    assert from_parts([new_data_part({"a": 3, "b": 3.5, "c": [1e300]})]) == {"a": 3, "b": 3.5, "c": [1e300]}
    assert type(from_parts([new_data_part(3)])) is int


@pytest.mark.parametrize(
    ("parts", "output_type", "expected"),
    [
        ([new_data_part({"x": 1, "y": 2})], Point, Point(x=1, y=2.0)),
        ([new_text_part('{"x": 1, "y": 2}')], Point, Point(x=1, y=2.0)),
        ([new_data_part({"left": "a", "right": [1.0]})], Pair, Pair("a", [1])),
        ([new_text_part("a"), new_text_part("b")], str, "a\nb"),
        ([new_raw_part(b"z")], bytes, b"z"),
        ([new_data_part({"a": 1})], dict[str, int], {"a": 1}),
        # A type whose one required field is a string takes plain text as that field.
        ([new_text_part("hi"), new_text_part("there")], Note, Note("hi\nthere")),
        ([new_text_part('{"text": "hi"}')], Note, Note('{"text": "hi"}')),
        ([new_data_part({"text": "hi", "author": "me"})], Note, Note("hi", "me")),
    ],
)
def test_output_type(parts: list[Part], output_type: Any, expected: Any) -> None:
    assert from_parts(parts, output_type) == expected


@pytest.mark.parametrize(
    ("parts", "output_type"),
    [
        ([new_data_part({"x": "no"})], Point),
        ([new_text_part("not json")], Point),
        ([new_data_part(1)], str),
        ([new_text_part("a")], bytes),
        ([], Point),
    ],
)
def test_output_type_mismatch(parts: list[Part], output_type: Any) -> None:
    with pytest.raises(ReplyTypeError):
        from_parts(parts, output_type)


STRING = {"type": "string"}
ONE_TEXT_FIELD = {"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"]}
ONE_NUMBER_FIELD = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.mark.parametrize(
    ("parts", "schema", "expected"),
    [
        ([new_text_part("hi")], STRING, "hi"),
        ([new_text_part("hi")], ONE_TEXT_FIELD, {"content": "hi"}),
        ([new_text_part("3")], ONE_NUMBER_FIELD, 3),  # JSON text, checked against the schema later
        ([new_text_part('{"n": 3}')], ONE_NUMBER_FIELD, {"n": 3}),
        ([new_text_part('{"n": 3}')], None, {"n": 3}),
        ([new_text_part("ignored"), new_data_part({"n": 3.0})], ONE_TEXT_FIELD, {"n": 3}),  # data first
    ],
)
def test_the_value_parts_carry_for_a_schema(parts: list[Part], schema: Any, expected: Any) -> None:
    assert value_for(parts, schema) == expected


@pytest.mark.parametrize(
    ("parts", "says"),
    [
        ([new_text_part("not json")], "the text is not JSON"),
        ([new_raw_part(b"z")], "Expected a data or text part for Order, got a raw part."),
        ([], "got no parts"),
    ],
)
def test_no_value_for_the_schema(parts: list[Part], says: str) -> None:
    with pytest.raises(ReplyTypeError, match=says):
        value_for(parts, ONE_NUMBER_FIELD, "Order")


def test_sdk_errors_map_to_reason_and_code() -> None:
    error = error_from_sdk(TaskNotFoundError(data={"id": "t"}), "http://x")
    assert (error.reason, error.code, error.data) == ("TASK_NOT_FOUND", -32001, {"id": "t"})
    error = error_from_sdk(InternalError("kaboom"), "http://x")
    assert (error.reason, error.code) == ("INTERNAL_ERROR", -32603)
    assert str(error) == "A2A agent http://x: kaboom"


def test_errors_are_typed_and_pickle() -> None:
    assert issubclass(A2AAgentError, HttpRuntimeError) and issubclass(A2AAgentError, RuntimeError)
    assert issubclass(A2ATimeoutError, A2AAgentError) and issubclass(A2ATimeoutError, TimeoutError)
    error = A2ATimeoutError("slow", reason="TIMEOUT", task_id="t1")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is A2ATimeoutError
    assert (str(copy), copy.reason, copy.task_id) == ("slow", "TIMEOUT", "t1")
