"""JSON for Pydantic models and dataclasses that keeps the concrete class of nested values.

In one process a field declared as a base class (``message: BaseChatMessage``) simply holds
the subclass instance. Across processes plain Pydantic JSON loses it twice:

- On the way out, Pydantic writes a field by its *declared* type, dropping the subclass's
  fields (unless the field is marked ``SerializeAsAny``). :func:`dump` writes each nested
  object that is not of its declared class with its own class's serializer.
- On the way in, Pydantic validates a field by its declared type: an abstract class cannot
  be built, and a concrete base swallows the subclass's fields. :func:`load` walks the JSON
  alongside the declared field types and, wherever an object sits in a field declared as a
  model or dataclass, builds the class the object names in its ``"type"`` key
  (:func:`resolve_class`), then hands the instance to the outer validation, which keeps
  instances of the declared type as they are.

Both walks follow only fields declared with model or dataclass types (also inside lists,
tuples, sets, dicts, unions and ``Optional``), and stay out of fields and classes with
custom serializers or before/wrap/plain validators, whose JSON shape is their own business.

Pure functions, no I/O, and nothing here knows AgentChat: its messages qualify because
they carry ``type: Literal["TextMessage"]`` and the like (or, for ``StructuredMessage[T]``,
a computed ``type`` equal to the class name).
"""

from __future__ import annotations

import json
import types
from collections import abc
from typing import Annotated, Any, Union, get_args, get_origin

from autogen_core import JSON_DATA_CONTENT_TYPE, MessageSerializer

from .model_types import (
    DISCRIMINATOR,
    MAPPING_ORIGINS,
    SEQUENCE_ORIGINS,
    container_member,
    dump_json,
    dump_python,
    family,
    fields_to_walk,
    has_custom,
    is_model_class,
    is_named,
    item_types,
    mapping_value_type,
    same_length,
    union_members,
    validate_json,
    validate_python,
)

__all__ = ["ModelJsonSerializer", "dump", "has_model_fields", "is_model_class", "load", "resolve_class"]


def has_model_fields(cls: type[Any]) -> bool:
    """Whether a field of ``cls`` is declared (anywhere in its type) as a model or dataclass."""
    return bool(fields_to_walk(cls))


class ModelJsonSerializer(MessageSerializer[Any]):
    """JSON for one Pydantic model class or dataclass, keeping nested values' concrete classes.

    Writes what autogen-core's ``PydanticJsonMessageSerializer`` writes whenever every nested
    value has its declared class, so peers using that serializer read it unchanged.
    """

    def __init__(self, cls: type[Any]) -> None:
        if not is_model_class(cls):
            raise TypeError(f"{cls!r} is neither a Pydantic model nor a dataclass.")
        self.cls = cls
        # The type name as autogen-core computes it (the class name), so peers agree on it.
        self._type_name: str = cls.__name__

    @property
    def data_content_type(self) -> str:
        return JSON_DATA_CONTENT_TYPE

    @property
    def type_name(self) -> str:
        return self._type_name

    def serialize(self, message: Any) -> bytes:
        return dump(message)

    def deserialize(self, payload: bytes) -> Any:
        return load(self.cls, payload)


def dump(message: Any) -> bytes:
    """JSON for a model or dataclass instance, each nested object with all its own fields."""
    cls = type(message)
    if fields_to_walk(cls):
        dumper = _Dumper()
        data = dumper.fields(message, dump_python(message))
        if dumper.replaced:
            return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return dump_json(message)


def load(cls: type[Any], data: bytes | str) -> Any:
    """Validate JSON ``data`` as ``cls``, building nested objects by their concrete class.

    When every nested object has its declared class, this is exactly Pydantic's JSON
    validation. Otherwise the outer object is validated in Python mode (lax) from the parsed
    JSON, with the nested instances in place.

    Raises:
        pydantic.ValidationError: The data does not fit.
        ValueError: A nested object's ``"type"`` names more than one class (see :func:`resolve_class`).
    """
    if fields_to_walk(cls):
        raw = json.loads(data)
        if isinstance(raw, dict):
            rebuilder = _Rebuilder()
            fields = rebuilder.fields(cls, raw)
            if rebuilder.substituted:
                return validate_python(cls, fields)
    return validate_json(cls, data)


