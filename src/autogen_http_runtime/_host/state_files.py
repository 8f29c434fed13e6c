"""Durable agents' states in a directory (``serve --state-dir``): an append-only journal.

The directory holds ``states.journal``. Each stored save appends one line to it::

    <CRC-32 of the rest, 8 hex digits> {"agent":"<type>/<key>","version":<n>,"writer":"<w>","state":<state>}

where ``<state>`` is the state's JSON text as saved (a JSON string of it if it is not one
line).

An index in memory maps each agent id to its newest record's version, writer, and place in
the file; a load reads that one record back. A save is checked against the index and
appended (one ``write`` to the OS, in the event loop: no thread, no file per save) before
it is acknowledged, with no ``await`` between the check and the write, so the check and
the write are one step. On opening, the journal is read from the start: the newest
version of each id wins, and a line that is incomplete or fails its CRC (a write torn by
a crash) is skipped, so the version before it stays. When the journal has grown past
twice the size of the records still current (and past ``compact_after`` bytes), those are
copied to a new journal in a thread, the records appended meanwhile after them, and the
new file renamed over the old one (``os.replace``): a crash at any point leaves one whole
journal. A directory of the earlier layout (one ``<digest>.json`` file per id) is taken
into the journal when opened, and its files removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .._constants import HOST_LOGGER
from .state import SaveOutcome, StateStoreError, StoredState, accepts

try:
    import fcntl

    _flock: Callable[[int, int], None] | None = fcntl.flock
except ImportError:  # pragma: no cover - Windows: no lock; one host per directory all the same
    _flock = None

__all__ = ["DEFAULT_COMPACT_AFTER", "JOURNAL", "FileStateStore"]

#: The journal's file name in the directory.
JOURNAL: Final = "states.journal"
#: The journal is not compacted below this size, whatever it holds.
DEFAULT_COMPACT_AFTER: Final = 16 * 1024 * 1024
#: What separates a record's header from its state (never inside a JSON string: a ``"``
#: in one is escaped).
_STATE: Final = b',"state":'
#: A file of the earlier layout: one per agent id.
_PER_ID_FILE: Final = re.compile(r"[0-9a-f]{40}\.json")


@dataclass(slots=True)
class _Record:
    """Where the newest record of an agent id is, and what the saves are checked against."""

    version: int
    writer: str
    offset: int
    length: int


def _encode(key: str, version: int, writer: str, state: str) -> bytes:
    head = json.dumps({"agent": key, "version": version, "writer": writer}, separators=(",", ":"))[:-1]
    try:
        if "\n" in state:  # not one line (JSON is only when indented)
            raise ValueError
        data = f'{head},"state":{state}}}'.encode()
    except ValueError:  # that, or not UTF-8 (a lone surrogate): kept as a JSON string
        data = f'{head},"quoted":true,"state":{json.dumps(state)}}}'.encode()
    return b"%08x %s\n" % (zlib.crc32(data), data)


def _decode(line: bytes) -> tuple[dict[str, object], bytes] | None:
    """A record's header and state text, or ``None`` if the line is torn or damaged."""
    if len(line) < 11 or line[8:9] != b" " or not line.endswith(b"\n"):
        return None
    data = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(data):
            return None
        cut = data.index(_STATE)
        head = json.loads(data[:cut] + b"}")
    except ValueError:
        return None
    if not isinstance(head, dict) or not isinstance(head.get("agent"), str):
        return None
    if not isinstance(head.get("version"), int) or not isinstance(head.get("writer"), str):
        return None
    return head, data[cut + len(_STATE) : -1]


