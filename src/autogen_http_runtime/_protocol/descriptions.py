"""What a worker tells its host about an agent type beyond its name: its A2A skill. No I/O.

``describe_agent_type`` carries ``{"type": ..., "a2a": {...}}`` (``docs/protocol.md``); the
worker writes it with :func:`a2a_skill_to_wire` and the host reads it with
:func:`a2a_skill_from_wire`. ``"a2a": null`` takes a description back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._exceptions import ErrorCode
from .errors import MessageError

JsonObject = dict[str, Any]

#: The version an A2A skill's Agent Card carries when the worker names none.
DEFAULT_SKILL_VERSION = "1.0.0"


@dataclass(frozen=True, slots=True)
class A2ASkill:
    """How one agent type is offered to A2A clients.

    Attributes:
        name: The skill's name, shown to people.
        description: What the agent does, for people and for models choosing an agent.
        input_type: The serializer type name of the message the agent takes (a call's
            ``payload.data_type``); the host sends it as JSON.
        output_type: The serializer type name of its reply, or ``None`` if not said.
        input_schema: The JSON Schema of the input's JSON form, or ``None`` if unknown.
        output_schema: The JSON Schema of the reply's JSON form, or ``None``.
        version: The version on the type's Agent Card.
    """

    name: str
    description: str
    input_type: str
    output_type: str | None = None
    input_schema: JsonObject | None = None
    output_schema: JsonObject | None = None
    version: str = DEFAULT_SKILL_VERSION


def a2a_skill_to_wire(skill: A2ASkill) -> JsonObject:
    body: JsonObject = {
        "name": skill.name,
        "description": skill.description,
        "input_type": skill.input_type,
        "version": skill.version,
    }
    if skill.output_type is not None:
        body["output_type"] = skill.output_type
    if skill.input_schema is not None:
        body["input_schema"] = skill.input_schema
    if skill.output_schema is not None:
        body["output_schema"] = skill.output_schema
    return body


def a2a_skill_from_wire(value: Any) -> A2ASkill | None:
    """Read the ``a2a`` member of ``describe_agent_type`` (``None``: no A2A skill).

    Raises:
        MessageError: ``INVALID_PARAMS``, naming the member that is wrong.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MessageError(ErrorCode.INVALID_PARAMS, "'a2a' must be an object or null.")
    return A2ASkill(
        name=_text(value, "name", required=True, non_empty=True) or "",
        description=_text(value, "description", required=True) or "",
        input_type=_text(value, "input_type", required=True, non_empty=True) or "",
        output_type=_text(value, "output_type"),
        input_schema=_schema(value, "input_schema"),
        output_schema=_schema(value, "output_schema"),
        version=_text(value, "version", non_empty=True) or DEFAULT_SKILL_VERSION,
    )


def _text(value: JsonObject, name: str, *, required: bool = False, non_empty: bool = False) -> str | None:
    found = value.get(name)
    if found is None and not required:
        return None
    if not isinstance(found, str) or (non_empty and not found):
        kind = "a non-empty string" if non_empty else "a string"
        raise MessageError(ErrorCode.INVALID_PARAMS, f"'a2a.{name}' must be {kind}.")
    return found


def _schema(value: JsonObject, name: str) -> JsonObject | None:
    found = value.get(name)
    if found is None:
        return None
    if not isinstance(found, dict):
        raise MessageError(ErrorCode.INVALID_PARAMS, f"'a2a.{name}' must be a JSON Schema object.")
    return found
