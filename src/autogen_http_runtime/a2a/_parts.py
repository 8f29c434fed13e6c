"""AutoGen messages <-> A2A message parts: one rule for both directions (docs/a2a.md).

To parts (:func:`to_parts`):

- ``str`` -> one text part;
- ``bytes`` -> one raw part;
- an ``a2a.types.Message`` -> its own parts, as they are;
- anything else Pydantic can turn into JSON (a Pydantic model, a dataclass, a dict, a list,
  a number, ...) -> one data part holding that JSON value.

From parts (:func:`from_parts`), with no type asked for:

- no parts -> ``None``; only text parts -> their texts joined by newlines (one text part: its
  text); a single part of another kind -> its value (a data part's JSON value, a raw part's
  bytes, a URL part's URL); several parts of mixed kinds -> the list of their values.

With a type asked for (``output_type`` of :class:`A2AAgent`):

- ``str``: the text parts joined by newlines; ``bytes``: the first raw part;
- any other type: the JSON value :func:`value_for` reads for the type's JSON Schema,
  validated into it (Pydantic's ``TypeAdapter``, so a Pydantic model, a dataclass,
  ``dict[str, int]``, ...).

:func:`value_for` is also how the host's A2A endpoints turn a message into an agent's input
(``register_a2a_skill``'s ``input_type``), from the JSON Schema the worker sent: the first
data part's value; with no data part, the text parts joined by newlines, which are the value
itself for a string type, the one field of an object type whose only required field is a
string (``Text(content: str)`` takes ``"hi"`` as ``{"content": "hi"}``), and otherwise JSON
text to parse.

A data part carries a ``google.protobuf.Value``, in which every number is a double: without
a type, whole numbers come back as ``int`` (``3``, not ``3.0``); with one, Pydantic converts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic
import pydantic_core
from a2a.helpers import (
    get_data_parts,
    get_raw_parts,
    get_text_parts,
    new_data_part,
    new_raw_part,
    new_text_part,
)
from a2a.types import Message, Part

from .._exceptions import SerializationError

__all__ = ["ReplyTypeError", "from_parts", "part_value", "to_parts", "value_for"]

#: Doubles up to this magnitude hold every whole number exactly.
_EXACT_INTEGERS = 2**53


class ReplyTypeError(ValueError):
    """The parts cannot be turned into the type asked for (a reply's, or an agent's input)."""


def to_parts(value: Any) -> list[Part]:
    """The A2A parts that carry ``value``.

    Raises:
        SerializationError: ``value`` is of a type with no JSON form (a ``ValueError``).
    """
    if isinstance(value, str):
        return [new_text_part(value)]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [new_raw_part(bytes(value))]
    if isinstance(value, Message):
        return list(value.parts)
    try:
        data = pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError as exc:
        raise SerializationError(
            f"Cannot send a {type(value).__name__} to an A2A agent: it is not a str, bytes, "
            f"Pydantic model, dataclass or JSON value ({exc})."
        ) from exc
    return [new_data_part(data)]


def part_value(part: Part) -> Any:
    """One part's value: a text part's text, a data part's JSON value (whole numbers as
    ``int``), a raw part's bytes, a URL part's URL; ``None`` for an empty part."""
    kind = part.WhichOneof("content")
    if kind == "text":
        return part.text
    if kind == "data":
        return _whole_numbers(get_data_parts([part])[0])
    if kind == "raw":
        return part.raw
    if kind == "url":
        return part.url
    return None


def from_parts(parts: Sequence[Part], output_type: Any = None) -> Any:
    """The value ``parts`` carry, as this module's docstring says.

    Raises:
        ReplyTypeError: ``output_type`` was given and the parts do not hold one.
    """
    texts = get_text_parts(parts)
    if output_type is None:
        if not parts:
            return None
        if len(texts) == len(parts):
            return "\n".join(texts)
        if len(parts) == 1:
            return part_value(parts[0])
        return [part_value(part) for part in parts]
    if output_type is str:
        if not texts:
            raise ReplyTypeError(f"Expected a text part, got {_kinds(parts)}.")
        return "\n".join(texts)
    if output_type is bytes:
        raws = get_raw_parts(parts)
        if not raws:
            raise ReplyTypeError(f"Expected a raw part, got {_kinds(parts)}.")
        return raws[0]
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(output_type)
    value = value_for(parts, _schema(adapter), _name(output_type))
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as exc:
        raise ReplyTypeError(f"The reply is not a valid {_name(output_type)}: {exc}") from exc


def value_for(parts: Sequence[Part], schema: Mapping[str, Any] | None, name: str = "the type") -> Any:
    """The JSON value ``parts`` carry for a type whose JSON form ``schema`` describes
    (``None``: not known), as this module's docstring says; not validated against it.

    Raises:
        ReplyTypeError: No data or text part, or text that should be JSON is not.
    """
    data = get_data_parts(parts)
    if data:
        return _whole_numbers(data[0])
    texts = get_text_parts(parts)
    if not texts:
        raise ReplyTypeError(f"Expected a data or text part for {name}, got {_kinds(parts)}.")
    text = "\n".join(texts)
    if schema is not None:
        if schema.get("type") == "string":
            return text
        field = _only_text_field(schema)
        if field is not None:
            return {field: text}
    try:
        return json.loads(text)
    except ValueError:
        raise ReplyTypeError(
            f"Expected a data part, or text holding JSON, for {name}: the text is not JSON."
        ) from None


def _only_text_field(schema: Mapping[str, Any]) -> str | None:
    """The field of an object schema whose one required field is a string, else ``None``."""
    required, properties = schema.get("required"), schema.get("properties")
    if schema.get("type") != "object" or not isinstance(required, list) or len(required) != 1:
        return None
    field = required[0]
    member = properties.get(field) if isinstance(properties, dict) and isinstance(field, str) else None
    return field if isinstance(member, dict) and member.get("type") == "string" else None


def _schema(adapter: pydantic.TypeAdapter[Any]) -> dict[str, Any] | None:
    try:
        return adapter.json_schema()
    except Exception:  # a type Pydantic validates but cannot describe: no text rule for it
        return None


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_INTEGERS:
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value


def _kinds(parts: Sequence[Part]) -> str:
    if not parts:
        return "no parts"
    return ", ".join(f"a {part.WhichOneof('content') or 'empty'} part" for part in parts)


def _name(output_type: Any) -> str:
    return getattr(output_type, "__name__", None) or repr(output_type)
