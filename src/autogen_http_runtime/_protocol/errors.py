"""What answers a message that broke the protocol. No I/O."""

from __future__ import annotations

import traceback
from typing import Any, Union

from .._exceptions import ErrorCode

RequestId = Union[int, str]


class MessageError(Exception):
    """A message or its params broke the protocol; ``code`` and ``request_id`` say how to answer it,
    and ``data`` is the error object's ``data`` member, if any."""

    def __init__(
        self, code: ErrorCode, message: str, request_id: RequestId | None = None, data: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.data = data


def remote_error_data(exc: BaseException) -> dict[str, str]:
    """What a caller learns of a handler's failure: the exception type, its message and the traceback."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
