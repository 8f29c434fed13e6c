"""Durable agents across the hosts of a cluster: states in Redis, restored on any host.

A counting replica (a real process) serves on the first host and is SIGKILLed; the next
message for its agent ids, sent through the second host, reaches a replica connected to
the second host, which continues the counts it reads from Redis.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from autogen_core import AgentId

from autogen_http_runtime import HttpWorkerAgentRuntime, WorkerDisconnectedError

from .cluster_utils import MakeHost, MakeWorker, make_host, make_worker, redis_server, until
from .procs.counter import Counter
from .redis_server import RedisServer
from .test_processes import spawn
from .utils import Text, bounded

__all__ = ["make_host", "make_worker", "redis_server"]  # fixtures

KEYS = [f"k{i}" for i in range(40)]


async def count(caller: HttpWorkerAgentRuntime, key: str) -> str:
    reply = await bounded(caller.send_message(Text("count"), AgentId("counter", key)))
    assert isinstance(reply, Text)
    return reply.content


async def test_a_killed_replica_on_one_host_continues_on_a_replica_of_another(
    make_host: MakeHost, make_worker: MakeWorker, redis_server: RedisServer
) -> None:
    first, second = await make_host(replicas=True), await make_host(replicas=True)
    caller = await make_worker(second.url, name="caller")
    survivor = await make_worker(second.url, name="B", persist_agent_state=True)
    await Counter.register(survivor, "counter", lambda: Counter("B"))
    async with spawn("counter", first.url, "A") as replica:
        await replica.expect("READY")
        on_a = [key for key in KEYS if await count(caller, key) == "A:1"]
        assert on_a, "no key was placed on A"
        for key in on_a:
            assert [await count(caller, key) for _ in range(2)] == ["A:2", "A:3"]
        replica.proc.kill()
        assert await bounded(replica.proc.wait()) == -9

        async def moved() -> bool:
            try:
                return (await count(caller, on_a[0])).startswith("B:")
            except WorkerDisconnectedError:
                return False

        await until(moved)
    assert await count(caller, on_a[0]) == "B:5"
    for key in on_a[1:]:
        assert await count(caller, key) == "B:4"
    # The states are in Redis, under the cluster's prefix, with their versions.
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        stored = await bounded(client.hgetall(f"autogen:{{default}}:state:counter/{on_a[1]}"))
    finally:
        await client.aclose()
    assert json.loads(stored["s"]) == {"count": 4} and stored["v"] == "4"
    assert first.service.core.state.stats.saves + second.service.core.state.stats.saves >= 4 * len(on_a)


async def test_with_redis_gone_saves_fail_loudly_and_calls_go_on(
    make_host: MakeHost, make_worker: MakeWorker, redis_server: RedisServer
) -> None:
    host = await make_host()
    caller = await make_worker(host.url, name="caller")
    worker = await make_worker(host.url, name="A", persist_agent_state=True)
    await Counter.register(worker, "counter", lambda: Counter("A"))
    assert [await count(caller, "k") for _ in range(2)] == ["A:1", "A:2"]

    async def stored() -> bool:  # the replies do not wait for the store
        return worker.agent_state_counts()["saves"] == 2

    await until(stored)
    redis_server.kill()
    # Calls between workers of one host go on without Redis; the saves cannot.
    assert await count(caller, "k") == "A:3"

    async def failed() -> bool:
        return worker.agent_state_counts()["failed"] == 1

    await until(failed)
    assert host.service.core.state.stats.failures == 1
    assert worker.agent_state_counts()["saves"] == 2
