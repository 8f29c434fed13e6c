"""Where durable agents' state is kept: the :class:`StateStore` protocol and two stores.

A store maps an agent id (``type/key``) to its last saved state, a JSON text, and the
version the worker that saved it gave it, and who that worker was. A save is kept only
if :func:`accepts` it (newer, and based on the state held), checked atomically in the
store, so an older state never overwrites a newer one, whatever order saves arrive in.
``_cluster`` has the Redis store, ``state_files`` the file one (a host alone that survives
its own restart); here is the in-memory one (a host alone, the default).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from .._constants import DEFAULT_MAX_STATE_SIZE

__all__ = [
    "DEFAULT_MAX_STATE_SIZE",
    "MemoryStateStore",
    "QueuedStateStore",
    "SaveOutcome",
    "StateStore",
    "StateStoreError",
    "StoredState",
]

#: The most bytes of state a :class:`MemoryStateStore` holds for all agent ids together.
DEFAULT_MEMORY_STATE_BYTES: Final = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredState:
    """What a store holds for one agent id: its version, its state as JSON text, and the
    worker instance that saved it (``""`` if unknown)."""

    version: int
    state: str
    writer: str = ""


class Held(Protocol):
    """What :func:`accepts` reads of the state a store holds."""

    @property
    def version(self) -> int: ...

    @property
    def writer(self) -> str: ...


def accepts(held: Held | None, version: int, base: str | None) -> bool:
    """Whether a save of ``version`` may replace ``held``: it must be newer, and, when the
    worker said whose state its copy was based on (``base``: the writer of the state it
    loaded, or itself once it saved), that must be who wrote the state held. So a worker
    working on an old copy cannot overwrite what another saved since, however its versions
    compare."""
    if held is None:
        return base is None or base == ""
    return version > held.version and (base is None or base == held.writer)


@dataclass(frozen=True, slots=True)
class SaveOutcome:
    """What became of a save: ``stored``, and the version the store now holds for the id
    (the saved one if stored; the newer one that refused it if not)."""

    stored: bool
    version: int


class StateStoreError(Exception):
    """The store could not do what it was asked (disk, Redis, or full); the message says why."""


class StateStore(Protocol):
    """Keeps the last saved state of each agent id, newest version wins.

    ``key`` is the agent id as ``type/key``. Implementations must make the version check
    and the write of :meth:`save` one atomic step. Errors are :class:`StateStoreError`.
    A store whose :meth:`load` and :meth:`save` never wait (they return without
    suspending) may say so with a class attribute ``immediate = True``: the host then runs
    each to its end as it arrives, with no task of its own.
    """

    #: Where the states are, for logs: ``memory``, a directory, a Redis URL.
    where: str

    async def load(self, key: str) -> StoredState | None:
        """The state last saved for ``key``, or ``None`` if none was."""

    async def save(
        self, key: str, version: int, state: str, writer: str = "", base: str | None = None
    ) -> SaveOutcome:
        """Store ``state`` as ``key``'s, saved by ``writer``, if :func:`accepts` says so."""

    async def close(self) -> None:
        """Let go of what the store holds open (connections); idempotent."""


@runtime_checkable
class QueuedStateStore(StateStore, Protocol):
    """A store that queues each operation as it starts, behind those started before it, and
    carries them out in that order (one connection to Redis): the host need not wait for
    one operation to finish before it starts the next on the same agent id."""

    def start_load(self, key: str) -> asyncio.Future[StoredState | None]:
        """Queue :meth:`load`; its future."""

    def start_save(
        self, key: str, version: int, state: str, writer: str = "", base: str | None = None
    ) -> asyncio.Future[SaveOutcome]:
        """Queue :meth:`save`; its future."""


class MemoryStateStore:
    """States in this process's memory: they survive a worker, not the host.

    Args:
        max_bytes: The most bytes of state held for all ids together; a save that would
            go past it fails (:class:`StateStoreError`) rather than evict another's state.
    """

    where = "memory"
    immediate = True

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_STATE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._states: dict[str, StoredState] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    async def load(self, key: str) -> StoredState | None:
        return self._states.get(key)

    async def save(
        self, key: str, version: int, state: str, writer: str = "", base: str | None = None
    ) -> SaveOutcome:
        # No await between the check and the write: atomic on the event loop.
        old = self._states.get(key)
        if not accepts(old, version, base):
            return SaveOutcome(False, 0 if old is None else old.version)
        size = len(state) - (0 if old is None else len(old.state))
        if self.bytes + size > self.max_bytes:
            raise StateStoreError(
                f"The host's memory for agent state is full ({self.max_bytes} bytes): "
                "give it a --state-dir or a Redis, or fewer, smaller states."
            )
        self._states[key] = StoredState(version, state, writer)
        self.bytes += size
        return SaveOutcome(True, version)

    async def close(self) -> None:
        return None
