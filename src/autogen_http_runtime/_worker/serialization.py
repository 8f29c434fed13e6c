"""Messages <-> payloads, through the autogen-core serializers a runtime has registered.

Besides the serializers registered with it, a codec makes some on its own; the rule, which
``docs/agentchat.md`` explains for users:

- Encoding a message whose type has no serializer: a Pydantic model or a dataclass gets a
  JSON serializer (:class:`ModelJsonSerializer`, or autogen-core's dataclass serializer for
  a flat dataclass) and a protobuf message autogen-core's protobuf serializer, made on the
  spot and kept. Anything else is a :class:`SerializationError`.
- autogen-core's ``PydanticJsonMessageSerializer`` (what ``RoutedAgent.register`` adds for
  the types an agent handles) is swapped for :class:`ModelJsonSerializer`, which writes the
  same JSON but keeps nested values' concrete classes (see ``_polymorphic``); so is its
  dataclass serializer for a dataclass with model fields (which it cannot handle, but only
  notices when the annotations are not strings).
- Decoding a type name with no serializer here: a class with that name that another codec
  in this process made or was given a serializer for, or else a subclass of a class this
  codec has a serializer for; otherwise autogen-core's ``UnknownPayload``, as the gRPC
  runtime does.

A flat dataclass with autogen-core's ``DataclassJsonMessageSerializer`` skips the JSON text:
its fields go to the frame as a JSON value, and a JSON value from a frame becomes the
dataclass, each exactly as the serializer and the JSON reader would have made it; a value
that might come out differently (see :func:`reads_back_the_same`) takes the serializer's path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, cast

from autogen_core import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    MessageSerializer,
    try_get_known_serializers_for_type,
)
from pydantic import BaseModel, ValidationError

from .._compat import (
    DataclassJsonMessageSerializer,
    PydanticJsonMessageSerializer,
    SerializationRegistry,
)
from .._exceptions import SerializationError
from .._protocol.wire import NO_VALUE, Payload
from .polymorphic import ModelJsonSerializer, has_model_fields, is_model_class, resolve_class

SUPPORTED_CONTENT_TYPES = (JSON_DATA_CONTENT_TYPE, PROTOBUF_DATA_CONTENT_TYPE)


class PayloadCodec:
    """Serializes with the preferred content type, falling back to any other registered for the type.

    Args:
        preferred_content_type: ``application/json`` or ``application/x-protobuf``.

    Raises:
        ValueError: The content type is neither.
    """

    def __init__(self, preferred_content_type: str = JSON_DATA_CONTENT_TYPE) -> None:
        if preferred_content_type not in SUPPORTED_CONTENT_TYPES:
            raise ValueError(
                f"Unsupported payload serialization format: {preferred_content_type!r}; "
                f"use one of {', '.join(SUPPORTED_CONTENT_TYPES)}."
            )
        self.preferred_content_type = preferred_content_type
        self._order = (preferred_content_type,) + tuple(
            ct for ct in SUPPORTED_CONTENT_TYPES if ct != preferred_content_type
        )
        self.registry = SerializationRegistry()
        #: Classes this codec serializes as JSON models, by type name: where decoding
        #: looks for subclasses of a declared handler type.
        self._model_classes: dict[str, type[Any]] = {}
        #: Type name -> (class, field names) of the dataclasses whose JSON serializer is
        #: exactly autogen-core's DataclassJsonMessageSerializer: those skip the text.
        self._dataclasses: dict[str, tuple[type[Any], tuple[str, ...]]] = {}

    def add(self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]) -> None:
        serializers = serializer if isinstance(serializer, Sequence) else [serializer]
        for one in serializers:
            cls = _serializer_class(one)
            if cls is not None and (
                type(one) is PydanticJsonMessageSerializer
                or (type(one) is DataclassJsonMessageSerializer and has_model_fields(cls))
            ):
                one = ModelJsonSerializer(cls)
            self.registry.add_serializer(one)
            if one.data_content_type == JSON_DATA_CONTENT_TYPE:
                if cls is not None and type(one) is DataclassJsonMessageSerializer:
                    names = tuple(field.name for field in dataclasses.fields(cls))
                    self._dataclasses[one.type_name] = (cls, names)
                else:
                    self._dataclasses.pop(one.type_name, None)
            if cls is not None and one.data_content_type == JSON_DATA_CONTENT_TYPE:
                self._model_classes[one.type_name] = cls
                _known_classes.add(one.type_name, cls)

    def encode(self, message: Any) -> Payload:
        """Serialize ``message``, making a serializer for its type first if it qualifies.

        Raises:
            SerializationError: The message's type has no serializer and none can be made.
        """
        type_name = self.registry.type_name(message)
        payload = self._encode(message, type_name)
        if payload is None:
            made = serializers_for(type(message))
            if made:
                self.add(made)
                payload = self._encode(message, type_name)
        if payload is None:
            raise SerializationError(
                f"No serializer is registered for message type {type_name!r}, and none can be "
                "made for it (only Pydantic models, dataclasses and protobuf messages get one on "
                "demand). Register one with runtime.add_message_serializer(...) "
                "(see docs/agentchat.md, 'Which types qualify')."
            )
        return payload

    def _encode(self, message: Any, type_name: str) -> Payload | None:
        for content_type in self._order:
            if self.registry.is_registered(type_name, content_type):
                if content_type == JSON_DATA_CONTENT_TYPE and type_name in self._dataclasses:
                    value = self._dataclass_value(message, *self._dataclasses[type_name])
                    if value is not NO_VALUE:
                        return Payload(type_name, content_type, value=value)
                try:
                    data = self.registry.serialize(
                        message, type_name=type_name, data_content_type=content_type
                    )
                except Exception as exc:
                    raise SerializationError(f"Serializing a {type_name!r} message failed: {exc}") from exc
                return Payload(type_name, content_type, data)
        return None

    def decode(self, payload: Payload) -> Any:
        """Deserialize; an unknown type becomes autogen-core's ``UnknownPayload``, as in the gRPC runtime."""
        name, content_type = payload.data_type, payload.data_content_type
        if not self.registry.is_registered(name, content_type) and content_type == JSON_DATA_CONTENT_TYPE:
            cls = _known_classes.get(name) or self._subclass_named(name)
            if cls is not None:
                self.add(serializers_for(cls))
        if (
            payload.value is not NO_VALUE
            and content_type == JSON_DATA_CONTENT_TYPE
            and name in self._dataclasses
        ):
            fields = payload.value
            if type(fields) is dict and reads_back_the_same(fields):
                cls, _ = self._dataclasses[name]
                return cls(**fields)  # what DataclassJsonMessageSerializer.deserialize does
        return self.registry.deserialize(payload.data, type_name=name, data_content_type=content_type)

    @staticmethod
    def _dataclass_value(message: Any, cls: type[Any], names: tuple[str, ...]) -> Any:
        """``json.loads(DataclassJsonMessageSerializer(cls).serialize(message))``, made without
        the text; :data:`NO_VALUE` when it might come out differently."""
        if type(message) is not cls:
            return NO_VALUE
        try:
            fields = {name: getattr(message, name) for name in names}
        except Exception:
            return NO_VALUE  # the serializer fails the same way, and says so
        # As asdict(message) for fields holding JSON values, lists and dicts copied: the
        # message may change before the frame is written.
        return json_round_trip(fields)

    def _subclass_named(self, name: str) -> type[Any] | None:
        """A subclass called ``name`` of a class this codec has a serializer for (e.g. a handler's
        declared base class), if exactly one exists."""
        found: set[type[Any]] = set()
        for base in self._model_classes.values():
            try:
                match = resolve_class((base,), {"type": name})
            except ValueError:
                return None
            if match is not None and match is not base and match.__name__ == name:
                found.add(match)
        return found.pop() if len(found) == 1 else None


