"""What answers a message that broke the protocol. No I/O."""

from __future__ import annotations

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