def resolve_class(declared: tuple[type[Any], ...], value: dict[str, Any]) -> type[Any] | None:
    """The class to build ``value`` as, in a field declared as one of ``declared``.

    If ``value["type"]`` is a string, the candidates are the non-abstract classes among
    ``declared`` and all their subclasses (those defined in this process) whose name equals
    it or whose ``type`` field defaults to it. One candidate is the answer. With none (or no
    ``"type"``), the declared class if there is only one, else ``None``.

    Raises:
        ValueError: More than one class matches.
    """
    discriminator = value.get(DISCRIMINATOR)
    if isinstance(discriminator, str):
        matches: list[type[Any]] = []
        for base in declared:
            for candidate in family(base):
                if candidate not in matches and is_named(candidate, discriminator):
                    matches.append(candidate)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(sorted(f"{c.__module__}.{c.__qualname__}" for c in matches))
            raise ValueError(f"The type {discriminator!r} is ambiguous: it names {names}.")
    return declared[0] if len(declared) == 1 else None


# -- the two walks -----------------------------------------------------------------------


class _Rebuilder:
    """Walks parsed JSON; remembers whether it built any object as another class than declared."""

    def __init__(self) -> None:
        self.substituted = False

    def fields(self, cls: type[Any], value: dict[str, Any]) -> dict[str, Any]:
        rebuilt = dict(value)
        for keys, annotation in fields_to_walk(cls):
            for key in keys:
                if key in rebuilt:
                    rebuilt[key] = self.value(annotation, rebuilt[key])
        return rebuilt

    def value(self, annotation: Any, value: Any) -> Any:
        if value is None:
            return None
        origin = get_origin(annotation)
        if origin is Annotated:
            inner, *metadata = get_args(annotation)
            return value if has_custom(metadata) else self.value(inner, value)
        if origin is Union or origin is types.UnionType:
            members = union_members(annotation)
            classes = tuple(m for m in members if is_model_class(m))
            if isinstance(value, dict) and classes:
                return self._object(classes, value)
            shape = container_member(members, value)
            return value if shape is None else self.value(shape, value)
        if origin in SEQUENCE_ORIGINS and isinstance(value, list):
            return [self.value(item_type, item) for item_type, item in item_types(annotation, value)]
        if origin in MAPPING_ORIGINS and isinstance(value, dict):
            value_type = mapping_value_type(annotation)
            return {key: self.value(value_type, item) for key, item in value.items()}
        if is_model_class(annotation) and isinstance(value, dict):
            return self._object((annotation,), value)
        return value

    def _object(self, declared: tuple[type[Any], ...], value: dict[str, Any]) -> Any:
        target = resolve_class(declared, value)
        if target is None:
            return value
        fields = self.fields(target, value)
        if declared == (target,):
            return fields  # the outer validation builds it as declared
        # Another class than the declared one (or one of several in a union): build it here.
        self.substituted = True
        return validate_python(target, fields)


class _Dumper:
    """Walks an instance and its plain dump together; remembers whether it replaced anything."""

    def __init__(self) -> None:
        self.replaced = False

    def fields(self, obj: Any, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for keys, annotation in fields_to_walk(type(obj)):
            name = keys[0]  # dumps use field names, not aliases
            if name in data:
                data[name] = self.value(annotation, getattr(obj, name, None), data[name])
        return data

    def value(self, annotation: Any, obj: Any, data: Any) -> Any:
        if obj is None:
            return data
        origin = get_origin(annotation)
        if origin is Annotated:
            inner, *metadata = get_args(annotation)
            return data if has_custom(metadata) else self.value(inner, obj, data)
        if origin is Union or origin is types.UnionType:
            members = union_members(annotation)
            classes = tuple(m for m in members if is_model_class(m))
            if classes and is_model_class(type(obj)):
                return self._object(classes, obj, data)
            shape = container_member(members, data)
            return data if shape is None else self.value(shape, obj, data)
        if origin in SEQUENCE_ORIGINS and isinstance(data, list) and same_length(obj, data):
            items = list(obj)
            return [
                self.value(t, o, d) for (t, d), o in zip(item_types(annotation, data), items, strict=True)
            ]
        if origin in MAPPING_ORIGINS and isinstance(data, dict) and isinstance(obj, abc.Mapping):
            if len(obj) != len(data):
                return data
            value_type = mapping_value_type(annotation)
            # Dumps keep the mapping's order; keys may have been turned into strings.
            return {
                key: self.value(value_type, item, dumped)
                for (key, dumped), item in zip(data.items(), obj.values(), strict=True)
            }
        if is_model_class(annotation):
            return self._object((annotation,), obj, data)
        return data

    def _object(self, declared: tuple[type[Any], ...], obj: Any, data: Any) -> Any:
        cls = type(obj)
        if not is_model_class(cls):
            return data
        if cls not in declared:
            # Dumped by the declared class: write it again with all of its own fields.
            data = dump_python(obj)
            self.replaced = True
        return self.fields(obj, data)
