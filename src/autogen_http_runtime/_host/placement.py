"""Which worker owns each agent id: one per agent type, or rendezvous hashing over replicas. No I/O.

With replicas, every ``AgentId(type, key)`` is owned by exactly one member of its type's
replica set: the member with the highest score ``blake2b(member key, type, key)``
(rendezvous, or highest-random-weight, hashing). The same id always reaches the same
member while the set is stable; a member joining takes only the ids it now scores
highest on, and a member leaving gives away only its own. A member's key is the
worker's own id for itself (``instance`` in its hello), so a worker that reconnects gets
its ids back, and any host computing the same scores agrees on every owner. An id pinned
to a member (``register_agent_instance``) is owned by that member whatever the scores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Generic, TypeVar

from autogen_core import AgentId

M = TypeVar("M")

#: Owners remembered for recent agent ids; the cache starts over when full or when a set changes.
_MAX_CACHED: Final = 65_536


def score(member_key: str, agent_id: AgentId) -> int:
    """The rendezvous score of ``agent_id`` on the member with this key (the same in every process)."""
    data = "\x00".join((member_key, agent_id.type, agent_id.key)).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Placement(Generic[M]):
    """The members serving each agent type, the pinned agent ids, and who owns an id.

    Args:
        key_of: A member's stable key (what it is scored by).
    """

    def __init__(self, key_of: Callable[[M], str]) -> None:
        self._key_of = key_of
        self._sets: dict[str, list[M]] = {}
        self._pins: dict[AgentId, M] = {}
        self._cache: dict[AgentId, M] = {}

    def owner(self, agent_id: AgentId) -> M | None:
        """The member that owns ``agent_id``, or ``None`` if no member serves its type."""
        members = self._sets.get(agent_id.type)
        if not members:
            return None
        if self._pins:
            pinned = self._pins.get(agent_id)
            if pinned is not None:
                return pinned
        if len(members) == 1:
            return members[0]
        found = self._cache.get(agent_id)
        if found is None:
            found = max(members, key=lambda member: score(self._key_of(member), agent_id))
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[agent_id] = found
        return found

    def members(self, agent_type: str) -> Sequence[M]:
        return self._sets.get(agent_type, ())

    def types(self) -> Iterable[str]:
        return self._sets.keys()

    def pinned(self) -> dict[AgentId, M]:
        return self._pins

    def join(self, agent_type: str, member: M) -> int:
        """Add ``member`` to the type's set (nothing if it is in it); returns the set's size."""
        members = self._sets.setdefault(agent_type, [])
        if member not in members:
            members.append(member)
            self._cache.clear()
        return len(members)

    def leave(self, agent_type: str, member: M) -> None:
        """Take ``member`` out of the type's set, and unpin its ids of that type."""
        members = self._sets.get(agent_type)
        if members is None or member not in members:
            return
        members.remove(member)
        if not members:
            del self._sets[agent_type]
        for agent_id in [a for a, m in self._pins.items() if m is member and a.type == agent_type]:
            del self._pins[agent_id]
        self._cache.clear()

    def unpin(self, agent_id: AgentId) -> None:
        self._pins.pop(agent_id, None)

    def pin(self, agent_id: AgentId, member: M) -> M | None:
        """Pin ``agent_id`` to ``member``.

        Returns:
            The other member it is pinned to already (nothing changes then), or ``None``.
        """
        pinned = self._pins.get(agent_id)
        if pinned is not None and pinned is not member:
            return pinned
        self._pins[agent_id] = member
        return None
