"""Publish/subscribe over a real host and real WebSockets.

Delivery is asynchronous, so "nothing else arrived" is proven with a sentinel: the host
forwards the frames of one worker in order and a worker runs its events in the order they
arrive, so once a sentinel published after the messages under test has reached its
recipient, every earlier copy for that recipient's worker has been delivered too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from autogen_core import (
    AgentId,
    DefaultTopicId,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
    default_subscription,
    message_handler,
)

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime, SubscriptionError

from .conftest import WorkerFactory
from .utils import Ping, Recorder, Text, bounded, owners, subscriptions

#: Each test that uses ``server`` runs on both WebSocket paths (conftest.py).
BOTH_PATHS = True

Delivery = tuple[AgentId, Any, MessageContext]
Inbox = asyncio.Queue[Delivery]

END = Text("end")


async def until_sentinels(inbox: Inbox, count: int = 1) -> list[Delivery]:
    """Everything ``inbox`` receives up to and including the ``count``-th ``END``."""
    received: list[Delivery] = []
    seen = 0
    while seen < count:
        delivery = await bounded(inbox.get())
        received.append(delivery)
        if delivery[1] == END:
            seen += 1
    return received


async def until_message(inbox: Inbox, last: Any) -> list[Delivery]:
    """Everything ``inbox`` receives up to and including the message ``last``."""
    received: list[Delivery] = []
    while not received or received[-1][1] != last:
        received.append(await bounded(inbox.get()))
    return received


def topic_key(topic: TopicId) -> tuple[str, str]:
    return topic.type, topic.source


def subscription_ids(server: HttpAgentServer) -> set[str]:
    return {subscription.id for subscription in subscriptions(server.service.core)}


async def add_recorder(worker: HttpWorkerAgentRuntime, agent_type: str, inbox: Inbox, *topics: str) -> None:
    await worker.register_factory(agent_type, lambda: Recorder(inbox))
    for topic in topics:
        await bounded(worker.add_subscription(TypeSubscription(topic, agent_type)))


class Speaker(RoutedAgent):
    """On a Ping call, publishes Text('hello') to 'chat'; records the Text events it receives."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__("speaks on chat")
        self.inbox = inbox

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> None:
        await self.publish_message(Text("hello"), TopicId("chat", self.id.key))

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        self.inbox.put_nowait((self.id, message, ctx))


async def test_publish_reaches_every_worker_but_not_the_sender(make_worker: WorkerFactory) -> None:
    own, other, caller = await make_worker(), await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    speaker_inbox: Inbox = asyncio.Queue()
    await own.register_factory("speaker", lambda: Speaker(speaker_inbox))
    await bounded(own.add_subscription(TypeSubscription("chat", "speaker")))
    await add_recorder(own, "near", inbox, "chat")
    await add_recorder(other, "far", inbox, "chat")

    assert await bounded(caller.send_message(Ping(1), AgentId("speaker", "room"))) is None
    # The speaker published before it answered, so the sentinel is routed after 'hello'.
    await caller.publish_message(END, TopicId("chat", "room"))

    received = await until_sentinels(inbox, count=2)
    hellos = {agent_id: ctx for agent_id, message, ctx in received if message == Text("hello")}
    assert len([d for d in received if d[1] == Text("hello")]) == 2
    assert set(hellos) == {AgentId("near", "room"), AgentId("far", "room")}
    for ctx in hellos.values():
        assert ctx.sender == AgentId("speaker", "room")
        assert ctx.topic_id == TopicId("chat", "room")
        assert ctx.is_rpc is False
    assert all(ctx.sender is None for _, message, ctx in received if message == END)

    # The speaker got the sentinel but never its own 'hello'.
    speaker_got = await until_sentinels(speaker_inbox)
    assert [message for _, message, _ in speaker_got] == [END]


async def test_sender_argument_is_excluded_and_reported(make_worker: WorkerFactory) -> None:
    publisher, serving = await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    await add_recorder(serving, "rec_a", inbox, "t")
    await add_recorder(serving, "rec_b", inbox, "t")

    await publisher.publish_message(Text("from a"), TopicId("t", "k"), sender=AgentId("rec_a", "k"))
    await publisher.publish_message(END, TopicId("t", "k"))

    received = await until_sentinels(inbox, count=2)
    firsts = [(agent_id, ctx.sender) for agent_id, message, ctx in received if message == Text("from a")]
    assert firsts == [(AgentId("rec_b", "k"), AgentId("rec_a", "k"))]


