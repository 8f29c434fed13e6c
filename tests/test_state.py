"""Agent state and metadata over a real host, and parity with the in-process runtime."""

from __future__ import annotations

import asyncio
from collections import Counter as Multiset
from collections.abc import Mapping
from typing import Any

import pytest
from autogen_core import (
    AgentId,
    AgentRuntime,
    DefaultTopicId,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    TopicId,
    TypeSubscription,
    message_handler,
)

from autogen_http_runtime import AgentNotFoundError, RemoteAgentError

from .conftest import WorkerFactory
from .utils import Ping, Text, bounded


class Counter(RoutedAgent):
    """Adds each Ping to a running total and answers with the total; the total is its state."""

    def __init__(self) -> None:
        super().__init__("counts pings")
        self.total = 0

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        self.total += message.n
        return Ping(self.total)

    async def save_state(self) -> Mapping[str, Any]:
        return {"total": self.total}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.total = int(state["total"])


async def _check_state_calls(runtime: AgentRuntime) -> None:
    """The state and metadata calls, made through ``runtime`` for the 'counter' agent type."""
    counter = AgentId("counter", "k")
    assert await bounded(runtime.send_message(Ping(5), counter)) == Ping(5)
    assert await bounded(runtime.agent_save_state(counter)) == {"total": 5}

    await bounded(runtime.agent_load_state(counter, {"total": 40}))
    assert await bounded(runtime.send_message(Ping(2), counter)) == Ping(42)
    assert await bounded(runtime.agent_save_state(counter)) == {"total": 42}

    assert dict(await bounded(runtime.agent_metadata(counter))) == {
        "type": "counter",
        "key": "k",
        "description": "counts pings",
    }
    # An agent not created yet is created on demand, as on the in-process runtime.
    assert await bounded(runtime.agent_save_state(AgentId("counter", "fresh"))) == {"total": 0}


async def test_agent_state_of_agent_on_another_worker(make_worker: WorkerFactory) -> None:
    serving, calling = await make_worker(), await make_worker()
    await Counter.register(serving, "counter", Counter)
    await _check_state_calls(calling)
    # The calls reached the serving worker's agent, not a copy.
    agent = await serving.try_get_underlying_agent_instance(AgentId("counter", "k"), Counter)
    assert agent.total == 42


async def test_agent_state_of_agent_on_own_worker(make_worker: WorkerFactory) -> None:
    worker = await make_worker()
    await Counter.register(worker, "counter", Counter)
    await _check_state_calls(worker)


async def test_state_calls_for_unknown_type_are_lookup_errors(make_worker: WorkerFactory) -> None:
    worker = await make_worker()
    nobody = AgentId("nobody", "k")
    for call in (
        worker.agent_save_state(nobody),
        worker.agent_load_state(nobody, {"total": 1}),
        worker.agent_metadata(nobody),
    ):
        with pytest.raises(LookupError) as caught:
            await bounded(call)
        assert isinstance(caught.value, AgentNotFoundError)
        assert "nobody" in str(caught.value)


async def test_remote_load_state_failure_reaches_caller(make_worker: WorkerFactory) -> None:
    serving, calling = await make_worker(), await make_worker()
    await Counter.register(serving, "counter", Counter)
    with pytest.raises(RemoteAgentError) as caught:
        await bounded(calling.agent_load_state(AgentId("counter", "k"), {"total": "not a number"}))
    assert caught.value.remote_type == "ValueError"
    assert "not a number" in caught.value.remote_message
    # The agent's state is unchanged and the worker keeps serving.
    assert await bounded(calling.agent_save_state(AgentId("counter", "k"))) == {"total": 0}


async def test_save_and_load_state_cover_own_agents(make_worker: WorkerFactory) -> None:
    first, second = await make_worker(), await make_worker()
    await Counter.register(first, "counter", Counter)
    await Counter.register(second, "tally", Counter)
    await bounded(second.send_message(Ping(1), AgentId("counter", "k1")))
    await bounded(second.send_message(Ping(2), AgentId("counter", "k2")))
    await bounded(first.send_message(Ping(7), AgentId("tally", "t1")))

    assert await bounded(first.save_state()) == {"counter/k1": {"total": 1}, "counter/k2": {"total": 2}}
    assert await bounded(second.save_state()) == {"tally/t1": {"total": 7}}

    # Entries for agent types this worker does not serve are ignored, as in-process.
    await bounded(
        first.load_state(
            {"counter/k1": {"total": 10}, "counter/k3": {"total": 30}, "tally/t1": {"total": 99}}
        )
    )
    assert await bounded(first.save_state()) == {
        "counter/k1": {"total": 10},
        "counter/k2": {"total": 2},
        "counter/k3": {"total": 30},
    }
    assert await bounded(second.agent_save_state(AgentId("tally", "t1"))) == {"total": 7}
    assert await bounded(second.send_message(Ping(1), AgentId("counter", "k3"))) == Ping(31)


