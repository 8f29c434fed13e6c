"""An agent type's A2A skill as a worker describes it to its host (``register_a2a_skill``).

The host turns an A2A message into the agent's input without knowing Python types: it
needs the input's serializer type name (a call's ``payload.data_type``), and, to refuse bad
input before it reaches the agent, the JSON Schema of the input's JSON form. Both are read
here from the types the user gives, with the worker's own serializers and Pydantic. Needs
no A2A SDK: only the host's A2A endpoints do.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pydantic
from autogen_core import JSON_DATA_CONTENT_TYPE

from .._exceptions import SerializationError
from .._protocol.descriptions import A2ASkill, JsonObject
from .polymorphic import has_model_fields
from .serialization import PayloadCodec, serializers_for


def describe_a2a_skill(
    codec: PayloadCodec,
    name: str,
    description: str,
    input_type: type[Any],
    output_type: type[Any] | None,
    version: str,
) -> A2ASkill:
    """The skill to tell the host, making the input type's JSON serializer if it needs one.

    Raises:
        SerializationError: ``input_type`` has no JSON serializer and none can be made for it
            (the host sends A2A input as JSON).
        ValueError: ``name`` or ``version`` is empty.
    """
    if not name or not version:
        raise ValueError("An A2A skill needs a non-empty name and version.")
    input_name = codec.registry.type_name(input_type)
    if not codec.registry.is_registered(input_name, JSON_DATA_CONTENT_TYPE):
        made = [s for s in serializers_for(input_type) if s.data_content_type == JSON_DATA_CONTENT_TYPE]
        if not made:
            raise SerializationError(
                f"The host sends A2A input as JSON, and input type {input_name!r} has no JSON "
                "serializer: use a dataclass or Pydantic model, or register a JSON serializer for it "
                "first with runtime.add_message_serializer(...) (for str, see samples/string_serializer.py)."
            )
        codec.add(made)
    return A2ASkill(
        name=name,
        description=description,
        input_type=input_name,
        output_type=None if output_type is None else codec.registry.type_name(output_type),
        input_schema=json_schema(input_type),
        output_schema=None if output_type is None else json_schema(output_type),
        version=version,
    )


def json_schema(cls: type[Any]) -> JsonObject | None:
    """The JSON Schema of ``cls``'s JSON form as Pydantic reads it; ``None`` if it has none."""
    try:
        schema = pydantic.TypeAdapter(cls).json_schema()
    except Exception:  # a type Pydantic cannot describe (a protobuf message, ...): no schema
        return None
    if _built_from_fields(cls) and schema.get("type") == "object":
        # autogen-core's serializer calls cls(**fields): a member it does not know fails there.
        schema.setdefault("additionalProperties", False)
    return schema


def _built_from_fields(cls: type[Any]) -> bool:
    """Whether ``cls`` is a flat dataclass, which its serializer builds as ``cls(**fields)``."""
    return (
        isinstance(cls, type)
        and dataclasses.is_dataclass(cls)
        and not issubclass(cls, pydantic.BaseModel)
        and not has_model_fields(cls)
    )