def unknown_type(payload: Payload, where: str = "this worker") -> str:
    """Why a payload of a type with no serializer here cannot be read."""
    return (
        f"Message type {payload.data_type!r} ({payload.data_content_type}) is unknown to {where}: "
        "no serializer is registered for it there"
    )


def why_undecodable(exc: BaseException) -> str:
    """Why a payload's data did not fit its type, in a line its sender can read: the fields at
    fault for a Pydantic model, else the exception's first line; never a traceback."""
    if isinstance(exc, ValidationError):
        faults = [f"{'.'.join(map(str, e['loc'])) or 'the value'}: {e['msg']}" for e in exc.errors()[:3]]
        more = exc.error_count() - len(faults)
        text = "; ".join(faults) + (f"; and {more} more" if more > 0 else "")
    else:
        lines = str(exc).strip().splitlines()
        text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"


#: Integers beyond this go through the serializer: the standard library writes only so many digits.
_INT_LIMIT = 2**64


def json_round_trip(value: Any) -> Any:
    """``json.loads(json.dumps(value))``, made without the text: ``value`` with its lists and
    dicts copied, when :func:`reads_back_the_same`; else :data:`NO_VALUE`."""
    try:
        return _copied(value) if _same_after_round_trip(value) else NO_VALUE
    except RecursionError:
        return NO_VALUE  # nested too deeply to walk: the serializer decides


