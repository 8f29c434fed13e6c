"""Subscriptions on the wire, and the one mapping between their kinds and autogen-core's classes. No I/O.

A subscription travels as ``{"id", "kind", "agent_type", "topic"}``; ``kind`` is
``"type"`` (the topic type equals ``topic``: ``TypeSubscription``, and so
``DefaultSubscription``) or ``"type_prefix"`` (it starts with ``topic``:
``TypePrefixSubscription``). Every other module reads kinds through this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from autogen_core import Subscription, TypePrefixSubscription, TypeSubscription

from .._compat import is_valid_agent_type
from .._exceptions import ErrorCode
from .errors import MessageError

JsonObject = dict[str, Any]
SubscriptionKind = Literal["type", "type_prefix"]
KINDS: Final[tuple[SubscriptionKind, ...]] = ("type", "type_prefix")


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A subscription as the wire carries it."""

    id: str
    kind: SubscriptionKind
    agent_type: str
    topic: str


def spec_of(subscription: Subscription) -> SubscriptionSpec:
    """The wire form of an autogen-core subscription.

    Raises:
        TypeError: Not a ``TypeSubscription`` (``DefaultSubscription`` included) or a
            ``TypePrefixSubscription``: only those can be sent to the host.
    """
    if isinstance(subscription, TypeSubscription):
        return SubscriptionSpec(subscription.id, "type", subscription.agent_type, subscription.topic_type)
    if isinstance(subscription, TypePrefixSubscription):
        return SubscriptionSpec(
            subscription.id, "type_prefix", subscription.agent_type, subscription.topic_type_prefix
        )
    raise TypeError(
        f"{type(subscription).__name__} cannot be sent to the host: use TypeSubscription, "
        "DefaultSubscription or TypePrefixSubscription."
    )


def subscription_of(spec: SubscriptionSpec) -> Subscription:
    """The autogen-core subscription a wire spec stands for."""
    if spec.kind == "type":
        return TypeSubscription(topic_type=spec.topic, agent_type=spec.agent_type, id=spec.id)
    return TypePrefixSubscription(topic_type_prefix=spec.topic, agent_type=spec.agent_type, id=spec.id)


def subscription_to_wire(spec: SubscriptionSpec) -> JsonObject:
    return {"id": spec.id, "kind": spec.kind, "agent_type": spec.agent_type, "topic": spec.topic}


def subscription_from_wire(value: Any) -> SubscriptionSpec:
    """Read and check a subscription object.

    Raises:
        MessageError: ``INVALID_PARAMS`` naming the bad field.
    """
    if not isinstance(value, dict):
        raise MessageError(ErrorCode.INVALID_PARAMS, "'subscription' must be an object.")
    kind = value.get("kind")
    if kind not in KINDS:
        raise MessageError(ErrorCode.INVALID_PARAMS, "'subscription.kind' must be 'type' or 'type_prefix'.")
    sub_id, agent_type, topic = value.get("id"), value.get("agent_type"), value.get("topic")
    if not isinstance(sub_id, str) or not sub_id:
        raise MessageError(ErrorCode.INVALID_PARAMS, "'subscription.id' must be a non-empty string.")
    if not isinstance(agent_type, str) or not is_valid_agent_type(agent_type):
        raise MessageError(ErrorCode.INVALID_PARAMS, "'subscription.agent_type' must be a valid agent type.")
    if not isinstance(topic, str):
        raise MessageError(ErrorCode.INVALID_PARAMS, "'subscription.topic' must be a string.")
    return SubscriptionSpec(sub_id, kind, agent_type, topic)
