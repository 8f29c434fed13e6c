"""Where this package touches other libraries' private names, and the gRPC drop-in helpers.

Every use of a private name of autogen-core, asyncio or OpenTelemetry goes through this
module, so that a new release that moves one breaks here, in one place, with the tested
versions next to it. websockets' and uvicorn's internals are fenced the same way in
:mod:`._transport` (see ``_transport/fastpath.py``).

``AUTOGEN_HTTP_FASTPATH=0`` in the environment turns off every speed-up that relies on
another library's internals: the host's direct WebSocket path, the frame reader and
writer of both sides, and the tracer-provider peek below. What remains uses only public
APIs; it is slower, not different (the suite runs both ways).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

# autogen-core 0.7 exports these only from private modules (tested with 0.7.5).
from autogen_core._agent_id import is_valid_agent_type
from autogen_core._runtime_impl_helpers import get_impl
from autogen_core._serialization import (
    DataclassJsonMessageSerializer,
    PydanticJsonMessageSerializer,
    SerializationRegistry,
)
from autogen_core._telemetry import MessageRuntimeTracingConfig, TraceHelper
from autogen_core._telemetry._tracing_config import ExtraMessageRuntimeAttributes
from autogen_core._topic import is_valid_topic_type
from opentelemetry import trace as otel_trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, get_tracer_provider

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "FASTPATH",
    "DataclassJsonMessageSerializer",
    "ExtraMessageRuntimeAttributes",
    "MessageRuntimeTracingConfig",
    "PydanticJsonMessageSerializer",
    "SerializationRegistry",
    "TraceHelper",
    "get_impl",
    "global_tracer_provider_installed",
    "is_valid_agent_type",
    "is_valid_topic_type",
    "loop_signal_handler",
    "warn_grpc_config_ignored",
]

#: The environment variable that turns the fast paths off when set to ``0``.
FASTPATH_ENV: Final = "AUTOGEN_HTTP_FASTPATH"
#: Whether speed-ups that rely on other libraries' internals may be used (read once, at import).
FASTPATH: Final = os.environ.get(FASTPATH_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def warn_grpc_config_ignored(extra_grpc_config: object) -> None:
    """Warn that a gRPC channel/server option given to one of our classes has no effect."""
    if extra_grpc_config:
        warnings.warn(
            "extra_grpc_config is a gRPC option and is ignored by autogen-http-runtime.",
            UserWarning,
            stacklevel=3,
        )


_NOT_KEPT_THERE = object()


def global_tracer_provider_installed() -> bool:
    """Whether a tracer provider that records spans is installed globally.

    What ``get_tracer_provider()`` says. With the fast path, without the environment lookup
    it makes on every call until a provider is installed (a microsecond or two, on every
    message): OpenTelemetry keeps the provider in a private module attribute, installed
    once and for all.
    """
    provider = getattr(otel_trace, "_TRACER_PROVIDER", _NOT_KEPT_THERE) if FASTPATH else _NOT_KEPT_THERE
    if provider is _NOT_KEPT_THERE:  # an OpenTelemetry that keeps it elsewhere, or no fast path
        provider = get_tracer_provider()
    return provider is not None and not isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider))


def loop_signal_handler(
    loop: asyncio.AbstractEventLoop, signum: int
) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
    """The callback and arguments an application gave ``loop.add_signal_handler`` for ``signum``.

    asyncio has no public way to read it back; its loops keep the handles in a private
    dict. ``None`` when there is none, or the loop keeps them elsewhere (uvloop).
    """
    handlers: dict[int, asyncio.Handle] = getattr(loop, "_signal_handlers", {})
    handle = handlers.get(signum)
    if handle is None:
        return None
    callback = getattr(handle, "_callback", None)
    args = getattr(handle, "_args", ())
    return None if callback is None else (callback, tuple(args))