async def test_exactly_one_copy_per_recipient_in_publisher_order(make_worker: WorkerFactory) -> None:
    publisher, serving = await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    await add_recorder(publisher, "near", inbox, "numbers")
    await add_recorder(serving, "far", inbox, "numbers")
    # A second subscription matching the same topic for the same agent must not double delivery.
    await bounded(serving.add_subscription(TypePrefixSubscription("num", "far")))

    for n in range(200):
        await publisher.publish_message(Ping(n), TopicId("numbers", "src"))
    await publisher.publish_message(END, TopicId("numbers", "src"))

    received = await until_sentinels(inbox, count=2)
    for agent_type in ("near", "far"):
        numbers = [
            message.n for agent_id, message, _ in received if agent_id.type == agent_type and message != END
        ]
        assert numbers == list(range(200)), agent_type


async def test_type_prefix_subscription(make_worker: WorkerFactory) -> None:
    publisher, serving = await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    await add_recorder(serving, "rec", inbox)
    await bounded(serving.add_subscription(TypePrefixSubscription("events.", "rec")))

    await publisher.publish_message(Text("a"), TopicId("events.a", "s1"))
    await publisher.publish_message(Text("other"), TopicId("other", "s1"))
    await publisher.publish_message(Text("b"), TopicId("events.b", "s2"))
    await publisher.publish_message(END, TopicId("events.end", "s1"))

    received = [(agent_id, message, ctx.topic_id) for agent_id, message, ctx in await until_sentinels(inbox)]
    assert received == [
        (AgentId("rec", "s1"), Text("a"), TopicId("events.a", "s1")),
        (AgentId("rec", "s2"), Text("b"), TopicId("events.b", "s2")),
        (AgentId("rec", "s1"), END, TopicId("events.end", "s1")),
    ]


