"""The message type the demo's processes exchange, and the serializers for it.

Every process that sends or receives a ``TextMessage`` registers ``SERIALIZERS`` with its
runtime: a message crosses a process boundary only if both sides can (de)serialize it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autogen_core import MessageSerializer, try_get_known_serializers_for_type


@dataclass
class TextMessage:
    content: str


SERIALIZERS: list[MessageSerializer[Any]] = try_get_known_serializers_for_type(TextMessage)
