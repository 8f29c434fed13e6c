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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, cast

from autogen_core import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    MessageSerializer,
    try_get_known_serializers_for_type,
)
from autogen_core._serialization import (
    DataclassJsonMessageSerializer,
    PydanticJsonMessageSerializer,
    SerializationRegistry,
)
from pydantic import BaseModel

from ._exceptions import SerializationError
from ._polymorphic import ModelJsonSerializer, has_model_fields, is_model_class, resolve_class
from ._wire import Payload

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
        return self.registry.deserialize(payload.data, type_name=name, data_content_type=content_type)

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
