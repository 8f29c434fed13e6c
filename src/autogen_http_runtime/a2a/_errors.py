"""What :class:`A2AAgent` raises when the remote A2A agent cannot give it a result.

One exception type (and its timeout subtype), whatever went wrong; ``reason`` says what::

    HttpRuntimeError
    └── A2AAgentError (RuntimeError)
        └── A2ATimeoutError (TimeoutError)

``reason`` is, in this order of precedence:

- the A2A error reason of an error the remote agent answered with, as the SDK names it
  (``"INTERNAL_ERROR"``, ``"INVALID_PARAMS"``, ``"TASK_NOT_FOUND"``, ``"UNSUPPORTED_OPERATION"``,
  ``"CONTENT_TYPE_NOT_SUPPORTED"``, ...), with its JSON-RPC ``code``;
- the state its task ended in, when that is not ``completed``: ``"TASK_STATE_FAILED"``,
  ``"TASK_STATE_REJECTED"``, ``"TASK_STATE_CANCELED"``, ``"TASK_STATE_INPUT_REQUIRED"``,
  ``"TASK_STATE_AUTH_REQUIRED"`` (with ``task_id``);
- ``"INVALID_AGENT_RESPONSE"``: the reply does not fit the agent's ``output_type``;
- ``"AGENT_CARD_NOT_RESOLVED"``: the Agent Card could not be fetched or read;
- ``"NO_COMPATIBLE_TRANSPORT"``: the card offers no interface the SDK's client speaks;
- ``"HTTP_ERROR"``: the server answered with an HTTP error status (``http_status``, e.g. 401
  when a bearer token is missing or wrong);
- ``"TRANSPORT_ERROR"``: no usable answer at all (connection refused, not JSON-RPC, ...);
- ``"TIMEOUT"`` (an :class:`A2ATimeoutError`): no answer in time.
"""

from __future__ import annotations

from typing import Any

import httpx
from a2a.client.errors import A2AClientError, A2AClientTimeoutError, AgentCardResolutionError
from a2a.utils.errors import A2A_ERROR_REASONS, JSON_RPC_ERROR_CODE_MAP, A2AError

from .._exceptions import HttpRuntimeError

__all__ = ["A2AAgentError", "A2ATimeoutError", "error_from_sdk"]


class A2AAgentError(HttpRuntimeError, RuntimeError):
    """The remote A2A agent answered with an error, ended its task without a result, or could
    not be reached.

    Attributes:
        reason: What went wrong, as listed in this module's docstring.
        code: The JSON-RPC error code the agent answered with, or ``None``.
        http_status: The HTTP status of a refused request (401, 403, 404, ...), or ``None``.
        task_id: The A2A task that ended without a result, or ``None``.
        data: The error's details as the agent sent them, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        code: int | None = None,
        http_status: int | None = None,
        task_id: str | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.code = code
        self.http_status = http_status
        self.task_id = task_id
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.__dict__))


class A2ATimeoutError(A2AAgentError, TimeoutError):
    """The remote A2A agent did not answer before the deadline (``A2AAgent(timeout=...)``, or
    the HTTP client's own timeouts); its task, if one was started, was asked to cancel."""


def _rebuild(cls: type[A2AAgentError], message: str, attributes: dict[str, Any]) -> A2AAgentError:
    error = cls(message, reason=str(attributes.get("reason", "")))
    error.__dict__.update(attributes)
    return error


def error_from_sdk(exc: A2AError, where: str) -> A2AAgentError:
    """The :class:`A2AAgentError` that stands for an error the SDK's client raised.

    Args:
        exc: What the SDK raised: an error the agent answered with (a subclass of
            ``a2a.utils.errors.A2AError`` named after it), or a client-side failure
            (``a2a.client.A2AClientError`` and its subclasses).
        where: Names the remote agent in the message, e.g. its URL.
    """
    message = f"A2A agent {where}: {exc.message}"
    if isinstance(exc, A2AClientTimeoutError):
        return A2ATimeoutError(message, reason="TIMEOUT")
    if isinstance(exc, AgentCardResolutionError):
        return A2AAgentError(message, reason="AGENT_CARD_NOT_RESOLVED", http_status=exc.status_code)
    if isinstance(exc, A2AClientError):
        status = _http_status(exc)
        reason = "HTTP_ERROR" if status is not None else "TRANSPORT_ERROR"
        return A2AAgentError(message, reason=reason, http_status=status)
    error_type = type(exc)
    return A2AAgentError(
        message,
        reason=A2A_ERROR_REASONS.get(error_type, error_type.__name__),
        code=JSON_RPC_ERROR_CODE_MAP.get(error_type),
        data=exc.data,
    )


def _http_status(exc: BaseException) -> int | None:
    cause = exc.__cause__
    if isinstance(cause, httpx.HTTPStatusError):
        return cause.response.status_code
    return None
