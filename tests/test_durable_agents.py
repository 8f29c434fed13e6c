"""Durable agents (``persist_agent_state=True``) on one host: state restored wherever an id goes next.

A counting agent's count is its state. Where a worker must die it is a real process,
SIGKILLed; the next message for its agent id reaches another replica, which continues
the count from the host's store.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from autogen_core import (
    AgentId,
    DefaultTopicId,
    MessageContext,
    RoutedAgent,
    default_subscription,
    message_handler,
)
from websockets.asyncio.client import connect

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime, WorkerDisconnectedError
from autogen_http_runtime._constants import PROTOCOL_VERSION, WORKER_WS_PATH
from autogen_http_runtime._host.state import MemoryStateStore, SaveOutcome, StoredState
from autogen_http_runtime._host.state_calls import StateCalls

from .cluster_utils import until
from .procs.counter import Counter
from .test_processes import spawn
from .utils import SERIALIZERS, TIMEOUT, Text, bounded

KEYS = [f"k{i}" for i in range(40)]


@pytest.fixture
async def replicas_host() -> AsyncIterator[HttpAgentServer]:
    server = HttpAgentServer("127.0.0.1", port=0, replicas=True)
    await bounded(server.start())
    try:
        yield server
    finally:
        await bounded(server.stop(grace=1))


@pytest.fixture
async def workers() -> AsyncIterator[list[HttpWorkerAgentRuntime]]:
    started: list[HttpWorkerAgentRuntime] = []
    try:
        yield started
    finally:
        for worker in started:
            await bounded(worker.stop())


async def durable_worker(
    url: str, name: str, started: list[HttpWorkerAgentRuntime], *, serve: bool = True, **options: Any
) -> HttpWorkerAgentRuntime:
    worker = HttpWorkerAgentRuntime(url, name=name, persist_agent_state=True, **options)
    worker.add_message_serializer(SERIALIZERS)
    started.append(worker)
    await bounded(worker.start())
    if serve:
        await Counter.register(worker, "counter", lambda: Counter(name))
    return worker


async def count(caller: HttpWorkerAgentRuntime, key: str) -> str:
    reply = await bounded(caller.send_message(Text("count"), AgentId("counter", key)))
    assert isinstance(reply, Text)
    return reply.content


async def test_a_stopped_workers_agent_continues_its_count_on_the_next_worker(
    server: HttpAgentServer, workers: list[HttpWorkerAgentRuntime]
) -> None:
    caller = await durable_worker(server.url, "caller", workers, serve=False)
    first = await durable_worker(server.url, "A", workers)
    assert [await count(caller, "x") for _ in range(3)] == ["A:1", "A:2", "A:3"]
    assert await count(caller, "y") == "A:1"  # each id its own state
    await bounded(first.stop())
    await durable_worker(server.url, "B", workers)
    assert [await count(caller, "x") for _ in range(2)] == ["B:4", "B:5"]
    assert await count(caller, "y") == "B:2"
    stats = server.service.core.state.stats
    assert (stats.loads, stats.loads_found, stats.saves) == (4, 2, 7)
    assert workers[2].agent_state_counts() == {"loads": 2, "saves": 3, "stale": 0, "failed": 0}
    # The runtime-wide save_state still covers the worker's own agents, and agent_save_state
    # reads the agent where it lives.
    assert await bounded(workers[2].save_state()) == {"counter/x": {"count": 5}, "counter/y": {"count": 2}}
    assert await bounded(caller.agent_save_state(AgentId("counter", "x"))) == {"count": 5}


async def test_an_agent_read_on_its_own_worker_is_activated_first(
    server: HttpAgentServer, workers: list[HttpWorkerAgentRuntime]
) -> None:
    caller = await durable_worker(server.url, "caller", workers, serve=False)
    first = await durable_worker(server.url, "A", workers)
    assert [await count(caller, "x") for _ in range(2)] == ["A:1", "A:2"]
    await bounded(first.stop())
    second = await durable_worker(server.url, "B", workers)
    # No message reached B's agent yet: reading it here restores it first, as through the host.
    assert await bounded(second.agent_save_state(AgentId("counter", "x"))) == {"count": 2}
    await bounded(second.agent_load_state(AgentId("counter", "x"), {"count": 10}))
    assert await count(caller, "x") == "B:11"
    await bounded(second.stop())
    await durable_worker(server.url, "C", workers)
    assert await count(caller, "x") == "C:12"  # the loaded state was saved, and what followed


async def test_concurrent_messages_to_one_agent_save_in_version_order(
    server: HttpAgentServer, workers: list[HttpWorkerAgentRuntime]
) -> None:
    caller = await durable_worker(server.url, "caller", workers, serve=False)
    worker = await durable_worker(server.url, "A", workers)
    calls = 60
    replies = await bounded(asyncio.gather(*(count(caller, "hot") for _ in range(calls))))
    assert sorted(replies) == sorted(f"A:{n}" for n in range(1, calls + 1))

    async def all_stored() -> bool:
        return worker.agent_state_counts()["saves"] == calls

    await until(all_stored)
    assert worker.agent_state_counts() == {"loads": 1, "saves": calls, "stale": 0, "failed": 0}
    stored = await server.service.core.state.store.load("counter/hot")
    assert stored is not None and stored.version == calls and json.loads(stored.state) == {"count": calls}
    assert server.service.core.state.stats.refused_stale == 0


class SlowStore(MemoryStateStore):
    """A store of another kind (a database's): each operation waits on the event loop."""

    immediate = False

    async def load(self, key: str) -> StoredState | None:
        await asyncio.sleep(0)
        return await super().load(key)

    async def save(
        self, key: str, version: int, state: str, writer: str = "", base: str | None = None
    ) -> SaveOutcome:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return await super().save(key, version, state, writer, base)


async def test_a_store_that_waits_gets_the_operations_of_an_id_in_order(
    server: HttpAgentServer, workers: list[HttpWorkerAgentRuntime]
) -> None:
    core = server.service.core
    core.state = StateCalls(core.directory, logging.getLogger("test"), store=SlowStore())
    caller = await durable_worker(server.url, "caller", workers, serve=False)
    first = await durable_worker(server.url, "A", workers)
    calls = 40
    replies = await bounded(asyncio.gather(*(count(caller, "hot") for _ in range(calls))))
    assert sorted(replies) == sorted(f"A:{n}" for n in range(1, calls + 1))

    async def all_stored() -> bool:
        return first.agent_state_counts()["saves"] == calls

    await until(all_stored)
    await bounded(first.stop())
    await durable_worker(server.url, "B", workers)
    assert await count(caller, "hot") == f"B:{calls + 1}"
    assert core.state.stats.refused_stale == 0


async def test_a_copy_left_behind_by_a_replica_set_change_is_refused_as_stale_and_reloaded(
    replicas_host: HttpAgentServer, workers: list[HttpWorkerAgentRuntime]
) -> None:
    caller = await durable_worker(replicas_host.url, "caller", workers, serve=False)
    await durable_worker(replicas_host.url, "A", workers)
    assert {await count(caller, key) for key in KEYS} == {"A:1"}
    joiner = await durable_worker(replicas_host.url, "B", workers)
    second = {key: await count(caller, key) for key in KEYS}
    moved = [key for key, reply in second.items() if reply == "B:2"]  # B restored them
    assert moved and set(second.values()) == {"A:2", "B:2"}
    await bounded(joiner.stop())
    workers.remove(joiner)
    key = moved[0]
    # Back on A, which still holds the copy it had (count 1): docs/durable-agents.md, "One
    # owner at a time". Its save is refused (the store has B's version 2) ...
    assert await count(caller, key) == "A:2"
    stats = replicas_host.service.core.state.stats

    async def refused() -> bool:
        return stats.refused_stale == 1

    await until(refused)
    # ... and A reloads before the next message: the count goes on from the stored one.
    assert await count(caller, key) == "A:3"
    assert workers[1].agent_state_counts()["stale"] == 1


async def test_the_host_lets_a_worker_load_and_save_only_the_types_it_serves(server: HttpAgentServer) -> None:
    url = server.url.replace("http", "ws", 1) + WORKER_WS_PATH
    async with connect(url, open_timeout=TIMEOUT) as ws:

        async def ask(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
            await ws.send(
                json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            )
            answer: dict[str, Any] = json.loads(await bounded(ws.recv()))
            assert answer["id"] == request_id
            return answer

        await ask(1, "hello", {"protocol": PROTOCOL_VERSION})
        agent = {"type": "counter", "key": "k"}
        refused = await ask(2, "state.load", {"agent": agent})
        assert (
            refused["error"]["code"] == -32602
            and "not registered by this worker" in refused["error"]["message"]
        )
        await ask(3, "register_agent_type", {"type": "counter"})
        assert (await ask(4, "state.load", {"agent": agent}))["result"] is None
        saved = await ask(5, "state.save", {"agent": agent, "version": 2, "state": {"count": 2}})
        assert saved["result"] == {"stored": True, "version": 2}
        stale = await ask(6, "state.save", {"agent": agent, "version": 1, "state": {"count": 1}})
        assert stale["result"] == {"stored": False, "version": 2}
        loaded = (await ask(7, "state.load", {"agent": agent}))["result"]
        assert loaded["version"] == 2 and loaded["state"] == {"count": 2}
        # The writer is a digest the host makes of the worker's id, not the id itself.
        assert len(loaded["writer"]) == 16 and loaded["writer"] not in json.dumps(loaded["state"])
        # A save based on another writer's state than the one held is refused, whatever its version.
        other = await ask(
            9, "state.save", {"agent": agent, "version": 5, "state": {}, "base": "someone-else"}
        )
        assert other["result"] == {"stored": False, "version": 2}
        mine = await ask(
            10, "state.save", {"agent": agent, "version": 3, "state": {}, "base": loaded["writer"]}
        )
        assert mine["result"] == {"stored": True, "version": 3}
        for bad in ({"version": 0}, {"version": True}, {"version": 3, "state": [1]}):
            params = {"agent": agent, "version": 3, "state": {}, **bad}
            assert (await ask(8, "state.save", params))["error"]["code"] == -32602
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        metrics = (await bounded(http.get("/metrics"))).text
    assert 'autogen_http_state_refused_total{reason="stale"} 2.0' in metrics
    assert "autogen_http_state_saves_total 2.0" in metrics


class Slow(Counter):
    """A counter whose ``slow`` messages wait for ``release`` before they count."""

    release: asyncio.Event
    started: asyncio.Event

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        if message.content == "slow":
            self.started.set()
            await self.release.wait()
        return await super().on_text(message, ctx)


async def test_a_handler_finishing_while_its_worker_stops_still_saves(
    server: HttpAgentServer, workers: list[HttpWorkerAgentRuntime]
) -> None:
    Slow.release, Slow.started = asyncio.Event(), asyncio.Event()
    caller = await durable_worker(server.url, "caller", workers, serve=False)
    first = await durable_worker(server.url, "A", workers, serve=False)
    await Slow.register(first, "counter", lambda: Slow("A"))
    assert await count(caller, "x") == "A:1"
    slow = asyncio.ensure_future(caller.send_message(Text("slow"), AgentId("counter", "x")))
    await bounded(Slow.started.wait())
    stopping = asyncio.ensure_future(first.stop())  # drains: the host routes nothing new to A

    async def draining() -> bool:
        return not server.service.core.directory.serving("counter")

    await until(draining)
    Slow.release.set()
    assert await bounded(slow) == Text("A:2")
    await bounded(stopping)
    assert first.agent_state_counts()["saves"] == 2
    await durable_worker(server.url, "B", workers)
    assert await count(caller, "x") == "B:3"


@default_subscription
class Tally(RoutedAgent):
    """Counts the events it gets; a call reads the count."""

    def __init__(self) -> None:
        super().__init__("counts events")
        self.events = 0

    async def save_state(self) -> Mapping[str, Any]:
        return {"events": self.events}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.events = int(state["events"])

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        if ctx.is_rpc:
            return Text(str(self.events))
        self.events += 1
        return Text("")


async def test_events_are_saved_too(server: HttpAgentServer, workers: list[HttpWorkerAgentRuntime]) -> None:
    publisher = await durable_worker(server.url, "publisher", workers, serve=False)
    first = await durable_worker(server.url, "A", workers, serve=False)
    await Tally.register(first, "tally", Tally)
    for _ in range(4):
        await publisher.publish_message(Text("tick"), DefaultTopicId())

    async def counted() -> bool:
        reply = await publisher.send_message(Text("?"), AgentId("tally", "default"))
        return bool(reply.content == "4")

    await until(counted)
    await bounded(first.stop())
    second = await durable_worker(server.url, "B", workers, serve=False)
    await Tally.register(second, "tally", Tally)
    assert (await bounded(publisher.send_message(Text("?"), AgentId("tally", "default")))).content == "4"


async def test_a_killed_replicas_agents_continue_their_count_on_another_replica(
    replicas_host: HttpAgentServer, workers: list[HttpWorkerAgentRuntime]
) -> None:
    caller = await durable_worker(replicas_host.url, "caller", workers, serve=False)
    await durable_worker(replicas_host.url, "B", workers)
    async with spawn("counter", replicas_host.url, "A") as replica:
        await replica.expect("READY")
        first = {key: await count(caller, key) for key in KEYS}
        on_a = [key for key, reply in first.items() if reply == "A:1"]
        assert on_a, "no key was placed on A"
        for key in on_a:
            assert [await count(caller, key) for _ in range(2)] == ["A:2", "A:3"]
        replica.proc.kill()
        assert await bounded(replica.proc.wait()) == -9

        async def moved() -> bool:  # until the host has seen A go: a call to it fails meanwhile
            try:
                return (await count(caller, on_a[0])).startswith("B:")
            except WorkerDisconnectedError:
                return False

        await until(moved)
    assert await count(caller, on_a[0]) == "B:5"  # 3 on A, the one that found B, and this one
    for key in on_a[1:]:
        assert await count(caller, key) == "B:4"
    for key in KEYS:  # B's own keys never moved
        if key not in on_a:
            assert await count(caller, key) == "B:2"


class Unsaveable(RoutedAgent):
    def __init__(self, big: bool) -> None:
        super().__init__("a state that cannot be saved")
        self._big = big

    async def save_state(self) -> Mapping[str, Any]:
        return {"blob": "x" * 5000} if self._big else {"lock": asyncio.Lock()}

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        return Text("still answered")


@pytest.mark.parametrize("big", [False, True], ids=["not-json", "too-large"])
async def test_a_state_that_cannot_be_saved_is_logged_and_counted_and_the_reply_still_sent(
    workers: list[HttpWorkerAgentRuntime], caplog: pytest.LogCaptureFixture, big: bool
) -> None:
    async with HttpAgentServer("127.0.0.1", port=0, max_state_size=4096) as server:
        caller = await durable_worker(server.url, "caller", workers, serve=False)
        worker = await durable_worker(server.url, "A", workers, serve=False)
        await Unsaveable.register(worker, "odd", lambda: Unsaveable(big))
        with caplog.at_level(logging.ERROR, "autogen_http_runtime.worker"):
            for _ in range(3):
                reply = await bounded(caller.send_message(Text("hi"), AgentId("odd", "k")))
                assert reply == Text("still answered")

            async def failed_thrice() -> bool:
                return worker.agent_state_counts()["failed"] == 3

            await until(failed_thrice)
        errors = [r.getMessage() for r in caplog.records if "state of agent odd/k" in r.getMessage()]
        assert len(errors) == 1  # once at ERROR, then at DEBUG
        assert ("4096" if big else "Lock") in errors[0]
        assert server.service.core.state.stats.refused_too_large == (3 if big else 0)
        for _ in range(2):
            await bounded(worker.stop())  # idempotent; nothing left hanging
        workers.remove(worker)


async def test_serve_state_dir_survives_a_host_restart(
    tmp_path: Path, workers: list[HttpWorkerAgentRuntime]
) -> None:
    import sys

    from .test_cli import ready_url, serve

    command = (sys.executable, "-m", "autogen_http_runtime", "serve", "--state-dir", str(tmp_path / "states"))
    async with serve(*command, "--port", "0") as host:
        url = await ready_url(host)
        caller = await durable_worker(url, "caller", workers, serve=False, reconnect=None)
        serving = await durable_worker(url, "A", workers, reconnect=None)
        assert [await count(caller, "x") for _ in range(3)] == ["A:1", "A:2", "A:3"]

        async def stored() -> bool:  # the reply does not wait for the store (docs/durable-agents.md)
            return serving.agent_state_counts()["saves"] == 3

        await until(stored)
        host.kill()
        await bounded(host.wait())
    port = url.rsplit(":", 1)[1]
    async with serve(*command, "--port", port) as host:
        assert await ready_url(host) == url
        fresh: list[HttpWorkerAgentRuntime] = []
        try:
            caller = await durable_worker(url, "caller2", fresh, serve=False)
            await durable_worker(url, "B", fresh)
            assert await count(caller, "x") == "B:4"
        finally:
            for worker in fresh:
                await bounded(worker.stop())


def test_serve_refuses_a_state_dir_with_a_redis_url(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGEN_HTTP_")}
    done = subprocess.run(
        [sys.executable, "-m", "autogen_http_runtime", "serve", "--port", "0", "--state-dir", str(tmp_path)]
        + ["--redis-url", "redis://127.0.0.1:1/0", "--cluster-secret", "x"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        env=environment,
    )
    assert done.returncode == 2, done.stderr
    assert "state_dir and redis_url exclude each other" in done.stderr


async def test_serve_refuses_a_state_dir_another_host_holds(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from autogen_http_runtime._host.state_files import FileStateStore

    holder = FileStateStore(tmp_path)  # the host already serving from it
    try:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGEN_HTTP_")}
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "autogen_http_runtime",
                "serve",
                "--port",
                "0",
                "--state-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 3,
            env=environment,
        )
    finally:
        await holder.close()
    assert done.returncode == 1, done.stderr
    assert "Another process keeps agent states in" in done.stderr
