"""What a cluster needs from its shared engine, whatever the engine is. No I/O here.

The engine holds the cluster's directory (who serves what, one version number for all
of it, and a log of its changes), the hosts' leases, and carries batches between hosts.
:class:`~.redis_engine.RedisEngine` is the one there is; another (NATS JetStream, say)
implements :class:`Engine` and nothing else changes: the node, the directory and the
routing core only speak this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class EngineUnavailable(Exception):
    """The engine cannot be reached, or did not answer in time; the message says why."""


class NotJoined(Exception):
    """The engine holds no lease for this host: it declared the host gone while it lived
    (a stall longer than the lease), or it lost its data (restarted empty). Join again."""


class SettingsDisagree(Exception):
    """The hosts already in the cluster run with another value of a setting that must agree."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True, slots=True)
class Write:
    """One change a host asks of the directory.

    ``op`` is ``upsert_worker`` (worker, info JSON, instance, identity), ``remove_worker``
    (worker, why), ``join_type`` (worker, type, ``"1"`` with replicas), ``leave_type``
    (worker, type), ``pin`` (worker, agent id, type), ``add_subscription`` (worker, id,
    JSON, match key, ``"1"`` shared) or ``remove_subscription`` (id).
    """

    op: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The engine would not make a change: ``code`` is ``TAKEN``, ``EXISTS``, ``NOTFOUND``,
    ``FORBIDDEN``, ``NOWORKER`` or ``NOTYPE``; ``detail`` names what is in the way."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the directory's change log: ``w+``/``w-`` (a worker: id, and its JSON or
    why it left), ``t+``/``t-`` (type, worker), ``p+``/``p-`` (agent id, worker), ``s+``
    (id, JSON), ``s-`` (id), ``h-`` (a host gone)."""

    version: int
    op: str
    a: str
    b: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole directory at one version."""

    epoch: str
    version: int
    workers: Mapping[str, str]
    #: Agent type -> its workers, in the order they joined.
    types: Mapping[str, Sequence[str]]
    pins: Mapping[str, str]
    subscriptions: Mapping[str, str]
    hosts: Sequence[str] = field(default_factory=tuple)


class Gap(Exception):
    """The change log no longer holds the changes after the view's version: reload a snapshot."""


@dataclass(frozen=True, slots=True)
class Tick:
    #: This host still held its lease (renewed); ``False``: it must join again.
    renewed: bool
    live: Sequence[str]
    #: Hosts declared gone now (their lease expired).
    gone: Sequence[str]


class Engine(Protocol):
    """Every method raises :class:`EngineUnavailable` when the engine cannot be reached."""

    #: Where the engine is, for logs and errors (no password).
    where: str

    async def connect(self) -> None:
        """Open (or open again) the connections, and listen to this host's inbox."""

    async def close(self) -> None:
        """Close every connection (nothing is sent)."""

    async def join(self, info: str, settings: Sequence[tuple[str, str]]) -> None:
        """Take a lease for this host and check its settings against the other hosts'.

        Raises:
            SettingsDisagree: Another live host has another value for a setting.
        """

    async def leave(self) -> None:
        """Give up the lease; this host's workers and entries leave the directory."""

    async def tick(self) -> Tick:
        """Renew this host's lease, and declare gone the hosts whose lease expired."""

    async def write(self, writes: Sequence[Write]) -> list[int | Refusal]:
        """Make the changes in order; each answers the version it holds at, or a refusal.

        Raises:
            NotJoined: This host holds no lease (nothing was changed from there on).
        """

    async def assert_host(self, state: str) -> tuple[int, list[tuple[str, Refusal]]]:
        """Make the directory hold exactly ``state`` for this host (see ``lua.ASSERT_HOST``).

        Returns:
            The version, and what could not be put back (another host holds it now).

        Raises:
            NotJoined: This host holds no lease.
        """

    async def snapshot(self) -> Snapshot: ...

    async def host_info(self, host: str) -> str | None:
        """What a live host said of itself when it joined (JSON), or ``None``."""

    async def version(self) -> int:
        """The directory's version now."""

    async def changes(self, after: int, wait: float) -> list[Change]:
        """The changes after version ``after``, waiting up to ``wait`` seconds for one.

        Raises:
            Gap: They are no longer all in the log.
        """

    async def publish(self, host: str, data: bytes) -> int:
        """Send a batch to ``host``'s inbox; returns how many listeners took it (0: nobody)."""

    async def receive(self) -> bytes:
        """The next batch sent to this host."""
