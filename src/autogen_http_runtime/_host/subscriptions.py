"""The host's subscriptions, with the recipients of each topic cached. No I/O."""

from __future__ import annotations

from collections.abc import Iterable

from autogen_core import AgentId, Subscription, TopicId, TypePrefixSubscription, TypeSubscription

from .._protocol import wire

_MAX_CACHED_TOPICS = 4096


class SubscriptionTable:
    """All subscriptions of a host, with the recipients of each topic cached."""

    def __init__(self) -> None:
        self._by_id: dict[str, Subscription] = {}
        self._cache: dict[TopicId, list[AgentId]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, subscription_id: str) -> bool:
        return subscription_id in self._by_id

    def values(self) -> Iterable[Subscription]:
        return self._by_id.values()

    def add(self, subscription: Subscription) -> None:
        """Raises: ValueError: A subscription with the same id, or matching the same way, exists."""
        if subscription.id in self._by_id:
            raise ValueError(f"Subscription already exists: id {subscription.id!r}.")
        for existing in self._by_id.values():
            if existing == subscription:
                raise ValueError(f"Subscription already exists: id {existing.id!r}.")
        self._by_id[subscription.id] = subscription
        self._cache.clear()

    def get(self, subscription_id: str) -> Subscription | None:
        return self._by_id.get(subscription_id)

    def remove(self, subscription_id: str) -> None:
        """Raises: KeyError: No subscription has this id."""
        del self._by_id[subscription_id]
        self._cache.clear()

    def recipients(self, topic: TopicId) -> list[AgentId]:
        cached = self._cache.get(topic)
        if cached is None:
            seen: dict[AgentId, None] = {}
            for subscription in self._by_id.values():
                if subscription.is_match(topic):
                    seen[subscription.map_to_agent(topic)] = None
            if len(self._cache) >= _MAX_CACHED_TOPICS:
                # Topics with per-conversation sources are endless: keep the cache bounded.
                self._cache.clear()
            cached = self._cache[topic] = list(seen)
        return cached


def subscription_from_spec(spec: wire.SubscriptionSpec) -> Subscription:
    if spec.kind == "type":
        return TypeSubscription(topic_type=spec.topic, agent_type=spec.agent_type, id=spec.id)
    return TypePrefixSubscription(topic_type_prefix=spec.topic, agent_type=spec.agent_type, id=spec.id)