# -- parity with SingleThreadedAgentRuntime ----------------------------------------------

#: What an agent saw of one published message: (recipient, message, topic, sender).
Delivery = tuple[str, str, tuple[str, str], str | None]


class Journal:
    """The published messages agents received, and a way to wait for the sentinel ones."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.sentinels: asyncio.Queue[None] = asyncio.Queue()

    def record(self, agent_id: AgentId, message: Text, ctx: MessageContext) -> None:
        assert ctx.topic_id is not None
        sender = None if ctx.sender is None else str(ctx.sender)
        topic = (ctx.topic_id.type, ctx.topic_id.source)
        self.deliveries.append((str(agent_id), repr(message), topic, sender))
        if message == END:
            self.sentinels.put_nowait(None)


END = Text("end")


class Doubler(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("doubles pings")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        return Ping(message.n * 2)

    async def save_state(self) -> Mapping[str, Any]:
        return {}


class Accumulator(RoutedAgent):
    """Adds the doubled Ping (asked of 'doubler') to its total, announces it, answers with it."""

    def __init__(self, journal: Journal) -> None:
        super().__init__("accumulates doubled pings")
        self.journal = journal
        self.total = 0

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        doubled = await self.send_message(Ping(message.n), AgentId("doubler", "default"))
        assert isinstance(doubled, Ping)
        self.total += doubled.n
        await self.publish_message(Text(f"{self.id.key}={self.total}"), DefaultTopicId("announce"))
        return Ping(self.total)

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        if not ctx.is_rpc:
            self.journal.record(self.id, message, ctx)

    async def save_state(self) -> Mapping[str, Any]:
        return {"total": self.total}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.total = int(state["total"])


class Tally(RoutedAgent):
    """Keeps every announcement it hears, in order, as its state."""

    def __init__(self, journal: Journal) -> None:
        super().__init__("keeps announcements")
        self.journal = journal
        self.seen: list[str] = []

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        self.seen.append(message.content)
        self.journal.record(self.id, message, ctx)

    async def save_state(self) -> Mapping[str, Any]:
        return {"seen": list(self.seen)}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.seen = list(state["seen"])


async def _scenario(
    accumulating: AgentRuntime, tallying: AgentRuntime, journal: Journal
) -> tuple[list[Any], Mapping[str, Any]]:
    """Register the agents, then drive them from ``tallying``; returns the replies and a remote state."""
    await Doubler.register(tallying, "doubler", Doubler)
    await Accumulator.register(accumulating, "acc", lambda: Accumulator(journal))
    await Tally.register(tallying, "tally", lambda: Tally(journal))
    await accumulating.add_subscription(TypeSubscription("announce", "acc"))
    await tallying.add_subscription(TypeSubscription("announce", "tally"))

    replies: list[Any] = []
    for key, n in [("a", 1), ("b", 2), ("a", 3)]:
        replies.append(await bounded(tallying.send_message(Ping(n), AgentId("acc", key))))
    replies.append(await bounded(tallying.send_message(Text("rpc"), AgentId("acc", "a"))))
    await tallying.publish_message(Text("hello"), TopicId("announce", "a"))
    await tallying.publish_message(END, TopicId("announce", "end"))
    return replies, await bounded(tallying.agent_save_state(AgentId("acc", "a")))


async def test_same_results_as_in_process_runtime(make_worker: WorkerFactory) -> None:
    local_journal = Journal()
    local = SingleThreadedAgentRuntime()
    local.start()
    try:
        local_replies, local_remote_state = await _scenario(local, local, local_journal)
    finally:
        await bounded(local.stop_when_idle())
    local_state = await bounded(local.save_state())

    journal = Journal()
    accumulating, tallying = await make_worker(), await make_worker()
    replies, remote_state = await _scenario(accumulating, tallying, journal)
    # Both agents subscribed to 'announce' get the sentinel; everything published before it
    # has then been delivered (one publisher's messages stay in order).
    for _ in range(2):
        await bounded(journal.sentinels.get())
    state = {**await bounded(accumulating.save_state()), **await bounded(tallying.save_state())}

    assert local_replies == [Ping(2), Ping(4), Ping(8), None]
    assert replies == local_replies
    assert remote_state == local_remote_state == {"total": 8}
    assert Multiset(journal.deliveries) == Multiset(local_journal.deliveries)
    assert len(local_journal.deliveries) == 7
    # The sender of an announcement never receives it.
    assert all(recipient != sender for recipient, _, _, sender in local_journal.deliveries)
    assert state == local_state
    assert local_state["tally/a"] == {"seen": ["a=2", "a=8", "hello"]}
