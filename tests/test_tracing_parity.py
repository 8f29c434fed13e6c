"""Our spans against autogen-core's, side by side: one call with a reply, one publish.

The same scenario runs on autogen-core's ``SingleThreadedAgentRuntime`` and on a real host
with two ``HttpWorkerAgentRuntime`` workers, each with an in-memory span exporter. Ids and
timestamps are dropped; what remains of each span must be the same: its name, its kind, its
attributes and which span each of its links points to.

What autogen-core 0.7.5 emits (``_single_threaded_agent_runtime.py`` through
``TraceHelper.trace_block``; ``test_autogen_core_spans_are_as_described`` pins it):

=============================  ========  =====================  ===========================
span                           kind      links to               parent
=============================  ========  =====================  ===========================
``autogen create <agent>``     PRODUCER  nothing                the caller's current span
``autogen send <agent>``       PRODUCER  the ``create``         the runtime loop's (none)
``autogen process <agent>``    CONSUMER  the ``create``         the ``send``
``autogen ack <sender>``       CONSUMER  the ``send``           the runtime loop's (none)
``autogen create <topic>``     PRODUCER  nothing                the publisher's current span
``autogen publish <topic>``    PRODUCER  the ``create``         the runtime loop's (none)
``autogen process <agent>``    CONSUMER  the ``create``         the ``publish``
=============================  ========  =====================  ===========================

Agents are named ``type.(key)-A`` and topics ``type.(source)-T``. Every span has
``messaging.operation`` (``create``; ``publish`` for send and publish; ``process``;
``receive`` for ack) and ``messaging.destination`` (the name's last part); the two
``create`` spans add ``messaging.message.type``. ``process`` adds ``sender_agent_type``,
``sender_agent_class`` (with a sender), ``recipient_agent_type``, ``recipient_agent_class``,
``message_context`` (JSON: sender, topic_id, is_rpc, message_id) and ``message`` (the
message as JSON text); ``ack`` the same but ``message_context``, the sender being the agent
that answered and the recipient the one that called.

One attribute is out of reach for a worker: the class of an agent living in another process
(``sender_agent_class``, the caller's class on ``process`` and the answering agent's on
``ack``), which the wire does not carry. It is left out of the comparison.

Parents cannot match and are not compared: autogen-core starts ``send``, ``publish`` and
``ack`` in its message loop, outside any span, while across processes we keep the caller's
trace whole: each remote ``process`` span is a child of the ``create`` span on the other
worker (and, as autogen-core's, linked to it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from typing import Any

from autogen_core import AgentId, MessageContext, SingleThreadedAgentRuntime, TopicId, TypeSubscription
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from .conftest import WorkerFactory
from .test_tracing import tracing
from .utils import Recorder, Text, Upper, bounded

CALLER = AgentId("client", "default")
CALLED = AgentId("upper", "k")
TOPIC = TopicId("news", "src")
SUBSCRIBER = AgentId("listener", "src")

#: The class of an agent in another process: autogen-core reads it off the agent instance.
REMOTE_CLASS = "sender_agent_class"

NOT_ONE_OF_THESE = "<a span not in this run>"

Inbox = asyncio.Queue[tuple[AgentId, Any, MessageContext]]
Row = tuple[str, str, tuple[tuple[str, Any], ...], tuple[str, ...]]


def shape(spans: Iterable[ReadableSpan], *, drop: frozenset[str] = frozenset()) -> list[Row]:
    """Each runtime span as (name, kind, attributes, names of the spans it links to), sorted."""
    spans = list(spans)
    names = {span.context.span_id: span.name for span in spans if span.context is not None}
    rows: list[Row] = []
    for span in spans:
        if not span.name.startswith("autogen "):
            continue
        attributes = {key: value for key, value in (span.attributes or {}).items() if key not in drop}
        links = tuple(sorted(names.get(link.context.span_id, NOT_ONE_OF_THESE) for link in span.links))
        rows.append((span.name, span.kind.name, tuple(sorted(attributes.items())), links))
    return sorted(rows)


def named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    matching = [span for span in spans if span.name == name]
    assert len(matching) == 1, (name, sorted(span.name for span in spans))
    return matching[0]


# -- autogen-core ---------------------------------------------------------------------


async def core_spans(scenario: str) -> tuple[ReadableSpan, ...]:
    """The spans of ``scenario`` ("send" or "publish") on autogen-core's in-process runtime."""
    provider, exporter, _ = tracing()
    runtime = SingleThreadedAgentRuntime(tracer_provider=provider)
    inbox: Inbox = asyncio.Queue()
    await Recorder.register(runtime, CALLER.type, lambda: Recorder(inbox))
    await Upper.register(runtime, CALLED.type, Upper)
    await Recorder.register(runtime, SUBSCRIBER.type, lambda: Recorder(inbox))
    await runtime.add_subscription(TypeSubscription(TOPIC.type, SUBSCRIBER.type))
    runtime.start()
    try:
        await run(scenario, runtime, provider, inbox)
    finally:
        await bounded(runtime.stop_when_idle())
    return exporter.get_finished_spans()


