"""Carry the W3C trace context in envelopes, and continue it on the receiving side.

autogen-core's ``TraceHelper`` only *links* a span to the remote parent; we also make
the remote context current while the handler's span starts, so that one call across
two worker processes shows up as one trace. Works with the OpenTelemetry API alone:
without an SDK every span is a no-op.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from autogen_core import JSON_DATA_CONTENT_TYPE, AgentId, MessageContext
from opentelemetry import context as otel_context
from opentelemetry.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._compat import (
    ExtraMessageRuntimeAttributes,
    MessageRuntimeTracingConfig,
    SerializationRegistry,
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

    @property
    def active(self) -> bool:
        """Whether spans are made: a provider was given, or one is installed globally."""
        return self._given or global_tracer_provider_installed()

    def span(
        self,
        operation: Any,
        destination: Any,
        message_type: str | None = None,
        *,
        link: Mapping[str, str] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> AbstractContextManager[Any]:
        """A span for ``operation`` on ``destination`` (autogen-core's names), or nothing.

        ``link`` is a trace context (``traceparent``...) the span links to, as autogen-core's
        ``TraceHelper`` does with its ``parent`` argument; the span's parent stays the current span.
        """
        if not self.active:
            return _NOTHING
        extra = ExtraMessageRuntimeAttributes(message_type=message_type) if message_type is not None else None
        return self._helper.trace_block(
            operation, destination, parent=link or None, extraAttributes=extra, attributes=attributes
        )


def handler_attributes(
    registry: SerializationRegistry,
    *,
    sender: AgentId | None,
    recipient: AgentId | None,
    recipient_class: str | None,
    context: MessageContext | None,
    message: Any,
) -> dict[str, str]:
    """autogen-core's attributes of ``process`` and ``ack`` spans (its runtime's ``_create_otel_attributes``).

    ``sender_agent_class`` is left out: the sending agent lives in another process.
    """
    attributes: dict[str, str] = {}
    if sender is not None:
        attributes["sender_agent_type"] = sender.type
    if recipient is not None:
        attributes["recipient_agent_type"] = recipient.type
        if recipient_class is not None:
            attributes["recipient_agent_class"] = recipient_class
    if context is not None:
        attributes["message_context"] = json.dumps(
            {
                "sender": str(context.sender),
                "topic_id": str(context.topic_id),
                "is_rpc": context.is_rpc,
                "message_id": context.message_id,
            }
        )
    attributes["message"] = _message_text(registry, message) if message else "No Message"
    return attributes


def _message_text(registry: SerializationRegistry, message: Any) -> str:
    """The message as autogen-core's runtime writes it into a span."""
    try:
        type_name = registry.type_name(message)
        data = registry.serialize(message, type_name=type_name, data_content_type=JSON_DATA_CONTENT_TYPE)
        return data.decode("utf-8")
    except ValueError:
        return "Message could not be serialized"
