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
from opentelemetry import trace as otel_trace
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


#: The context manager that does nothing, for a block with no span to continue or start.
_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()


def continued(carrier: Mapping[str, str]) -> AbstractContextManager[None]:
    """Make the remote span in ``carrier`` the current parent for the duration of the block."""
    return _continued(carrier) if carrier else _NOTHING


@contextlib.contextmanager
def _continued(carrier: Mapping[str, str]) -> Iterator[None]:
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
        if not self._given and not _global_provider_installed():
            return _NOTHING
        extra = ExtraMessageRuntimeAttributes(message_type=message_type) if message_type is not None else None
        return self._helper.trace_block(operation, destination, parent=None, extraAttributes=extra)


_NOT_KEPT_THERE = object()


def _global_provider_installed() -> bool:
    """Whether a tracer provider that records spans is installed globally.

    What ``get_tracer_provider()`` says, without the environment lookup it makes on every
    call until a provider is installed (a microsecond or two, on every message): that lookup
    (``OTEL_PYTHON_TRACER_PROVIDER``) was made when autogen-core's ``TraceHelper`` was created,
    and OpenTelemetry installs a global provider once and for all.
    """
    provider = getattr(otel_trace, "_TRACER_PROVIDER", _NOT_KEPT_THERE)
    if provider is _NOT_KEPT_THERE:  # an OpenTelemetry that keeps it elsewhere: ask it
        provider = get_tracer_provider()
    return provider is not None and not isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider))
