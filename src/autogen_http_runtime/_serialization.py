"""Messages <-> payloads, through the autogen-core serializers a runtime has registered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autogen_core import JSON_DATA_CONTENT_TYPE, PROTOBUF_DATA_CONTENT_TYPE, MessageSerializer
from autogen_core._serialization import SerializationRegistry

from ._exceptions import SerializationError
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

    def add(self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]) -> None:
        self.registry.add_serializer(serializer)

    def encode(self, message: Any) -> Payload:
        """Serialize ``message``.

        Raises:
            SerializationError: No serializer is registered for the message's type.
        """
        type_name = self.registry.type_name(message)
        for content_type in self._order:
            if self.registry.is_registered(type_name, content_type):
                try:
                    data = self.registry.serialize(
                        message, type_name=type_name, data_content_type=content_type
                    )
                except Exception as exc:
                    raise SerializationError(f"Serializing a {type_name!r} message failed: {exc}") from exc
                return Payload(type_name, content_type, data)
        raise SerializationError(
            f"No serializer is registered for message type {type_name!r}. Register one with "
            "runtime.add_message_serializer(...), e.g. DataclassJsonMessageSerializer or "
            "PydanticJsonMessageSerializer (see the README, 'Message serialization')."
        )

    def decode(self, payload: Payload) -> Any:
        """Deserialize; an unknown type becomes autogen-core's ``UnknownPayload``, as in the gRPC runtime."""
        return self.registry.deserialize(
            payload.data, type_name=payload.data_type, data_content_type=payload.data_content_type
        )