def reads_back_the_same(value: Any) -> bool:
    """Whether ``json.loads(json.dumps(value))`` gives back ``value`` exactly.

    True when ``value`` holds only exact ``dict`` (with ``str`` keys), ``list``, ``str``,
    ``int`` (up to 2**64 either way), finite ``float``, ``bool`` and ``None``: those come
    back equal and of the same type, whether msgspec or the standard library reads and
    writes them. False for anything else (tuples, subclasses such as enums, ``NaN``, keys
    that are not strings, other objects), which is left to the serializer: it converts,
    refuses or fails as it always did. False, too, for a value nested too deeply to walk.
    """
    try:
        return _same_after_round_trip(value)
    except RecursionError:
        return False


def _same_after_round_trip(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_INT_LIMIT < value < _INT_LIMIT)
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(map(_same_after_round_trip, value))
    if kind is dict:
        return all(type(key) is str for key in value) and all(map(_same_after_round_trip, value.values()))
    return False


def _copied(value: Any) -> Any:
    if type(value) is list:
        return [_copied(item) for item in value]
    if type(value) is dict:
        return {key: _copied(item) for key, item in value.items()}
    return value


def serializers_for(cls: type[Any]) -> list[MessageSerializer[Any]]:
    """The serializers a codec makes on demand for ``cls``; empty if it does not qualify."""
    if is_model_class(cls):
        if dataclasses.is_dataclass(cls) and not issubclass(cls, BaseModel) and not has_model_fields(cls):
            try:
                # A flat dataclass: exactly what try_get_known_serializers_for_type gives.
                return [DataclassJsonMessageSerializer(cls)]
            except ValueError:
                pass  # a union field: the Pydantic-backed serializer handles it
        return [ModelJsonSerializer(cls)]
    return try_get_known_serializers_for_type(cls)  # a protobuf message, or nothing


def _serializer_class(serializer: MessageSerializer[Any]) -> type[Any] | None:
    """The model class behind autogen-core's JSON serializers or ours; ``None`` for any other
    serializer, subclasses included (they may write their own JSON)."""
    if type(serializer) in (
        PydanticJsonMessageSerializer,
        DataclassJsonMessageSerializer,
        ModelJsonSerializer,
    ):
        cls = getattr(serializer, "cls", None)
        if is_model_class(cls):
            return cast(type[Any], cls)
    return None


class _KnownClasses:
    """Type name -> class for every JSON model class any codec in this process has a serializer
    for. A name given to two different classes is dropped: decoding must not guess."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Any] | None] = {}

    def add(self, name: str, cls: type[Any]) -> None:
        if name in self._classes and self._classes[name] is not cls:
            self._classes[name] = None
        else:
            self._classes[name] = cls

    def get(self, name: str) -> type[Any] | None:
        return self._classes.get(name)


_known_classes = _KnownClasses()
