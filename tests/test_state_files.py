"""The file store's journal (``serve --state-dir``): replay, torn records, compaction, migration.

Each test writes through one :class:`FileStateStore`, closes it and opens another on the
same directory, as a restarted host does; what a crash leaves is made by writing the
journal's bytes directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

from autogen_http_runtime._host.state_files import JOURNAL, FileStateStore

from .utils import bounded


async def _reopened(directory: Path, **options: int) -> FileStateStore:
    return FileStateStore(directory, **options)  # type: ignore[arg-type]


async def _states(store: FileStateStore, keys: list[str]) -> dict[str, tuple[int, str, str] | None]:
    loaded = {key: await store.load(key) for key in keys}
    return {key: None if s is None else (s.version, s.state, s.writer) for key, s in loaded.items()}


async def test_a_restart_replays_the_journal(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path)
    keys = [f"t/{n}" for n in range(5)] + ['odd/"quoted",\\"state":\n\x00é']
    for version in range(1, 21):
        for n, key in enumerate(keys):
            if version % (n + 1) == 0:  # ids saved at different paces
                assert (await store.save(key, version, json.dumps({"v": version, "k": key}), f"w{n}")).stored
    # States that are not one line of JSON, or not JSON at all, come back exactly as saved.
    odd_states = {"s/lines": '{\n  "a": 1\n}', "s/text": "not json, \ud800 nor UTF-8", "s/empty": ""}
    for key, state in odd_states.items():
        assert (await store.save(key, 1, state)).stored
    before = await _states(store, [*keys, *odd_states])
    await store.close()
    again = await _reopened(tmp_path)
    try:
        assert await _states(again, [*keys, *odd_states]) == before
        assert {key: state for key, (_, state, _) in before.items() if key in odd_states} == odd_states  # type: ignore[misc]
        assert again.skipped == 0 and len(again) == len(keys) + len(odd_states)
        stale = await again.save("t/0", 20, "{}", "w9", "w0")  # not newer than what was replayed
        assert (stale.stored, stale.version) == (False, 20)
        assert not (await again.save("t/1", 21, "{}", "w9", "w0")).stored  # t/1's writer is w1
    finally:
        await again.close()


async def test_a_torn_record_is_ignored_and_the_version_before_stays(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path)
    await store.save("t/a", 1, '{"n":1}')
    await store.save("t/b", 1, '{"n":1}')
    await store.save("t/a", 2, '{"n":2}')
    await store.close()
    journal = tmp_path / JOURNAL
    whole = journal.read_bytes()
    lines = whole.splitlines(keepends=True)
    # A crash in the middle of appending t/a's version 3: part of its line, no newline.
    with journal.open("ab") as file:
        file.write(lines[-1].replace(b'"version":2', b'"version":3')[:40])
    store = await _reopened(tmp_path)
    try:
        assert await _states(store, ["t/a", "t/b"]) == {"t/a": (2, '{"n":2}', ""), "t/b": (1, '{"n":1}', "")}
        assert journal.read_bytes() == whole  # the torn part is cut off ...
        assert (await store.save("t/a", 3, '{"n":3}')).stored  # ... so the next record is whole
    finally:
        await store.close()
    store = await _reopened(tmp_path)
    try:
        assert await _states(store, ["t/a"]) == {"t/a": (3, '{"n":3}', "")}
    finally:
        await store.close()


async def test_a_damaged_record_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path)
    for version in (1, 2):
        await store.save("t/a", version, f'{{"n":{version}}}')
    await store.save("t/b", 1, '{"n":1}')
    await store.close()
    journal = tmp_path / JOURNAL
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"n":2', b'"n":9')  # t/a's version 2, its CRC no longer matching
    journal.write_bytes(b"".join([*lines, b"garbage\n", b"\x00" * 30 + b"\n"]))
    store = await _reopened(tmp_path)
    try:
        assert store.skipped == 3
        assert await _states(store, ["t/a", "t/b"]) == {"t/a": (1, '{"n":1}', ""), "t/b": (1, '{"n":1}', "")}
        assert (await store.save("t/a", 2, '{"n":2}')).stored
    finally:
        await store.close()


async def test_compaction_keeps_the_current_records_only(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path, compact_after=4096)
    keys = [f"t/{n}" for n in range(8)]
    version = interleaved = 0
    try:
        while store.compactions < 3:
            version += 1
            for key in keys:
                assert (await store.save(key, version, json.dumps({"v": version}), "w")).stored
            running = store._compacting
            if running is not None and not running.done():
                # Saves while the copy runs in its thread land after what it copies.
                await asyncio.sleep(0)
                interleaved += 1
                version += 1
                for key in keys[:3]:
                    assert (await store.save(key, version, json.dumps({"v": version}), "w")).stored
                await bounded(running)
        assert interleaved == 3
        expected = await _states(store, keys)
        assert store.size < 4096 + 2 * store.live
        assert store.size == (tmp_path / JOURNAL).stat().st_size
        assert sorted(os.listdir(tmp_path)) == [JOURNAL]
    finally:
        await store.close()
    store = await _reopened(tmp_path)
    try:
        assert await _states(store, keys) == expected
        assert expected["t/0"] == (version, json.dumps({"v": version}), "w")
        assert store.skipped == 0
    finally:
        await store.close()


async def test_the_files_of_the_earlier_layout_move_into_the_journal(tmp_path: Path) -> None:
    def per_id_file(key: str, version: int, state: str, writer: str | None) -> None:
        record = {"agent": key, "version": version, "state": state}
        if writer is not None:
            record["writer"] = writer
        name = hashlib.sha256(key.encode()).hexdigest()[:40] + ".json"
        (tmp_path / name).write_text(json.dumps(record))

    per_id_file("t/a", 4, '{"n":4}', "w1")
    per_id_file("t/b", 2, '{"n":2}', None)  # before writers were kept
    damaged = hashlib.sha256(b"t/c").hexdigest()[:40] + ".json"
    (tmp_path / damaged).write_text("not json")
    (tmp_path / ".x.tmp").write_text("a crash's leftover")
    store = FileStateStore(tmp_path)
    try:
        assert await _states(store, ["t/a", "t/b"]) == {
            "t/a": (4, '{"n":4}', "w1"),
            "t/b": (2, '{"n":2}', ""),
        }
        assert sorted(os.listdir(tmp_path)) == sorted([damaged, JOURNAL])  # what it cannot read stays
    finally:
        await store.close()
    store = await _reopened(tmp_path)
    try:
        assert (await store.load("t/a")) is not None and len(store) == 2
    finally:
        await store.close()


@pytest.mark.parametrize("fsync", [False, True])
async def test_saves_are_in_the_file_when_acknowledged(tmp_path: Path, fsync: bool) -> None:
    store = FileStateStore(tmp_path, fsync=fsync)
    try:
        assert (await store.save("t/a", 1, '{"n":1}')).stored
        # Another reader of the file (no close, no flush) finds it: it is with the OS.
        assert b'"agent":"t/a"' in (tmp_path / JOURNAL).read_bytes()
    finally:
        await store.close()


WRITER = """
import asyncio, sys
from autogen_http_runtime._host.state_files import FileStateStore

async def main() -> None:
    store = FileStateStore(sys.argv[1])
    padding = "x" * 50_000  # large records: a kill is likely to land in the middle of one
    version = 0
    while True:
        version += 1
        await store.save("t/a", version, '{"v":%d,"p":"%s"}' % (version, padding))
        if version % 50 == 0:
            print(version, flush=True)

asyncio.run(main())
"""


async def test_a_host_killed_while_it_writes_leaves_a_readable_journal(tmp_path: Path) -> None:
    import signal
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        for _ in range(3):  # some saves acknowledged, more under way
            acknowledged = int(await bounded(process.stdout.readline()))
    finally:
        process.send_signal(signal.SIGKILL)
        await bounded(process.wait())
    store = FileStateStore(tmp_path)
    try:
        loaded = await store.load("t/a")
        assert loaded is not None and loaded.version >= acknowledged
        assert json.loads(loaded.state)["v"] == loaded.version
        assert store.skipped == 0
        assert (await store.save("t/a", loaded.version + 1, "{}")).stored
    finally:
        await store.close()