async def run(scenario: str, runtime: Any, provider: TracerProvider, inbox: Inbox) -> None:
    with provider.get_tracer("test").start_as_current_span(f"test {scenario}"):
        if scenario == "send":
            reply = await bounded(runtime.send_message(Text("hi"), CALLED, sender=CALLER, message_id="m1"))
            assert reply == Text("HI")
        else:
            await bounded(runtime.publish_message(Text("ev"), TOPIC, sender=CALLER, message_id="e1"))
    if scenario == "publish":
        recipient, message, _ = await bounded(inbox.get())
        assert (recipient, message) == (SUBSCRIBER, Text("ev"))


# -- ours -----------------------------------------------------------------------------


async def http_spans(scenario: str, make_worker: WorkerFactory) -> tuple[ReadableSpan, ...]:
    """The same on a real host: the caller on one worker, the called agents on another."""
    provider, exporter, ended = tracing()
    calling = await make_worker(tracer_provider=provider)
    serving = await make_worker(tracer_provider=provider)
    inbox: Inbox = asyncio.Queue()
    await Recorder.register(calling, CALLER.type, lambda: Recorder(inbox))
    await Upper.register(serving, CALLED.type, Upper)
    await Recorder.register(serving, SUBSCRIBER.type, lambda: Recorder(inbox))
    await serving.add_subscription(TypeSubscription(TOPIC.type, SUBSCRIBER.type))
    await run(scenario, calling, provider, inbox)
    if scenario == "publish":
        # The subscriber's span ends just after its handler returns: wait for it to end.
        await ended.wait_for(f"autogen process {SUBSCRIBER.type}.({SUBSCRIBER.key})-A")
    return exporter.get_finished_spans()


def assert_remote_parents(spans: Sequence[ReadableSpan]) -> None:
    """Each ``process`` span continues the trace of the ``create`` span it links to."""
    by_id = {span.context.span_id: span for span in spans if span.context is not None}
    processes = [span for span in spans if span.name.startswith("autogen process ")]
    assert processes
    for process in processes:
        assert process.parent is not None and process.parent.is_remote, process.name
        parent = by_id[process.parent.span_id]
        assert parent.name.startswith("autogen create "), (process.name, parent.name)
        assert [link.context.span_id for link in process.links] == [process.parent.span_id]


# -- the tests ------------------------------------------------------------------------


