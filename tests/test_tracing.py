"""OpenTelemetry tracing across workers over a real host: one call, one trace."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from autogen_core import AgentId, MessageContext, RoutedAgent, TopicId, TypeSubscription, message_handler
from autogen_core._telemetry import MessageRuntimeTracingConfig
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from .conftest import WorkerFactory
from .utils import Recorder, Text, Upper, bounded

NAMES = MessageRuntimeTracingConfig("Worker Runtime")


class EndedSpans(SpanProcessor):
    """Reports the name of every span as it ends, so a test can wait for one without sleeping."""

    def __init__(self) -> None:
        self.names: asyncio.Queue[str] = asyncio.Queue()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        self.names.put_nowait(span.name)

    async def wait_for(self, name: str) -> None:
        while await bounded(self.names.get()) != name:
            pass


def tracing() -> tuple[TracerProvider, InMemorySpanExporter, EndedSpans]:
    exporter = InMemorySpanExporter()
    ended = EndedSpans()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(ended)
    return provider, exporter, ended


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    matching = [span for span in spans if span.name == name]
    assert len(matching) == 1, (name, [span.name for span in spans])
    return matching[0]


def trace_ids(spans: tuple[ReadableSpan, ...]) -> set[int]:
    return {span.context.trace_id for span in spans if span.context is not None}


async def test_call_across_workers_is_one_trace(make_worker: WorkerFactory) -> None:
    provider, exporter, _ = tracing()
    serving = await make_worker(tracer_provider=provider)
    calling = await make_worker(tracer_provider=provider)
    await Upper.register(serving, "upper", Upper)
    recipient = AgentId("upper", "k")

    with provider.get_tracer("test").start_as_current_span("test call") as root:
        assert await bounded(calling.send_message(Text("traced"), recipient)) == Text("TRACED")

    spans = exporter.get_finished_spans()
    trace_id = root.get_span_context().trace_id
    assert trace_ids(spans) == {trace_id}

    create = by_name(spans, NAMES.get_span_name("create", recipient))
    process = by_name(spans, NAMES.get_span_name("process", recipient))
    assert create.name == "autogen create upper.(k)-A"
    assert process.name == "autogen process upper.(k)-A"
    assert create.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert create.parent is not None and create.parent.span_id == root.get_span_context().span_id
    # The handler's span on the serving worker continues the caller's span: a remote parent.
    assert process.parent is not None and create.context is not None
    assert process.parent.span_id == create.context.span_id
    assert process.parent.trace_id == trace_id
    assert process.parent.is_remote
    assert process.attributes is not None
    assert process.attributes["recipient_agent_class"] == "Upper"
    # ... and, as autogen-core's, links to it.
    assert [link.context.span_id for link in process.links] == [create.context.span_id]


async def test_publish_across_workers_is_one_trace(make_worker: WorkerFactory) -> None:
    provider, exporter, ended = tracing()
    inbox: asyncio.Queue[tuple[AgentId, Any, MessageContext]] = asyncio.Queue()
    subscriber = await make_worker(tracer_provider=provider)
    publisher = await make_worker(tracer_provider=provider)
    await subscriber.register_factory("rec", lambda: Recorder(inbox))
    await subscriber.add_subscription(TypeSubscription("news", "rec"))
    topic = TopicId("news", "src")
    recipient = AgentId("rec", "src")

    with provider.get_tracer("test").start_as_current_span("test publish") as root:
        await bounded(publisher.publish_message(Text("event"), topic))
    _, message, _ = await bounded(inbox.get())
    assert message == Text("event")
    process_name = NAMES.get_span_name("process", recipient)
    await ended.wait_for(process_name)

    spans = exporter.get_finished_spans()
    trace_id = root.get_span_context().trace_id
    assert trace_ids(spans) == {trace_id}
    create = by_name(spans, NAMES.get_span_name("create", topic))
    process = by_name(spans, process_name)
    assert create.name == "autogen create news.(src)-T"
    assert process.name == "autogen process rec.(src)-A"
    assert create.parent is not None and create.parent.span_id == root.get_span_context().span_id
    assert process.parent is not None and create.context is not None
    assert process.parent.span_id == create.context.span_id
    assert process.parent.is_remote


class Relay(RoutedAgent):
    """Answers by first calling the 'upper' agent, from inside its handler."""

    def __init__(self) -> None:
        super().__init__("relays to upper")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        inner = await self.send_message(Text(message.content + "!"), AgentId("upper", "default"))
        assert isinstance(inner, Text)
        return Text("relayed " + inner.content)


async def test_nested_call_from_a_handler_stays_in_the_trace(make_worker: WorkerFactory) -> None:
    provider, exporter, _ = tracing()
    front = await make_worker(tracer_provider=provider)
    back = await make_worker(tracer_provider=provider)
    calling = await make_worker(tracer_provider=provider)
    await Relay.register(front, "relay", Relay)
    await Upper.register(back, "upper", Upper)

    with provider.get_tracer("test").start_as_current_span("test nested") as root:
        assert await bounded(calling.send_message(Text("x"), AgentId("relay", "default"))) == Text(
            "relayed X!"
        )

    spans = exporter.get_finished_spans()
    assert trace_ids(spans) == {root.get_span_context().trace_id}
    relay_process = by_name(spans, NAMES.get_span_name("process", AgentId("relay", "default")))
    inner_create = by_name(spans, NAMES.get_span_name("create", AgentId("upper", "default")))
    inner_process = by_name(spans, NAMES.get_span_name("process", AgentId("upper", "default")))
    assert relay_process.context is not None and inner_create.context is not None
    assert inner_create.parent is not None and inner_create.parent.span_id == relay_process.context.span_id
    assert inner_process.parent is not None and inner_process.parent.span_id == inner_create.context.span_id


async def test_calls_without_a_span_start_their_own_trace(make_worker: WorkerFactory) -> None:
    provider, exporter, _ = tracing()
    serving = await make_worker(tracer_provider=provider)
    calling = await make_worker(tracer_provider=provider)
    await Upper.register(serving, "upper", Upper)
    for text in ("one", "two"):
        await bounded(calling.send_message(Text(text), AgentId("upper", "k")))
    spans = exporter.get_finished_spans()
    creates = [span for span in spans if span.name.startswith("autogen create")]
    assert len(creates) == 2
    assert all(span.parent is None for span in creates)
    # Two separate calls are two separate traces, each holding its own handler span.
    assert len(trace_ids(tuple(creates))) == 2
    processes = [span for span in spans if span.name.startswith("autogen process")]
    assert trace_ids(tuple(processes)) == trace_ids(tuple(creates))


async def test_without_a_tracer_provider_nothing_breaks(make_worker: WorkerFactory) -> None:
    inbox: asyncio.Queue[tuple[AgentId, Any, MessageContext]] = asyncio.Queue()
    serving = await make_worker()
    calling = await make_worker()
    await Upper.register(serving, "upper", Upper)
    await serving.register_factory("rec", lambda: Recorder(inbox))
    await calling.add_subscription(TypeSubscription("news", "rec"))
    assert await bounded(calling.send_message(Text("plain"), AgentId("upper", "k"))) == Text("PLAIN")
    await bounded(calling.publish_message(Text("event"), TopicId("news", "s")))
    _, message, _ = await bounded(inbox.get())
    assert message == Text("event")


async def test_package_imports_without_the_opentelemetry_sdk() -> None:
    # A fresh interpreter in which importing the SDK fails, as when it is not installed.
    code = (
        "import sys\n"
        "sys.modules['opentelemetry.sdk'] = None\n"
        "import autogen_http_runtime\n"
        "from autogen_http_runtime import HttpWorkerAgentRuntime\n"
        "HttpWorkerAgentRuntime('127.0.0.1:9')\n"
        "assert 'opentelemetry.sdk.trace' not in sys.modules\n"
    )
    await runs_cleanly(code)


def test_runtime_tracer_makes_no_spans_while_nobody_collects_them() -> None:
    from contextlib import nullcontext

    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from autogen_http_runtime._worker.tracing import RuntimeTracer

    # No provider given and none installed globally: no span object at all.
    assert isinstance(RuntimeTracer(None, "Worker Runtime").span("create", "x"), nullcontext)
    exporter = InMemorySpanExporter()
    provider = SdkTracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with RuntimeTracer(provider, "Worker Runtime").span("create", "x", "Text"):
        pass
    [span] = exporter.get_finished_spans()
    assert span.name == "autogen create x" and span.attributes is not None
    assert span.attributes["messaging.message.type"] == "Text"


async def test_a_provider_installed_globally_later_is_picked_up_at_once() -> None:
    # A fresh interpreter: the global provider can be installed only once per process.
    code = (
        "from contextlib import nullcontext\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from autogen_http_runtime._worker.tracing import RuntimeTracer\n"
        "tracer = RuntimeTracer(None, 'Worker Runtime')\n"
        "assert isinstance(tracer.span('create', 'x'), nullcontext)\n"
        "exporter = InMemorySpanExporter()\n"
        "provider = TracerProvider()\n"
        "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "trace.set_tracer_provider(provider)\n"
        "with tracer.span('create', 'x', 'Text'):\n"
        "    pass\n"
        "[span] = exporter.get_finished_spans()\n"
        "assert span.name == 'autogen create x', span.name\n"
    )
    await runs_cleanly(code)


async def test_a_provider_named_in_the_environment_is_used() -> None:
    code = (
        "from contextlib import nullcontext\n"
        "from autogen_http_runtime._worker.tracing import RuntimeTracer\n"
        "assert not isinstance(RuntimeTracer(None, 'Worker Runtime').span('create', 'x'), nullcontext)\n"
    )
    await runs_cleanly(code, env={**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"})


async def runs_cleanly(code: str, env: dict[str, str] | None = None) -> None:
    """Run ``code`` in a fresh interpreter (what a process does once, such as installing a
    global tracer provider); it must exit 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await bounded(process.communicate())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