class FileStateStore:
    """States in an append-only journal in a directory: they survive a restart of the host.

    One host process per directory (a lock on the directory refuses a second, where the
    platform has ``fcntl``). Saves are written to the OS before they are acknowledged; a
    crash of the host loses none of those, a crash of the machine may (unless ``fsync``).

    Args:
        directory: Where the journal goes; created if missing.
        fsync: Flush the journal to the disk after each save (survives a power cut, at the
            cost of a disk flush per save).
        compact_after: Compact no journal smaller than this many bytes.

    Raises:
        OSError: The directory cannot be used, or another process holds it.
    """

    #: Loads and saves never wait (``StateStore``): the disk is written in the event loop.
    immediate = True

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: bool = False,
        compact_after: int = DEFAULT_COMPACT_AFTER,
        logger: logging.Logger | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.where = str(self.directory)
        self.journal = self.directory / JOURNAL
        self._fsync = fsync
        self._compact_after = compact_after
        self._retry_after = 0  # after a failed compaction: the size at which to try again
        self._log = logger or logging.getLogger(HOST_LOGGER)
        self._index: dict[str, _Record] = {}
        #: The journal's size, and that of the records in the index (the rest is garbage).
        self.size = self.live = 0
        #: Damaged lines skipped when the journal was read.
        self.skipped = 0
        #: Compactions done since opening.
        self.compactions = 0
        self._torn = False  # a failed write may have left part of a line: start the next on a new one
        self._compacting: asyncio.Task[None] | None = None
        self._closed = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(self.directory, os.O_RDONLY)
        except OSError as exc:
            raise OSError(f"Cannot use {self.where} for agent states: {exc}") from None
        try:
            self._lock()
            self._fd = os.open(self.journal, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except BaseException:
            os.close(self._dir_fd)
            raise
        try:
            self._replay()
            self._migrate()
        except BaseException:
            os.close(self._fd)
            os.close(self._dir_fd)
            raise

    def __len__(self) -> int:
        return len(self._index)

    async def load(self, key: str) -> StoredState | None:
        self._check_open()
        record = self._index.get(key)
        if record is None:
            return None
        try:
            line = os.pread(self._fd, record.length, record.offset)
        except OSError as exc:
            raise StateStoreError(f"Cannot read the state of {key} in {self.where}: {exc}") from None
        decoded = _decode(line)
        if decoded is None:
            raise StateStoreError(f"The state of {key} in {self.where} is damaged")
        head, state = decoded
        text = state.decode("utf-8")
        return StoredState(record.version, json.loads(text) if head.get("quoted") else text, record.writer)

    async def save(
        self, key: str, version: int, state: str, writer: str = "", base: str | None = None
    ) -> SaveOutcome:
        # No await from the check to the index's update: one step on the event loop.
        self._check_open()
        held = self._index.get(key)
        if not accepts(held, version, base):
            return SaveOutcome(False, 0 if held is None else held.version)
        line = _encode(key, version, writer, state)
        offset = self._append(line, key)
        self._index[key] = _Record(version, writer, offset, len(line))
        self.live += len(line) - (0 if held is None else held.length)
        if self.size > max(self._compact_after, 2 * self.live, self._retry_after) and (
            self._compacting is None or self._compacting.done()
        ):
            self._compacting = asyncio.get_running_loop().create_task(self._compact())
        return SaveOutcome(True, version)

    async def close(self) -> None:
        """Finish a compaction under way (up to 10 s), then close the journal; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._compacting is not None and not self._compacting.done():
            await asyncio.wait([self._compacting], timeout=10.0)
        os.close(self._fd)
        os.close(self._dir_fd)  # and with it the directory's lock

    def _check_open(self) -> None:
        if self._closed:
            raise StateStoreError(f"The state store in {self.where} is closed")

    def _lock(self) -> None:
        if _flock is None:  # pragma: no cover
            return
        try:
            _flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OSError(
                f"Another process keeps agent states in {self.where}: one host per state directory."
            ) from None

    def _append(self, line: bytes, key: str) -> int:
        """Write ``line`` at the end of the journal; where it starts."""
        start, prefix = self.size, b""
        if self._torn:  # what a failed write left becomes a damaged line of its own
            start, prefix = os.fstat(self._fd).st_size, b"\n"
        try:
            _write_all(self._fd, prefix + line)
            if self._fsync:
                os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._torn = True
            raise StateStoreError(f"Cannot write the state of {key} in {self.where}: {exc}") from None
        self._torn = False
        self.size = start + len(prefix) + len(line)
        return start + len(prefix)

    def _replay(self) -> None:
        """Build the index from the journal; cut off an incomplete last line."""
        offset = end = 0
        with open(self._fd, "rb", closefd=False) as journal:
            for line in journal:
                decoded = _decode(line)
                if decoded is None:
                    if line.endswith(b"\n"):
                        self.skipped += 1
                else:
                    self._index_record(decoded[0], offset, len(line))
                offset += len(line)
                if line.endswith(b"\n"):
                    end = offset
        if end < offset:  # a torn last line: the next record must start a line of its own
            self._log.warning("Cut an incomplete last record (%d bytes) off %s", offset - end, self.journal)
            os.ftruncate(self._fd, end)
        self.size = end
        if self.skipped:
            self._log.warning("Skipped %d damaged records in %s", self.skipped, self.journal)

    def _index_record(self, head: dict[str, object], offset: int, length: int) -> None:
        key, version, writer = head["agent"], head["version"], head["writer"]
        assert isinstance(key, str) and isinstance(version, int) and isinstance(writer, str)
        held = self._index.get(key)
        if held is None or version > held.version:
            self._index[key] = _Record(version, writer, offset, length)
            self.live += length - (0 if held is None else held.length)

    def _migrate(self) -> None:
        """Take the files of the earlier layout (one per agent id) into the journal."""
        names = sorted(os.listdir(self.directory))
        for name in names:
            if (name.startswith(".") and name.endswith(".tmp")) or name == JOURNAL + ".new":
                with contextlib.suppress(OSError):  # a temporary file a crash left
                    os.unlink(self.directory / name)
        taken: list[str] = []
        for name in filter(_PER_ID_FILE.fullmatch, names):
            try:
                stored = json.loads((self.directory / name).read_text("utf-8"))
                key, version = str(stored["agent"]), int(stored["version"])
                state, writer = str(stored["state"]), str(stored.get("writer", ""))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._log.warning("Left %s in %s: not a state file (%s)", name, self.where, exc)
                continue
            held = self._index.get(key)
            if held is None or version > held.version:
                line = _encode(key, version, writer, state)
                self._index[key] = _Record(version, writer, self._append(line, key), len(line))
                self.live += len(line) - (0 if held is None else held.length)
            taken.append(name)
        if taken:
            os.fsync(self._fd)  # in the journal for sure before the files go
            for name in taken:
                os.unlink(self.directory / name)
            self._log.info("Moved %d agent states in %s into %s", len(taken), self.where, JOURNAL)

    async def _compact(self) -> None:
        """Rewrite the journal with only the current records (see the module's docstring)."""
        temporary = self.directory / (JOURNAL + ".new")
        records = sorted(self._index.items(), key=lambda item: item[1].offset)
        until = self.size
        fd = -1
        try:
            source = os.dup(self._fd)  # the thread's own: close() may close the store's meanwhile
            fd, offsets = await asyncio.to_thread(self._copy, source, temporary, [r for _, r in records])
            if self._closed:
                raise OSError("the store closed")
            # Back on the event loop, and no await from here: no save runs meanwhile.
            start = os.lseek(fd, 0, os.SEEK_END)
            tail = os.pread(self._fd, self.size - until, until) if self.size > until else b""
            _write_all(fd, tail)
            if self._fsync:
                os.fsync(fd)
            os.replace(temporary, self.journal)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            if not self._closed:
                self._log.warning("Could not compact %s: %s", self.journal, exc)
                self._retry_after = 2 * self.size  # not again at once
            return
        if self._fsync:
            with contextlib.suppress(OSError):
                os.fsync(self._dir_fd)
        moved = dict(zip((key for key, _ in records), offsets, strict=True))
        for key, record in self._index.items():
            record.offset = start + record.offset - until if record.offset >= until else moved[key]
        os.close(self._fd)
        self._fd, self.size, self._torn = fd, start + len(tail), False
        self.compactions += 1
        self._retry_after = 0

    @staticmethod
    def _copy(source: int, temporary: Path, records: list[_Record]) -> tuple[int, list[int]]:
        """In a thread: the records from ``source`` (closed after) into a new file; the new
        file's descriptor, and where each record went in it."""
        try:
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            try:
                offsets, position, pending = [], 0, bytearray()
                for record in records:
                    offsets.append(position)
                    pending += os.pread(source, record.length, record.offset)
                    position += record.length
                    if len(pending) > 1 << 20:
                        _write_all(fd, pending)
                        pending.clear()
                _write_all(fd, pending)
            except BaseException:
                os.close(fd)
                raise
        finally:
            os.close(source)
        return fd, offsets


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
