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

import dataclasses
import inspect
import json
import types
import typing
import weakref
from collections import abc
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

import pydantic
from autogen_core import JSON_DATA_CONTENT_TYPE, MessageSerializer
from pydantic import BaseModel, TypeAdapter

__all__ = ["ModelJsonSerializer", "dump", "has_model_fields", "is_model_class", "load", "resolve_class"]

#: The key an object's concrete class is read from.
DISCRIMINATOR = "type"

# What get_origin() returns for list[X], typing.List[X], Sequence[X] and the like.
_SEQUENCE_ORIGINS: frozenset[Any] = frozenset(
    {list, set, frozenset, tuple, abc.Sequence, abc.MutableSequence, abc.Set, abc.MutableSet, abc.Collection}
)
_MAPPING_ORIGINS: frozenset[Any] = frozenset({dict, abc.Mapping, abc.MutableMapping})
# Field metadata that gives a value its own JSON shape: the walks leave such values alone.
_CUSTOM_METADATA = (
    pydantic.BeforeValidator,
    pydantic.WrapValidator,
    pydantic.PlainValidator,
    pydantic.PlainSerializer,
    pydantic.WrapSerializer,
)


def is_model_class(tp: Any) -> bool:
    """A Pydantic model class or a dataclass (standard or Pydantic)."""
    return isinstance(tp, type) and (issubclass(tp, BaseModel) or dataclasses.is_dataclass(tp))


def has_model_fields(cls: type[Any]) -> bool:
    """Whether a field of ``cls`` is declared (anywhere in its type) as a model or dataclass."""
    return bool(_fields_to_walk(cls))


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
    if _fields_to_walk(cls):
        dumper = _Dumper()
        data = dumper.fields(message, _dump_python(message))
        if dumper.replaced:
            return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _dump_json(message)


def load(cls: type[Any], data: bytes | str) -> Any:
    """Validate JSON ``data`` as ``cls``, building nested objects by their concrete class.

    When every nested object has its declared class, this is exactly Pydantic's JSON
    validation. Otherwise the outer object is validated in Python mode (lax) from the parsed
    JSON, with the nested instances in place.

    Raises:
        pydantic.ValidationError: The data does not fit.
        ValueError: A nested object's ``"type"`` names more than one class (see :func:`resolve_class`).
    """
    if _fields_to_walk(cls):
        raw = json.loads(data)
        if isinstance(raw, dict):
            rebuilder = _Rebuilder()
            fields = rebuilder.fields(cls, raw)
            if rebuilder.substituted:
                return _validate_python(cls, fields)
    return _validate_json(cls, data)


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
            for candidate in _family(base):
                if candidate not in matches and _is_named(candidate, discriminator):
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
        for keys, annotation in _fields_to_walk(cls):
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
            return value if _has_custom(metadata) else self.value(inner, value)
        if origin is Union or origin is types.UnionType:
            members = _members(annotation)
            classes = tuple(m for m in members if is_model_class(m))
            if isinstance(value, dict) and classes:
                return self._object(classes, value)
            shape = _container_member(members, value)
            return value if shape is None else self.value(shape, value)
        if origin in _SEQUENCE_ORIGINS and isinstance(value, list):
            return [self.value(item_type, item) for item_type, item in _items(annotation, value)]
        if origin in _MAPPING_ORIGINS and isinstance(value, dict):
            value_type = _mapping_value_type(annotation)
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
        return _validate_python(target, fields)


