"""Several workers serving one agent type (``HttpAgentService(replicas=True)``), over real sockets.

Each replica's agent answers with its worker's name, so a call says where its agent id was
placed. Where a replica must die, it runs in its own process and is SIGKILLed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from autogen_core import AgentId, MessageContext, TopicId, TypeSubscription

from autogen_http_runtime import (
    AgentTypeConflictError,
    HttpAgentServer,
    HttpWorkerAgentRuntime,
    SubscriptionError,
    WorkerDisconnectedError,
)

from .procs.replica import Replica
from .test_processes import spawn
from .utils import SERIALIZERS, Recorder, Text, bounded, owners

KEYS = [f"k{i}" for i in range(300)]
Inbox = asyncio.Queue[tuple[AgentId, Any, MessageContext]]
Start = Callable[..., Awaitable[HttpWorkerAgentRuntime]]


@pytest.fixture
async def host() -> AsyncIterator[HttpAgentServer]:
    server = HttpAgentServer("127.0.0.1", port=0, replicas=True)
    await bounded(server.start())
    try:
        yield server
    finally:
        await bounded(server.stop(grace=1))


@pytest.fixture
async def start(host: HttpAgentServer) -> AsyncIterator[Start]:
    """Start a worker named ``name``; with ``serve=``, it serves that type as a replica."""
    workers: list[HttpWorkerAgentRuntime] = []

    async def create(name: str, serve: str | None = None) -> HttpWorkerAgentRuntime:
        worker = HttpWorkerAgentRuntime(host.url, name=name)
        worker.add_message_serializer(SERIALIZERS)
        workers.append(worker)
        await bounded(worker.start())
        if serve is not None:
            await Replica.register(worker, serve, lambda: Replica(name))
        return worker

    try:
        yield create
    finally:
        for worker in workers:
            await bounded(worker.stop())


async def placement(
    caller: HttpWorkerAgentRuntime, keys: list[str] = KEYS, agent_type: str = "who"
) -> dict[str, str]:
    """Which replica answers for each key."""
    replies = await bounded(
        asyncio.gather(*(caller.send_message(Text("who"), AgentId(agent_type, key)) for key in keys))
    )
    return {key: reply.content for key, reply in zip(keys, replies, strict=True)}


async def test_without_replicas_a_second_worker_is_refused_as_on_grpc(server: HttpAgentServer) -> None:
    first, second = HttpWorkerAgentRuntime(server.url), HttpWorkerAgentRuntime(server.url)
    try:
        await bounded(first.start())
        await bounded(second.start())
        await Replica.register(first, "who", lambda: Replica("first"))
        with pytest.raises(AgentTypeConflictError) as refused:
            await bounded(Replica.register(second, "who", lambda: Replica("second")))
        owner = owners(server.service.core)["who"].worker_id
        assert str(refused.value) == f"Agent type 'who' is already registered by worker {owner}."
        assert refused.value.code == -32004
    finally:
        await bounded(first.stop())
        await bounded(second.stop())


async def test_three_replicas_share_the_keys_and_keep_them(start: Start) -> None:
    caller = await start("caller")
    for name in ("r1", "r2", "r3"):
        await start(name, serve="who")
    first = await placement(caller)
    shares = Counter(first.values())
    assert set(shares) == {"r1", "r2", "r3"}
    assert all(60 <= share <= 140 for share in shares.values()), shares  # 100 each, give or take
    for _ in range(10):
        assert await placement(caller) == first


async def test_a_joining_replica_takes_only_the_keys_it_now_owns(start: Start, host: HttpAgentServer) -> None:
    caller = await start("caller")
    for name in ("r1", "r2", "r3"):
        await start(name, serve="who")
    before = await placement(caller)
    await start("r4", serve="who")
    after = await placement(caller)
    moved = {key for key in KEYS if after[key] != before[key]}
    assert moved and all(after[key] == "r4" for key in moved)
    assert len(moved) < len(KEYS) // 2  # about a quarter
    # The listing counts what each replica was given.
    async with httpx.AsyncClient(base_url=host.url) as http:
        listing = (await http.get("/v1/agents")).json()
    assert listing["replicas"] is True
    [who] = [entry for entry in listing["types"] if entry["type"] == "who"]
    placed = {entry["name"]: entry["agent_ids"] for entry in who["replicas"]}
    assert placed["r4"] == len(moved)
    assert sum(placed.values()) == len(KEYS) + len(moved)  # a moved key counts where it was, and where it is


async def test_a_killed_replica_fails_its_calls_and_its_keys_move_to_the_others(
    start: Start, host: HttpAgentServer
) -> None:
    caller = await start("caller")
    await start("r1", serve="who")
    await start("r2", serve="who")
    async with spawn("replica", host.url, "who", "doomed") as doomed:
        await doomed.expect("READY")
        before = await placement(caller)
        its_keys = [key for key, name in before.items() if name == "doomed"]
        assert its_keys
        held = [
            asyncio.ensure_future(caller.send_message(Text("hold"), AgentId("who", key)))
            for key in its_keys[:5]
        ]
        for _ in held:
            await doomed.expect("holding ")
        doomed.proc.kill()
        for call in held:
            with pytest.raises(WorkerDisconnectedError):
                await bounded(call, 5)
    after = await placement(caller)
    assert {after[key] for key in its_keys} <= {"r1", "r2"}
    assert {key: name for key, name in after.items() if key not in its_keys} == {
        key: name for key, name in before.items() if key not in its_keys
    }


async def test_an_event_reaches_each_agent_id_once(start: Start) -> None:
    inbox: Inbox = asyncio.Queue()
    replicas = []
    for name in ("r1", "r2", "r3"):
        worker = await start(name)
        await worker.register_factory("rec", lambda: Recorder(inbox))
        # Each replica adds the same subscription: one logical subscription, not a conflict.
        await worker.add_subscription(TypeSubscription("news", "rec"))
        replicas.append(worker)
    with pytest.raises(SubscriptionError, match="already exists"):  # a true duplicate is refused
        await bounded(replicas[0].add_subscription(TypeSubscription("news", "rec")))
    publisher = await start("publisher")
    sources = [f"s{i}" for i in range(30)]
    for source in sources:
        await publisher.publish_message(Text(source), TopicId("news", source))
    received = [await bounded(inbox.get()) for _ in sources]
    # A call to each replica reaches it after every copy the host queued for it before.
    for worker, name in zip(replicas, ("r1", "r2", "r3"), strict=True):
        await worker.register_agent_instance(Replica(name), AgentId("flush", name))
    assert await placement(publisher, ["r1", "r2", "r3"], "flush") == {"r1": "r1", "r2": "r2", "r3": "r3"}
    assert inbox.empty()
    assert sorted(agent_id.key for agent_id, _, _ in received) == sorted(sources)
    assert len({agent_id for agent_id, _, _ in received}) == len(sources)


async def test_an_instance_is_pinned_to_its_worker(start: Start) -> None:
    caller = await start("caller")
    first, second, third = await start("first"), await start("second"), await start("third")
    await first.register_agent_instance(Replica("first"), AgentId("pinned", "a"))
    await second.register_agent_instance(Replica("second"), AgentId("pinned", "b"))
    for _ in range(5):
        assert await placement(caller, ["a", "b"], "pinned") == {"a": "first", "b": "second"}
    with pytest.raises(AgentTypeConflictError, match="already registered by worker"):
        await bounded(third.register_agent_instance(Replica("third"), AgentId("pinned", "a")))
    assert await placement(caller, ["a"], "pinned") == {"a": "first"}
    # The refused worker kept nothing: it can pin another id of the type.
    await third.register_agent_instance(Replica("third"), AgentId("pinned", "c"))
    assert await placement(caller, ["c"], "pinned") == {"c": "third"}


async def test_a_replica_reaches_its_own_type_through_placement(start: Start) -> None:
    r1, r2 = await start("r1", serve="who"), await start("r2", serve="who")
    owner = (await placement(r1, ["x"]))["x"]
    other = r2 if owner == "r1" else r1
    assert (await placement(other, ["x"]))["x"] == owner  # no local shortcut to the wrong instance
    metadata = await bounded(other.agent_metadata(AgentId("who", "x")))
    assert metadata["type"] == "who" and metadata["key"] == "x"
    # Its state is read from the instance the calls reached, on the other worker.
    assert await bounded(other.agent_save_state(AgentId("who", "x"))) == {"name": owner}


async def test_a_round_robin_team_with_two_replicas_per_participant(
    start: Start, host: HttpAgentServer
) -> None:
    from .test_agentchat import assert_same, round_robin, stream

    expected = await stream(round_robin(None), "Start.")
    runner, helper = await start("runner"), await start("helper")
    for _ in range(6):  # six teams: some participant surely lands on the helper
        team = round_robin(runner)
        twin = round_robin(helper)
        # The twin registers the same participant types (team ids are random): AgentChat's
        # own registration, minus the group chat manager, which must stay with the runner.
        for name in ("_team_id", "_group_topic_type", "_output_topic_type", "_participant_topic_types"):
            setattr(twin, name, getattr(team, name))
        await register_participants(twin, helper)
        got = await bounded(stream(team, "Start."))
        assert_same(expected, got)
    async with httpx.AsyncClient(base_url=host.url) as http:
        types = (await http.get("/v1/agents")).json()["types"]
    routed = Counter[str]()
    for entry in types:
        if entry["type"].startswith(("writer", "critic")):
            routed.update({replica["name"]: replica["calls"] for replica in entry["replicas"]})
    assert routed.get("helper", 0) > 0 and routed.get("runner", 0) > 0


async def register_participants(team: Any, runtime: HttpWorkerAgentRuntime) -> None:
    """The participant part of AgentChat 0.7's ``BaseGroupChat._init``."""
    from autogen_agentchat.teams._group_chat._chat_agent_container import ChatAgentContainer

    for participant, agent_type in zip(team._participants, team._participant_topic_types, strict=True):
        factory = team._create_participant_factory(
            team._group_topic_type, team._output_topic_type, participant, team._message_factory
        )
        await ChatAgentContainer.register(runtime, type=agent_type, factory=factory)
        await runtime.add_subscription(TypeSubscription(topic_type=agent_type, agent_type=agent_type))
        await runtime.add_subscription(
            TypeSubscription(topic_type=team._group_topic_type, agent_type=agent_type)
        )
