"""What the polymorphic JSON walks know about types: unions, containers, a class's fields and family.

Helpers of :mod:`.polymorphic`, with no state but caches. No I/O.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
import weakref
from collections import abc
from collections.abc import Iterator
from typing import Annotated, Any, get_args, get_origin

import pydantic
from pydantic import BaseModel, TypeAdapter

#: The key an object's concrete class is read from.
DISCRIMINATOR = "type"

# What get_origin() returns for list[X], typing.List[X], Sequence[X] and the like.
SEQUENCE_ORIGINS: frozenset[Any] = frozenset(
    {list, set, frozenset, tuple, abc.Sequence, abc.MutableSequence, abc.Set, abc.MutableSet, abc.Collection}
)
MAPPING_ORIGINS: frozenset[Any] = frozenset({dict, abc.Mapping, abc.MutableMapping})
# Field metadata that gives a value its own JSON shape: the walks leave such values alone.
CUSTOM_METADATA = (
    pydantic.BeforeValidator,
    pydantic.WrapValidator,
    pydantic.PlainValidator,
    pydantic.PlainSerializer,
    pydantic.WrapSerializer,
)


def is_model_class(tp: Any) -> bool:
    """A Pydantic model class or a dataclass (standard or Pydantic)."""
    return isinstance(tp, type) and (issubclass(tp, BaseModel) or dataclasses.is_dataclass(tp))


def union_members(annotation: Any) -> tuple[Any, ...]:
    """A union's members, without ``None`` and with ``Annotated`` wrappers taken off."""
    members = []
    for member in get_args(annotation):
        if member is type(None):
            continue
        while get_origin(member) is Annotated and not has_custom(get_args(member)[1:]):
            member = get_args(member)[0]
        members.append(member)
    return tuple(members)


def container_member(members: tuple[Any, ...], value: Any) -> Any:
    """The one list-like (for a list) or dict-like (for a dict) member of a union, if exactly one."""
    if isinstance(value, list):
        shapes = [m for m in members if get_origin(m) in SEQUENCE_ORIGINS]
    elif isinstance(value, dict):
        shapes = [m for m in members if get_origin(m) in MAPPING_ORIGINS]
    else:
        return None
    return shapes[0] if len(shapes) == 1 else None


def item_types(annotation: Any, value: list[Any]) -> list[tuple[Any, Any]]:
    """(declared item type, item) for each item of a list-like value."""
    args = get_args(annotation)
    if get_origin(annotation) is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        return [(args[i] if i < len(args) else Any, item) for i, item in enumerate(value)]
    item_type = args[0] if args else Any
    return [(item_type, item) for item in value]


def mapping_value_type(annotation: Any) -> Any:
    args = get_args(annotation)
    return args[1] if len(args) == 2 else Any


def same_length(obj: Any, data: list[Any]) -> bool:
    return isinstance(obj, abc.Collection) and not isinstance(obj, str | bytes) and len(obj) == len(data)


def has_custom(metadata: Any) -> bool:
    return any(isinstance(item, CUSTOM_METADATA) for item in metadata)


def is_named(cls: type[Any], discriminator: str) -> bool:
    if inspect.isabstract(cls):
        return False
    return cls.__name__ == discriminator or bool(type_default(cls) == discriminator)


def type_default(cls: type[Any]) -> Any:
    if issubclass(cls, BaseModel):
        field = cls.model_fields.get(DISCRIMINATOR)
        return None if field is None else field.default
    for dc_field in dataclasses.fields(cls):
        if dc_field.name == DISCRIMINATOR:
            return dc_field.default
    return None


def family(base: type[Any]) -> Iterator[type[Any]]:
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


FieldPlan = tuple[tuple[tuple[str, ...], Any], ...]
# Per class, computed once; weak, so that classes made on the fly (tests, generics) can go.
_field_plans: weakref.WeakKeyDictionary[type[Any], FieldPlan] = weakref.WeakKeyDictionary()
_adapters: weakref.WeakKeyDictionary[type[Any], TypeAdapter[Any]] = weakref.WeakKeyDictionary()


def fields_to_walk(cls: type[Any]) -> FieldPlan:
    """(field name and input aliases, declared type) of the fields of ``cls`` the walks follow."""
    plan = _field_plans.get(cls)
    if plan is None:
        plan = _field_plans[cls] = plan_fields(cls)
    return plan


def plan_fields(cls: type[Any]) -> FieldPlan:
    found: list[tuple[tuple[str, ...], Any]] = []
    pydantic_fields = getattr(cls, "__pydantic_fields__", None)  # models and Pydantic dataclasses
    if isinstance(pydantic_fields, dict):
        custom = custom_fields(cls)
        if custom is None:
            return ()
        for name, info in pydantic_fields.items():
            if name in custom or has_custom(info.metadata) or not mentions_model(info.annotation):
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
            if mentions_model(annotation):
                found.append(((dc_field.name,), annotation))
    return tuple(found)


def custom_fields(cls: type[Any]) -> set[str] | None:
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


def mentions_model(annotation: Any) -> bool:
    if is_model_class(annotation):
        return True
    return any(mentions_model(arg) for arg in get_args(annotation))


def adapter(cls: type[Any]) -> TypeAdapter[Any]:
    adapter = _adapters.get(cls)
    if adapter is None:
        adapter = _adapters[cls] = TypeAdapter(cls)
    return adapter


def dump_json(obj: Any) -> bytes:
    if isinstance(obj, BaseModel):
        return obj.model_dump_json().encode("utf-8")
    return adapter(type(obj)).dump_json(obj)


def dump_python(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return adapter(type(obj)).dump_python(obj, mode="json")


def validate_json(cls: type[Any], data: bytes | str) -> Any:
    if issubclass(cls, BaseModel):
        return cls.model_validate_json(data)
    return adapter(cls).validate_json(data)


def validate_python(cls: type[Any], value: dict[str, Any]) -> Any:
    if issubclass(cls, BaseModel):
        return cls.model_validate(value)
    return adapter(cls).validate_python(value)