class _Dumper:
    """Walks an instance and its plain dump together; remembers whether it replaced anything."""

    def __init__(self) -> None:
        self.replaced = False

    def fields(self, obj: Any, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for keys, annotation in _fields_to_walk(type(obj)):
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
            return data if _has_custom(metadata) else self.value(inner, obj, data)
        if origin is Union or origin is types.UnionType:
            members = _members(annotation)
            classes = tuple(m for m in members if is_model_class(m))
            if classes and is_model_class(type(obj)):
                return self._object(classes, obj, data)
            shape = _container_member(members, data)
            return data if shape is None else self.value(shape, obj, data)
        if origin in _SEQUENCE_ORIGINS and isinstance(data, list) and _same_length(obj, data):
            items = list(obj)
            return [self.value(t, o, d) for (t, d), o in zip(_items(annotation, data), items, strict=True)]
        if origin in _MAPPING_ORIGINS and isinstance(data, dict) and isinstance(obj, abc.Mapping):
            if len(obj) != len(data):
                return data
            value_type = _mapping_value_type(annotation)
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
            data = _dump_python(obj)
            self.replaced = True
        return self.fields(obj, data)


# -- helpers -----------------------------------------------------------------------------


def _members(annotation: Any) -> tuple[Any, ...]:
    """A union's members, without ``None`` and with ``Annotated`` wrappers taken off."""
    members = []
    for member in get_args(annotation):
        if member is type(None):
            continue
        while get_origin(member) is Annotated and not _has_custom(get_args(member)[1:]):
            member = get_args(member)[0]
        members.append(member)
    return tuple(members)


def _container_member(members: tuple[Any, ...], value: Any) -> Any:
    """The one list-like (for a list) or dict-like (for a dict) member of a union, if exactly one."""
    if isinstance(value, list):
        shapes = [m for m in members if get_origin(m) in _SEQUENCE_ORIGINS]
    elif isinstance(value, dict):
        shapes = [m for m in members if get_origin(m) in _MAPPING_ORIGINS]
    else:
        return None
    return shapes[0] if len(shapes) == 1 else None


def _items(annotation: Any, value: list[Any]) -> list[tuple[Any, Any]]:
    """(declared item type, item) for each item of a list-like value."""
    args = get_args(annotation)
    if get_origin(annotation) is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        return [(args[i] if i < len(args) else Any, item) for i, item in enumerate(value)]
    item_type = args[0] if args else Any
    return [(item_type, item) for item in value]


def _mapping_value_type(annotation: Any) -> Any:
    args = get_args(annotation)
    return args[1] if len(args) == 2 else Any


def _same_length(obj: Any, data: list[Any]) -> bool:
    return isinstance(obj, abc.Collection) and not isinstance(obj, str | bytes) and len(obj) == len(data)


def _has_custom(metadata: Any) -> bool:
    return any(isinstance(item, _CUSTOM_METADATA) for item in metadata)


def _is_named(cls: type[Any], discriminator: str) -> bool:
    if inspect.isabstract(cls):
        return False
    return cls.__name__ == discriminator or bool(_type_default(cls) == discriminator)


def _type_default(cls: type[Any]) -> Any:
    if issubclass(cls, BaseModel):
        field = cls.model_fields.get(DISCRIMINATOR)
        return None if field is None else field.default
    for dc_field in dataclasses.fields(cls):
        if dc_field.name == DISCRIMINATOR:
            return dc_field.default
    return None


def _family(base: type[Any]) -> Iterator[type[Any]]:
    """``base`` and every subclass of it, depth first."""
    seen: set[type[Any]] = set()
    stack = [base]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield cls
        stack.extend(reversed(cls.__subclasses__()))


_FieldPlan = tuple[tuple[tuple[str, ...], Any], ...]
# Per class, computed once; weak, so that classes made on the fly (tests, generics) can go.
_field_plans: weakref.WeakKeyDictionary[type[Any], _FieldPlan] = weakref.WeakKeyDictionary()
_adapters: weakref.WeakKeyDictionary[type[Any], TypeAdapter[Any]] = weakref.WeakKeyDictionary()


def _fields_to_walk(cls: type[Any]) -> _FieldPlan:
    """(field name and input aliases, declared type) of the fields of ``cls`` the walks follow."""
    plan = _field_plans.get(cls)
    if plan is None:
        plan = _field_plans[cls] = _plan_fields(cls)
    return plan


def _plan_fields(cls: type[Any]) -> _FieldPlan:
    found: list[tuple[tuple[str, ...], Any]] = []
    pydantic_fields = getattr(cls, "__pydantic_fields__", None)  # models and Pydantic dataclasses
    if isinstance(pydantic_fields, dict):
        custom = _custom_fields(cls)
        if custom is None:
            return ()
        for name, info in pydantic_fields.items():
            if name in custom or _has_custom(info.metadata) or not _mentions_model(info.annotation):
                continue
            keys = [name]
            for alias in (info.alias, info.validation_alias):
                if isinstance(alias, str) and alias not in keys:
                    keys.append(alias)
            found.append((tuple(keys), info.annotation))
    elif dataclasses.is_dataclass(cls):
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception:  # unresolvable forward references: use what the fields say
            hints = {}
        for dc_field in dataclasses.fields(cls):
            annotation = hints.get(dc_field.name, dc_field.type)
            if _mentions_model(annotation):
                found.append(((dc_field.name,), annotation))
    return tuple(found)


def _custom_fields(cls: type[Any]) -> set[str] | None:
    """Names of fields with their own serializer or raw-input validator; ``None`` if the whole
    class has one (then its JSON shape is its own business)."""
    decorators = getattr(cls, "__pydantic_decorators__", None)
    if decorators is None:
        return set()
    if decorators.model_serializers or any(
        d.info.mode != "after" for d in decorators.model_validators.values()
    ):
        return None
    names: set[str] = set()
    for decorator in decorators.field_serializers.values():
        names.update(decorator.info.fields)
    for validator in decorators.field_validators.values():
        if validator.info.mode != "after":
            names.update(validator.info.fields)
    return names


def _mentions_model(annotation: Any) -> bool:
    if is_model_class(annotation):
        return True
    return any(_mentions_model(arg) for arg in get_args(annotation))


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    adapter = _adapters.get(cls)
    if adapter is None:
        adapter = _adapters[cls] = TypeAdapter(cls)
    return adapter


def _dump_json(obj: Any) -> bytes:
    if isinstance(obj, BaseModel):
        return obj.model_dump_json().encode("utf-8")
    return _adapter(type(obj)).dump_json(obj)


def _dump_python(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return _adapter(type(obj)).dump_python(obj, mode="json")


def _validate_json(cls: type[Any], data: bytes | str) -> Any:
    if issubclass(cls, BaseModel):
        return cls.model_validate_json(data)
    return _adapter(cls).validate_json(data)


def _validate_python(cls: type[Any], value: dict[str, Any]) -> Any:
    if issubclass(cls, BaseModel):
        return cls.model_validate(value)
    return _adapter(cls).validate_python(value)