async def test_autogen_core_spans_are_as_described() -> None:
    """What the comparison holds us to, spelled out (this module's docstring): if an upgrade
    of autogen-core changes it, this fails first."""
    send = await core_spans("send")
    called, caller, topic = "upper.(k)-A", "client.(default)-A", "news.(src)-T"
    context = {"sender": "client/default", "topic_id": "None", "is_rpc": True, "message_id": "m1"}
    assert shape(send) == sorted(
        [
            (
                f"autogen ack {caller}",
                "CONSUMER",
                tuple(
                    sorted(
                        {
                            "messaging.operation": "receive",
                            "messaging.destination": caller,
                            "sender_agent_type": "upper",
                            "sender_agent_class": "Upper",
                            "recipient_agent_type": "client",
                            "recipient_agent_class": "Recorder",
                            "message": '{"content": "HI"}',
                        }.items()
                    )
                ),
                (f"autogen send {called}",),
            ),
            (
                f"autogen create {called}",
                "PRODUCER",
                tuple(
                    sorted(
                        {
                            "messaging.operation": "create",
                            "messaging.destination": called,
                            "messaging.message.type": "Text",
                        }.items()
                    )
                ),
                (),
            ),
            (
                f"autogen process {called}",
                "CONSUMER",
                tuple(
                    sorted(
                        {
                            "messaging.operation": "process",
                            "messaging.destination": called,
                            "sender_agent_type": "client",
                            "sender_agent_class": "Recorder",
                            "recipient_agent_type": "upper",
                            "recipient_agent_class": "Upper",
                            "message_context": json.dumps(context),
                            "message": '{"content": "hi"}',
                        }.items()
                    )
                ),
                (f"autogen create {called}",),
            ),
            (
                f"autogen send {called}",
                "PRODUCER",
                (("messaging.destination", called), ("messaging.operation", "publish")),
                (f"autogen create {called}",),
            ),
        ]
    )
    assert named(send, f"autogen process {called}").parent == named(send, f"autogen send {called}").context
    assert named(send, f"autogen create {called}").parent is not None
    assert named(send, f"autogen send {called}").parent is None
    assert named(send, f"autogen ack {caller}").parent is None

    publish = await core_spans("publish")
    context = {"sender": "client/default", "topic_id": "news/src", "is_rpc": False, "message_id": "e1"}
    listener = "listener.(src)-A"
    assert shape(publish) == sorted(
        [
            (
                f"autogen create {topic}",
                "PRODUCER",
                tuple(
                    sorted(
                        {
                            "messaging.operation": "create",
                            "messaging.destination": topic,
                            "messaging.message.type": "Text",
                        }.items()
                    )
                ),
                (),
            ),
            (
                f"autogen process {listener}",
                "CONSUMER",
                tuple(
                    sorted(
                        {
                            "messaging.operation": "process",
                            "messaging.destination": listener,
                            "sender_agent_type": "client",
                            "sender_agent_class": "Recorder",
                            "recipient_agent_type": "listener",
                            "recipient_agent_class": "Recorder",
                            "message_context": json.dumps(context),
                            "message": '{"content": "ev"}',
                        }.items()
                    )
                ),
                (f"autogen create {topic}",),
            ),
            (
                f"autogen publish {topic}",
                "PRODUCER",
                (("messaging.destination", topic), ("messaging.operation", "publish")),
                (f"autogen create {topic}",),
            ),
        ]
    )
    process = named(publish, f"autogen process {listener}")
    assert process.parent == named(publish, f"autogen publish {topic}").context


async def test_a_call_makes_the_spans_autogen_core_makes(make_worker: WorkerFactory) -> None:
    ours = await http_spans("send", make_worker)
    theirs = await core_spans("send")
    assert shape(ours, drop=frozenset({REMOTE_CLASS})) == shape(theirs, drop=frozenset({REMOTE_CLASS}))
    assert_remote_parents(ours)


async def test_a_publish_makes_the_spans_autogen_core_makes(make_worker: WorkerFactory) -> None:
    ours = await http_spans("publish", make_worker)
    theirs = await core_spans("publish")
    assert shape(ours, drop=frozenset({REMOTE_CLASS})) == shape(theirs, drop=frozenset({REMOTE_CLASS}))
    assert_remote_parents(ours)