@default_subscription
class Listener(RoutedAgent):
    """Subscribed to the default topic; records the Text it receives."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__("listens on the default topic")
        self.inbox = inbox

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        self.inbox.put_nowait((self.id, message, ctx))


async def test_default_subscription_and_default_topic(
    make_worker: WorkerFactory, server: HttpAgentServer
) -> None:
    publisher, serving = await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    await Listener.register(serving, "listener", lambda: Listener(inbox))
    assert any(
        (s.kind, s.topic, s.agent_type) == ("type", "default", "listener")
        for s in subscriptions(server.service.core)
    )
    # Outside a handler DefaultTopicId() has the source "default".
    await publisher.publish_message(Text("hi"), DefaultTopicId())
    [(agent_id, message, ctx)] = await until_message(inbox, Text("hi"))
    assert ctx.topic_id is not None
    assert (agent_id, message, topic_key(ctx.topic_id)) == (
        AgentId("listener", "default"),
        Text("hi"),
        ("default", "default"),
    )


class Forwarder(RoutedAgent):
    """Publishes every Text it is sent to ``DefaultTopicId()``, resolved inside the handler."""

    def __init__(self) -> None:
        super().__init__("forwards to the default topic")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        await self.publish_message(message, DefaultTopicId())


async def _default_topic_scenario(
    forwarding: Any, listening: Any, calling: Any, inbox: Inbox
) -> tuple[AgentId, Text, tuple[str, str], AgentId | None]:
    await Forwarder.register(forwarding, "fwd", Forwarder)
    await Listener.register(listening, "listener", lambda: Listener(inbox))
    await calling.send_message(Text("x"), AgentId("fwd", "k42"))
    agent_id, message, ctx = await bounded(inbox.get())
    assert ctx.topic_id is not None
    # Compared as (type, source): the in-process runtime hands over the DefaultTopicId object itself.
    return agent_id, message, topic_key(ctx.topic_id), ctx.sender


async def test_default_topic_inside_handler_matches_in_process_runtime(make_worker: WorkerFactory) -> None:
    local = SingleThreadedAgentRuntime()
    local.start()
    try:
        expected = await bounded(_default_topic_scenario(local, local, local, asyncio.Queue()))
    finally:
        await bounded(local.stop_when_idle())
    assert expected == (
        AgentId("listener", "k42"),
        Text("x"),
        ("default", "k42"),
        AgentId("fwd", "k42"),
    )

    forwarding, listening = await make_worker(), await make_worker()
    got = await bounded(_default_topic_scenario(forwarding, listening, listening, asyncio.Queue()))
    assert got == expected


async def test_subscription_from_another_worker_takes_effect(
    make_worker: WorkerFactory, server: HttpAgentServer
) -> None:
    serving, subscribing = await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    await add_recorder(serving, "rec", inbox)
    await bounded(subscribing.add_subscription(TypeSubscription("news", "rec", id="from-other")))
    assert "from-other" in subscription_ids(server)

    await subscribing.publish_message(Text("headline"), TopicId("news", "k"))
    agent_id, message, ctx = await bounded(inbox.get())
    assert (agent_id, message, ctx.topic_id) == (AgentId("rec", "k"), Text("headline"), TopicId("news", "k"))


async def test_removed_subscription_stops_delivery(
    make_worker: WorkerFactory, server: HttpAgentServer
) -> None:
    publisher, serving, other = await make_worker(), await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    await add_recorder(serving, "rec_a", inbox)
    await add_recorder(serving, "rec_b", inbox)
    await bounded(serving.add_subscription(TypeSubscription("t", "rec_a", id="sub-a")))
    await bounded(serving.add_subscription(TypeSubscription("t", "rec_b", id="sub-b")))

    await publisher.publish_message(Text("before"), TopicId("t", "k"))
    before = {agent_id.type for agent_id, _, _ in [await bounded(inbox.get()), await bounded(inbox.get())]}
    assert before == {"rec_a", "rec_b"}

    # Any worker may remove a subscription, not only the one that added it.
    await bounded(other.remove_subscription("sub-a"))
    assert subscription_ids(server) == {"sub-b"}
    await publisher.publish_message(Text("after"), TopicId("t", "k"))
    await publisher.publish_message(END, TopicId("t", "k"))
    received = await until_sentinels(inbox)
    assert [(agent_id.type, message) for agent_id, message, _ in received] == [
        ("rec_b", Text("after")),
        ("rec_b", END),
    ]

    # The worker that added it can add it again: the host, not the worker, holds subscriptions.
    await bounded(serving.add_subscription(TypeSubscription("t", "rec_a", id="sub-a")))
    await publisher.publish_message(Text("again"), TopicId("t", "k"))
    again = {agent_id.type for agent_id, _, _ in [await bounded(inbox.get()), await bounded(inbox.get())]}
    assert again == {"rec_a", "rec_b"}


class Relay(RoutedAgent):
    """Republishes each Text, with a mark appended, to the topic ``target``."""

    def __init__(self, mark: str, target: str) -> None:
        super().__init__("relays text")
        self.mark = mark
        self.target = target

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        assert ctx.topic_id is not None
        await self.publish_message(
            Text(message.content + self.mark), TopicId(self.target, ctx.topic_id.source)
        )


async def test_cascading_publishes_across_three_workers(make_worker: WorkerFactory) -> None:
    a, b, c = await make_worker(), await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    await b.register_factory("relay_b", lambda: Relay(">b", "stage2"))
    await bounded(b.add_subscription(TypeSubscription("stage1", "relay_b")))
    await c.register_factory("relay_c", lambda: Relay(">c", "stage3"))
    await bounded(c.add_subscription(TypeSubscription("stage2", "relay_c")))
    await add_recorder(a, "sink", inbox, "stage3")

    for n in range(3):
        await a.publish_message(Text(f"start{n}"), TopicId("stage1", f"s{n}"))

    received = [await bounded(inbox.get()) for _ in range(3)]
    by_key = {agent_id.key: (message, ctx.sender, ctx.topic_id) for agent_id, message, ctx in received}
    assert by_key == {
        f"s{n}": (Text(f"start{n}>b>c"), AgentId("relay_c", f"s{n}"), TopicId("stage3", f"s{n}"))
        for n in range(3)
    }


async def test_duplicate_subscriptions_are_errors(
    make_worker: WorkerFactory, server: HttpAgentServer
) -> None:
    serving, other = await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    await add_recorder(serving, "rec", inbox)
    await bounded(serving.add_subscription(TypeSubscription("t1", "rec", id="dup")))

    duplicates = [
        (serving, TypeSubscription("t2", "rec", id="dup")),  # same id, same worker
        (other, TypeSubscription("t2", "rec", id="dup")),  # same id, another worker
        (other, TypePrefixSubscription("t", "rec", id="dup")),  # same id, another kind
        (other, TypeSubscription("t1", "rec")),  # same match, new id (as on the in-process runtime)
    ]
    for worker, duplicate in duplicates:
        with pytest.raises(ValueError, match="already exists") as caught:
            await bounded(worker.add_subscription(duplicate))
        assert isinstance(caught.value, SubscriptionError), duplicate

    # The original is untouched and the rejected ones left nothing behind.
    assert subscription_ids(server) == {"dup"}
    for topic in ("t2", "tx", "t1"):
        await other.publish_message(Text(topic), TopicId(topic, "k"))
    await other.publish_message(END, TopicId("t1", "k"))
    received = await until_sentinels(inbox)
    assert [message for _, message, _ in received] == [Text("t1"), END]
    await bounded(other.add_subscription(TypeSubscription("t2", "rec", id="dup-2")))
    assert subscription_ids(server) == {"dup", "dup-2"}


async def test_remove_unknown_subscription_is_value_error(make_worker: WorkerFactory) -> None:
    running = await make_worker()
    not_started = await make_worker(start=False)
    for worker in (running, not_started):
        with pytest.raises(ValueError, match="does not exist") as caught:
            await bounded(worker.remove_subscription("no-such-id"))
        assert isinstance(caught.value, SubscriptionError)


async def test_register_instance_twice_for_one_type(make_worker: WorkerFactory) -> None:
    serving, publisher = await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    # The second call re-adds the type's direct-message subscription, which register_instance
    # expects to fail with ValueError and ignores.
    await bounded(Recorder(inbox).register_instance(serving, AgentId("rec", "a")))
    await bounded(Recorder(inbox).register_instance(serving, AgentId("rec", "b")))

    await publisher.publish_message(Text("to b"), TopicId("b", "b"))
    await publisher.publish_message(Text("to a"), TopicId("a", "a"))
    await publisher.publish_message(Text("direct"), TopicId("rec:", "b"))
    received = [
        (agent_id, message) for agent_id, message, _ in [await bounded(inbox.get()) for _ in range(3)]
    ]
    assert received == [
        (AgentId("rec", "b"), Text("to b")),
        (AgentId("rec", "a"), Text("to a")),
        (AgentId("rec", "b"), Text("direct")),
    ]


class Gate(RoutedAgent):
    """'wait' blocks until an 'open' arrives: only possible if handlers run concurrently."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__("waits for open")
        self.inbox = inbox
        self.opened = asyncio.Event()

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        if message.content == "wait":
            await bounded(self.opened.wait())
        else:
            self.opened.set()
        self.inbox.put_nowait((self.id, message, ctx))


