"""Carry the W3C trace context in envelopes, and continue it on the receiving side.

autogen-core's ``TraceHelper`` only *links* a span to the remote parent; we also make
the remote context current while the handler's span starts, so that one call across
two worker processes shows up as one trace. Works with the OpenTelemetry API alone:
without an SDK every span is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from autogen_core._telemetry import MessageRuntimeTracingConfig, TraceHelper
from autogen_core._telemetry._tracing_config import ExtraMessageRuntimeAttributes
from opentelemetry import context as otel_context
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, TracerProvider, get_tracer_provider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
TRACE_KEYS = ("traceparent", "tracestate")


def current_trace_context() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span, or an empty dict."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def trace_context_from(values: Mapping[str, Any]) -> dict[str, str]:
    """The trace context entries found in a params object or CloudEvent."""
    return {key: value for key in TRACE_KEYS if isinstance(value := values.get(key), str)}


@contextlib.contextmanager
def continued(carrier: Mapping[str, str]) -> Iterator[None]:
    """Make the remote span in ``carrier`` the current parent for the duration of the block."""
    if not carrier:
        yield
        return
    token = otel_context.attach(_PROPAGATOR.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


class RuntimeTracer:
    """autogen-core's span helper, skipped outright while no tracer provider is set anywhere.

    A no-op span still costs a context manager, attributes and a context switch per message
    on every hop; with no provider given and none installed globally, nobody would see it.
    A provider installed globally later is picked up at once.
    """

    def __init__(self, tracer_provider: TracerProvider | None, runtime_name: str) -> None:
        self._given = tracer_provider is not None
        self._helper = TraceHelper(tracer_provider, MessageRuntimeTracingConfig(runtime_name))

    def span(
        self, operation: Any, destination: Any, message_type: str | None = None
    ) -> AbstractContextManager[Any]:
        """A span for ``operation`` on ``destination`` (autogen-core's names), or nothing."""
        if not self._given and isinstance(get_tracer_provider(), (ProxyTracerProvider, NoOpTracerProvider)):
            return contextlib.nullcontext()
        extra = ExtraMessageRuntimeAttributes(message_type=message_type) if message_type is not None else None
        return self._helper.trace_block(operation, destination, parent=None, extraAttributes=extra)
