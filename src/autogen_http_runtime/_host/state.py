"""Where durable agents' state is kept: the :class:`StateStore` protocol and two stores.

A store maps an agent id (``type/key``) to its last saved state, a JSON text, and the
version the worker that saved it gave it, and who that worker was. A save is kept only
if :func:`accepts` it (newer, and based on the state held), checked atomically in the
store, so an older state never overwrites a newer one, whatever order saves arrive in.
``_cluster`` has the Redis store; here are the in-memory one (a host alone, the default)
and the file one (a host alone that survives its own restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from .._constants import DEFAULT_MAX_STATE_SIZE

__all__ = [
    "DEFAULT_MAX_STATE_SIZE",
    "FileStateStore",
    "MemoryStateStore",
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


def accepts(held: StoredState | None, version: int, base: str | None) -> bool:
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


class MemoryStateStore:
    """States in this process's memory: they survive a worker, not the host.

    Args:
        max_bytes: The most bytes of state held for all ids together; a save that would
            go past it fails (:class:`StateStoreError`) rather than evict another's state.
    """

    where = "memory"

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


class FileStateStore:
    """One file per agent id in a directory: states survive a restart of the host.

    Each save writes a temporary file beside the state's and renames it over it
    (``os.replace``: a reader sees the old file or the new one, never half of one),
    in a thread, so the event loop never waits on the disk. Versions are checked
    against the file's, under one lock per id (and one for the writing threads): one host
    process per directory.

    Args:
        directory: Where the files go; created if missing.
        fsync: Flush each file to the disk before renaming it (survives a power cut,
            at the cost of a disk flush per save).
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.where = str(self.directory)
        self._fsync = fsync
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        # The threads' own lock on compare-and-write: a save whose task was cancelled goes on
        # in its thread, and must not race the next save of the same id there.
        self._writing = threading.Lock()

    def path(self, key: str) -> Path:
        """The file of ``key``: its digest, so any agent key makes a safe file name."""
        return self.directory / (hashlib.sha256(key.encode("utf-8")).hexdigest()[:40] + ".json")

    @contextlib.asynccontextmanager
    async def _locked(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    async def load(self, key: str) -> StoredState | None:
        async with self._locked(key):
            return await asyncio.to_thread(self._read, key)

    async def save(
        self, key: str, version: int, state: str, writer: str = "", base: str | None = None
    ) -> SaveOutcome:
        async with self._locked(key):
            return await asyncio.to_thread(self._write, key, version, state, writer, base)

    async def close(self) -> None:
        return None

    def _read(self, key: str) -> StoredState | None:
        try:
            text = self.path(key).read_text("utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateStoreError(f"Cannot read the state of {key} in {self.where}: {exc}") from None
        try:
            stored = json.loads(text)
            return StoredState(int(stored["version"]), str(stored["state"]), str(stored.get("writer", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise StateStoreError(f"The state file of {key} in {self.where} is damaged: {exc}") from None

    def _write(self, key: str, version: int, state: str, writer: str, base: str | None) -> SaveOutcome:
        with self._writing:
            return self._write_locked(key, version, state, writer, base)

    def _write_locked(self, key: str, version: int, state: str, writer: str, base: str | None) -> SaveOutcome:
        old = self._read(key)
        if not accepts(old, version, base):
            return SaveOutcome(False, 0 if old is None else old.version)
        # The id and the state go in as strings: the file is what the store keeps, not a
        # value to interpret, and the state's text comes back exactly as it was saved.
        text = json.dumps({"agent": key, "version": version, "state": state, "writer": writer})
        target = self.path(key)
        try:
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    file.write(text)
                    if self._fsync:
                        file.flush()
                        os.fsync(file.fileno())
                os.replace(temporary, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        except OSError as exc:
            raise StateStoreError(f"Cannot write the state of {key} in {self.where}: {exc}") from None
        return SaveOutcome(True, version)
