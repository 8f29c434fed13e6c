"""The subscriptions a host routes by, indexed so that adding and matching do not scan them all. No I/O.

An exact (``"type"``) subscription is found by its topic type in one dictionary lookup; a
prefix subscription by the topic type's prefixes of each length some prefix has (a
handful in practice). Recipients of a topic are cached, within a bound.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from autogen_core import AgentId, TopicId

from .._protocol.subscriptions import SubscriptionSpec

_MAX_CACHED_TOPICS: Final = 4096


@dataclass(eq=False, slots=True)
class SubscriptionEntry:
    """One subscription and who added it (an opaque owner: the core's session)."""

    spec: SubscriptionSpec
    owner: object
    #: Order of addition: recipients come in the order their subscriptions were added.
    order: int = field(default=0)


class SubscriptionTable:
    """Every subscription of a host, by id, by exact topic type and by prefix.

    Args:
        shared: Several owners may add subscriptions that match the same way (replicas of
            one agent type each add its class subscriptions): they are one logical
            subscription, each agent reached once. Without it, a second one is refused.
            One owner may never add the same match twice.
    """

    def __init__(self, *, shared: bool = False) -> None:
        self._shared = shared
        self._by_id: dict[str, SubscriptionEntry] = {}
        #: (kind, topic, agent type) -> the entries matching that way (one, unless shared).
        self._by_match: dict[tuple[str, str, str], list[SubscriptionEntry]] = {}
        self._exact: dict[str, dict[str, SubscriptionEntry]] = {}
        self._prefixed: dict[str, dict[str, SubscriptionEntry]] = {}
        #: Length of each prefix in use -> how many prefixes have it.
        self._prefix_lengths: Counter[int] = Counter()
        self._cache: dict[TopicId, list[AgentId]] = {}
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, subscription_id: str) -> bool:
        return subscription_id in self._by_id

    def __iter__(self) -> Iterator[SubscriptionEntry]:
        return iter(self._by_id.values())

    def get(self, subscription_id: str) -> SubscriptionEntry | None:
        return self._by_id.get(subscription_id)

    def same_match(self, spec: SubscriptionSpec) -> SubscriptionEntry | None:
        """The (first) subscription that matches exactly as ``spec`` does, if any."""
        entries = self._by_match.get(_match_key(spec))
        return entries[0] if entries else None

    def add(self, spec: SubscriptionSpec, owner: object) -> SubscriptionEntry:
        """Raises: ValueError: A subscription with the same id, or matching the same way, exists."""
        if spec.id in self._by_id:
            raise ValueError(f"Subscription already exists: id {spec.id!r}.")
        key = _match_key(spec)
        entries = self._by_match.setdefault(key, [])
        for existing in entries:
            if not self._shared or existing.owner is owner:
                raise ValueError(f"Subscription already exists: id {existing.spec.id!r}.")
        entry = SubscriptionEntry(spec, owner, next(self._order))
        self._by_id[spec.id] = entry
        entries.append(entry)
        if spec.kind == "type":
            self._exact.setdefault(spec.topic, {})[spec.id] = entry
        else:
            self._prefixed.setdefault(spec.topic, {})[spec.id] = entry
            self._prefix_lengths[len(spec.topic)] += 1
        self._cache.clear()
        return entry

    def remove(self, subscription_id: str) -> SubscriptionEntry:
        """Raises: KeyError: No subscription has this id."""
        entry = self._by_id.pop(subscription_id)
        spec = entry.spec
        key = _match_key(spec)
        self._by_match[key].remove(entry)
        if not self._by_match[key]:
            del self._by_match[key]
        index = self._exact if spec.kind == "type" else self._prefixed
        bucket = index[spec.topic]
        del bucket[spec.id]
        if not bucket:
            del index[spec.topic]
        if spec.kind != "type":
            self._prefix_lengths[len(spec.topic)] -= 1
            if not self._prefix_lengths[len(spec.topic)]:
                del self._prefix_lengths[len(spec.topic)]
        self._cache.clear()
        return entry

    def recipients(self, topic: TopicId) -> list[AgentId]:
        """The agents subscribed to ``topic``, each once, in the order their subscriptions were added."""
        cached = self._cache.get(topic)
        if cached is None:
            matched = sorted(self._matching(topic.type), key=_by_order)
            seen = dict.fromkeys(AgentId(entry.spec.agent_type, topic.source) for entry in matched)
            if len(self._cache) >= _MAX_CACHED_TOPICS:
                # Topics with per-conversation sources are endless: keep the cache bounded.
                self._cache.clear()
            cached = self._cache[topic] = list(seen)
        return cached

    def _matching(self, topic_type: str) -> Iterable[SubscriptionEntry]:
        yield from self._exact.get(topic_type, {}).values()
        for length in self._prefix_lengths:
            if length <= len(topic_type):
                yield from self._prefixed.get(topic_type[:length], {}).values()


def _match_key(spec: SubscriptionSpec) -> tuple[str, str, str]:
    return (spec.kind, spec.topic, spec.agent_type)


def _by_order(entry: SubscriptionEntry) -> int:
    return entry.order