async def test_handlers_run_concurrently(make_worker: WorkerFactory) -> None:
    publisher, serving = await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    await serving.register_factory("gate", lambda: Gate(inbox))
    await bounded(serving.add_subscription(TypeSubscription("gate", "gate")))

    await publisher.publish_message(Text("wait"), TopicId("gate", "k"))
    await publisher.publish_message(Text("open"), TopicId("gate", "k"))
    order = [message.content for _, message, _ in [await bounded(inbox.get()) for _ in range(2)]]
    assert order == ["open", "wait"]


async def test_subscription_added_before_start_is_sent_on_start(
    make_worker: WorkerFactory, server: HttpAgentServer
) -> None:
    publisher = await make_worker()
    serving = await make_worker(start=False)
    inbox: Inbox = asyncio.Queue()
    await add_recorder(serving, "rec", inbox, "early")
    assert "rec" not in owners(server.service.core)
    assert not subscription_ids(server)

    await bounded(serving.start())
    assert "rec" in owners(server.service.core)
    assert len(subscription_ids(server)) == 1
    await publisher.publish_message(Text("hi"), TopicId("early", "k"))
    agent_id, message, _ = await bounded(inbox.get())
    assert (agent_id, message) == (AgentId("rec", "k"), Text("hi"))


@contextmanager
def host_disconnects() -> Iterator[asyncio.Queue[str]]:
    """Yield a queue that receives the worker id each time the host forgets a worker."""
    forgotten: asyncio.Queue[str] = asyncio.Queue()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.msg.startswith("Worker %s disconnected"):
                forgotten.put_nowait(str(record.args[0]))  # type: ignore[index]

    logger = logging.getLogger("autogen_http_runtime.host")
    handler, level = Watch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield forgotten
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_stopped_worker_leaves_nothing_in_the_host(
    make_worker: WorkerFactory, server: HttpAgentServer
) -> None:
    staying, leaving = await make_worker(), await make_worker()
    inbox: Inbox = asyncio.Queue()
    await add_recorder(staying, "stays", inbox)
    await bounded(staying.add_subscription(TypeSubscription("t", "stays", id="kept")))
    await add_recorder(leaving, "leaves", inbox)
    await bounded(leaving.add_subscription(TypeSubscription("t", "leaves", id="gone-1")))
    await bounded(leaving.add_subscription(TypePrefixSubscription("p", "leaves", id="gone-2")))
    assert set(owners(server.service.core)) == {"stays", "leaves"}

    with host_disconnects() as forgotten:
        await bounded(leaving.stop())
        await bounded(forgotten.get())
    assert set(owners(server.service.core)) == {"stays"}
    assert subscription_ids(server) == {"kept"}

    # Publishing to the topic still works and reaches only the remaining agent.
    await staying.publish_message(Text("still here"), TopicId("t", "k"))
    agent_id, message, _ = await bounded(inbox.get())
    assert (agent_id, message) == (AgentId("stays", "k"), Text("still here"))


async def test_publish_to_an_empty_topic_source_fails_at_once(make_worker: WorkerFactory) -> None:
    worker = await make_worker()
    with pytest.raises(ValueError, match="must not be empty"):
        await bounded(worker.publish_message(Text("x"), TopicId("news", "")))
