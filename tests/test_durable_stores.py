"""The state stores of durable agents: newest version wins, whatever order saves arrive in.

Each store takes many concurrent saves for one agent id, in shuffled version order, while
readers watch: the version a reader sees never goes down, and the store ends with the
newest state. The Redis store runs on a real redis-server, with two stores (two hosts)
saving the same id at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from autogen_http_runtime._cluster.state_store import RedisStateStore
from autogen_http_runtime._host.state import MemoryStateStore, StateStore, StateStoreError
from autogen_http_runtime._host.state_files import FileStateStore

from .cluster_utils import redis_server
from .redis_server import RedisServer
from .utils import bounded

__all__ = ["redis_server"]  # fixtures

SAVES = 200


async def _race(writers: list[StateStore], reader: StateStore, key: str = "counter/a") -> None:
    """Saves 1..SAVES spread over ``writers`` in random order, all at once, with a reader watching."""
    versions = list(range(1, SAVES + 1))
    random.shuffle(versions)
    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            stored = await reader.load(key)
            if stored is not None:
                assert json.loads(stored.state) == {"count": stored.version}  # never a torn pair
                seen.append(stored.version)
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(watch())
    outcomes = await bounded(
        asyncio.gather(
            *(
                writers[i % len(writers)].save(key, version, json.dumps({"count": version}))
                for i, version in enumerate(versions)
            )
        )
    )
    done.set()
    await bounded(watcher)
    assert seen == sorted(seen), "a reader saw the version go down"
    final = await reader.load(key)
    assert final is not None and final.version == SAVES
    assert json.loads(final.state) == {"count": SAVES}
    # A save was stored only if nothing newer was there; one refused names what was newer.
    for version, outcome in zip(versions, outcomes, strict=True):
        assert outcome.version >= version
        assert outcome.stored == (outcome.version == version)
    assert outcomes[versions.index(SAVES)].stored


async def _basics(store: StateStore) -> None:
    assert await store.load("t/none") is None
    first = await store.save("t/k", 1, '{"a":1}')
    assert (first.stored, first.version) == (True, 1)
    again = await store.save("t/k", 1, '{"a":2}')  # the same version again: not newer
    assert (again.stored, again.version) == (False, 1)
    older = await store.save("t/k", 0, '{"a":0}')
    assert (older.stored, older.version) == (False, 1)
    loaded = await store.load("t/k")
    assert loaded is not None and (loaded.version, loaded.state) == (1, '{"a":1}')
    # Based-on checks (the worker says whose state its copy came from): worker A saved v5;
    # B loaded it and saved v6; A, still on its old copy, saves v6 then v7: both refused.
    assert (await store.save("t/s", 5, '"a5"', "A", "")).stored
    held = await store.load("t/s")
    assert held is not None and held.writer == "A"
    assert (await store.save("t/s", 6, '"b6"', "B", held.writer)).stored
    assert not (await store.save("t/s", 6, '"a6"', "A", "A")).stored
    stale = await store.save("t/s", 7, '"a7"', "A", "A")
    assert (stale.stored, stale.version) == (False, 6)
    kept = await store.load("t/s")
    assert kept is not None and (kept.version, kept.state, kept.writer) == (6, '"b6"', "B")
    assert (await store.save("t/s", 7, '"a7"', "A", "B")).stored  # after reloading B's
    assert not (await store.save("t/new", 1, "{}", "A", "A")).stored  # based on a state never held
    # Any key, even one no file system or shell would like, is its own id.
    odd = "t/../../etc/passwd\n\x00é"
    assert (await store.save(odd, 3, "{}")).stored
    assert (await store.load(odd)) is not None and await store.load("t/../../etc/passwd") is None


async def test_memory_store_keeps_the_newest_version() -> None:
    store = MemoryStateStore()
    await _basics(store)
    await _race([store], store)


async def test_memory_store_refuses_what_it_has_no_room_for() -> None:
    store = MemoryStateStore(max_bytes=100)
    assert (await store.save("t/a", 1, "x" * 60)).stored
    with pytest.raises(StateStoreError, match="full"):
        await store.save("t/b", 1, "x" * 60)
    assert (await store.save("t/a", 2, "y" * 90)).stored  # replacing frees the old state's bytes
    assert store.bytes == 90


async def test_file_store_keeps_the_newest_version(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "states")
    try:
        await _basics(store)
        await _race([store], store)
    finally:
        await store.close()
    # One journal, nothing else (tests/test_state_files.py: its replay, torn records, compaction).
    assert os.listdir(tmp_path / "states") == ["states.journal"]


async def test_file_store_reads_what_an_earlier_process_wrote(tmp_path: Path) -> None:
    first = FileStateStore(tmp_path)
    await first.save("counter/a", 7, '{"count":7}', "w1")
    with pytest.raises(OSError, match="Another process"):
        FileStateStore(tmp_path)  # one host per directory
    await first.close()
    second = FileStateStore(tmp_path)  # a host restarted on the same directory
    try:
        loaded = await second.load("counter/a")
        assert loaded is not None and (loaded.version, loaded.state, loaded.writer) == (
            7,
            '{"count":7}',
            "w1",
        )
        assert not (await second.save("counter/a", 7, "{}")).stored  # the versions carry on
    finally:
        await second.close()
    with pytest.raises(StateStoreError, match="closed"):
        await second.save("counter/a", 8, "{}")


@pytest.fixture
async def redis_stores(redis_server: RedisServer) -> AsyncIterator[list[RedisStateStore]]:
    stores = [RedisStateStore(redis_server.url, cluster="c1") for _ in range(2)]
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


async def test_redis_store_keeps_the_newest_version_across_hosts(redis_stores: list[RedisStateStore]) -> None:
    first, second = redis_stores
    await _basics(first)
    await _race([first, second], second)
    assert first.key("counter/a") == "autogen:{c1}:state:counter/a"


async def test_redis_store_of_another_cluster_is_apart(
    redis_server: RedisServer,
    redis_stores: list[RedisStateStore],
) -> None:
    other = RedisStateStore(redis_server.url, cluster="c2")
    try:
        await redis_stores[0].save("t/k", 5, "{}")
        assert await other.load("t/k") is None
    finally:
        await other.close()


async def test_redis_store_fails_clearly_when_redis_is_gone(redis_server: RedisServer) -> None:
    store = RedisStateStore(redis_server.url, cluster="c1")
    try:
        await store.save("t/k", 1, "{}")
        redis_server.kill()
        with pytest.raises(StateStoreError, match="Redis at"):
            await bounded(store.load("t/k"), 15)
        redis_server.restart()  # empty: the store connects again on its next batch
        assert (await bounded(store.save("t/k", 1, "{}"))).stored
    finally:
        await store.close()


async def test_redis_store_gets_over_a_redis_that_hung(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autogen_http_runtime._cluster import state_store

    monkeypatch.setattr(state_store, "COMMAND_TIMEOUT", 0.3)
    store = RedisStateStore(redis_server.url, cluster="c1")
    try:
        assert (await bounded(store.save("t/k", 1, "{}"))).stored
        redis_server.pause()
        try:
            with pytest.raises(StateStoreError, match="no answer"):
                await bounded(store.save("t/k", 2, "{}"))
        finally:
            redis_server.resume()
        # A new connection; the save that timed out may or may not have run in Redis.
        loaded = await bounded(store.load("t/k"))
        assert loaded is not None and loaded.version in (1, 2)
        assert (await bounded(store.save("t/k", 3, "{}"))).stored
    finally:
        await store.close()


async def test_redis_store_fails_only_the_operation_redis_refused(
    redis_server: RedisServer, redis_stores: list[RedisStateStore]
) -> None:
    import redis.asyncio as aioredis

    store = redis_stores[0]
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.set(store.key("t/bad"), "not a hash")
    finally:
        await client.aclose()
    with pytest.raises(StateStoreError, match="WRONGTYPE"):
        await bounded(store.save("t/bad", 1, "{}"))
    # Alone and in a batch with others: only its own operation fails.
    outcomes = await bounded(
        asyncio.gather(
            store.save("t/good", 1, "{}"),
            store.save("t/bad", 2, "{}"),
            store.load("t/good"),
            return_exceptions=True,
        )
    )
    assert outcomes[0].stored  # type: ignore[union-attr]
    assert isinstance(outcomes[1], StateStoreError)
    assert outcomes[2] is not None and outcomes[2].version == 1  # type: ignore[union-attr]


async def test_redis_store_fails_a_batch_redis_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from autogen_http_runtime._cluster import state_store

    monkeypatch.setattr(state_store, "COMMAND_TIMEOUT", 0.2)
    silent: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStateStore(f"redis://127.0.0.1:{port}/0", cluster="c1")
    try:
        outcomes = await bounded(
            asyncio.gather(store.save("t/a", 1, "{}"), store.load("t/b"), return_exceptions=True)
        )
        assert all(isinstance(o, StateStoreError) and "no answer" in str(o) for o in outcomes), outcomes
        with pytest.raises(StateStoreError, match="no answer"):  # the next batch tries again
            await bounded(store.save("t/a", 1, "{}"))
    finally:
        await bounded(store.close())
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()
