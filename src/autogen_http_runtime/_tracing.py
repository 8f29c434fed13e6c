"""Carry the W3C trace context in envelopes, and continue it on the receiving side.

autogen-core's ``TraceHelper`` only *links* a span to the remote parent; we also make
the remote context current while the handler's span starts, so that one call across
two worker processes shows up as one trace. Works with the OpenTelemetry API alone:
without an SDK every span is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
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
