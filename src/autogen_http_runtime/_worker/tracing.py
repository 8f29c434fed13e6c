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

from opentelemetry import context as otel_context
from opentelemetry.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._compat import (
    ExtraMessageRuntimeAttributes,
    MessageRuntimeTracingConfig,
    TraceHelper,
    global_tracer_provider_installed,
)

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
        if not self._given and not global_tracer_provider_installed():
            return _NOTHING
        extra = ExtraMessageRuntimeAttributes(message_type=message_type) if message_type is not None else None
        return self._helper.trace_block(operation, destination, parent=None, extraAttributes=extra)
