"""The Agent Cards of a host serving A2A: one per described agent type, and the host's listing.

Built from what the worker said (:class:`~.._protocol.descriptions.A2ASkill`) and the URL
the client reached the host by; the SDK's card route serves them. With an authenticator,
every card declares an HTTP bearer scheme (``Authorization: Bearer <token>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)

from .._constants import __version__
from .._protocol.descriptions import A2ASkill

#: The card extension carrying the JSON Schemas of the input and the reply.
SCHEMAS_EXTENSION: Final = "https://autogen-http-runtime.invalid/a2a/json-schemas/v1"
#: The listing card's extension naming each agent type's own card.
AGENT_TYPES_EXTENSION: Final = "https://autogen-http-runtime.invalid/a2a/agent-types/v1"
#: Where a card is, relative to its agent's endpoint.
CARD_PATH: Final = "/.well-known/agent-card.json"
#: What every endpoint takes: text, and JSON in a data part (or as text).
INPUT_MODES: Final = ("text/plain", "application/json")


def type_card(agent_type: str, skill: A2ASkill, url: str, *, secured: bool) -> AgentCard:
    """The Agent Card of one agent type, whose JSON-RPC endpoint is ``url``.

    It names the endpoint twice, for A2A 1.0 and 0.3 clients (the endpoint speaks both).
    """
    extensions = []
    if skill.input_schema is not None or skill.output_schema is not None:
        schemas = {"input_type": skill.input_type, "input_schema": skill.input_schema}
        if skill.output_type is not None:
            schemas.update(output_type=skill.output_type, output_schema=skill.output_schema)
        extensions.append(
            AgentExtension(
                uri=SCHEMAS_EXTENSION,
                description="The JSON Schemas of what a data part must hold, and of the reply.",
                params={k: v for k, v in schemas.items() if v is not None},
            )
        )
    return AgentCard(
        name=skill.name,
        description=skill.description,
        version=skill.version,
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version=version)
            for version in ("1.0", "0.3")
        ],
        capabilities=AgentCapabilities(streaming=True, extensions=extensions),
        default_input_modes=list(INPUT_MODES),
        default_output_modes=_output_modes(skill),
        skills=[_skill(agent_type, skill)],
        **_security(secured),
    )


def listing_card(types: Sequence[tuple[str, A2ASkill, str]], *, secured: bool) -> AgentCard:
    """The host's card: one skill and one interface per ``(agent_type, skill, url)``, in order.

    A2A has no card for "several agents": an SDK client given this card talks to the first
    type; the extension names every type's own card, which is what to read.
    """
    cards = {agent_type: url + CARD_PATH for agent_type, _, url in types}
    return AgentCard(
        name="autogen-http-runtime host",
        description=(
            "The AutoGen agent types this host serves over A2A: one skill per type, and that type's "
            "endpoint among the interfaces in the same order; each type's own card is named in "
            f"{AGENT_TYPES_EXTENSION}."
        ),
        version=__version__,
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0") for _, _, url in types
        ],
        capabilities=AgentCapabilities(
            streaming=True,
            extensions=[
                AgentExtension(
                    uri=AGENT_TYPES_EXTENSION,
                    description="Each agent type's Agent Card URL.",
                    params={"agent_cards": cards},
                )
            ],
        ),
        default_input_modes=list(INPUT_MODES),
        default_output_modes=["text/plain", "application/json"],
        skills=[_skill(agent_type, skill) for agent_type, skill, _ in types],
        **_security(secured),
    )


def _skill(agent_type: str, skill: A2ASkill) -> AgentSkill:
    return AgentSkill(
        id=agent_type,
        name=skill.name,
        description=skill.description,
        tags=["autogen", agent_type],
        input_modes=list(INPUT_MODES),
        output_modes=_output_modes(skill),
    )


def _output_modes(skill: A2ASkill) -> list[str]:
    """A string reply is a text part, any other JSON value a data part."""
    kind = None if skill.output_schema is None else skill.output_schema.get("type")
    if kind == "string":
        return ["text/plain"]
    if skill.output_schema is not None:
        return ["application/json"]
    return ["text/plain", "application/json"]


def _security(secured: bool) -> dict[str, Any]:
    if not secured:
        return {}
    return {
        "security_schemes": {
            "bearer": SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="Bearer"))
        },
        "security_requirements": [SecurityRequirement(schemes={"bearer": StringList()})],
    }
