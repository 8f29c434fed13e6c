"""The one way the HTTP API refuses a request: an RFC 9457 problem (``application/problem+json``).

:class:`Problem` is raised anywhere a request cannot go on (authentication, a bad body, a
bad CloudEvent) and rendered by :meth:`Problem.response`. It is an ``HTTPException``, so a
FastAPI app that mounts the service without its exception handlers still answers with the
right status (FastAPI's default body, ``{"detail": ...}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from .._constants import PROBLEM_TYPE_PREFIX
from .._exceptions import HTTP_MEANINGS, ErrorCode
from .responses import AsciiJSONResponse

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"

JsonObject = dict[str, Any]


class Problem(HTTPException):
    """A request the host refuses, as an RFC 9457 problem.

    Args:
        status: The HTTP status.
        kind: The problem type's last part: ``urn:autogen-http:problem:<kind>``.
        title: A short, fixed summary of the kind.
        detail: What went wrong with this request.
        errors: For a batch, each bad item as ``{"index": int, "detail": str}``.
    """

    def __init__(
        self, status: int, kind: str, title: str, detail: str, errors: Sequence[JsonObject] = ()
    ) -> None:
        headers = {"WWW-Authenticate": 'Bearer realm="autogen-http-runtime"'} if status == 401 else None
        super().__init__(status, detail, headers=headers)
        self.kind, self.title, self.errors = kind, title, list(errors)

    @classmethod
    def for_code(cls, code: ErrorCode, detail: str) -> Problem:
        """The problem that stands for a JSON-RPC error code (see ``_exceptions.HTTP_MEANINGS``)."""
        meaning = HTTP_MEANINGS[code]
        return cls(meaning.status, meaning.kind, meaning.title, detail)

    @property
    def status(self) -> int:
        return self.status_code

    def __str__(self) -> str:
        return str(self.detail)

    def response(self) -> JSONResponse:
        body: JsonObject = {
            "type": PROBLEM_TYPE_PREFIX + self.kind,
            "title": self.title,
            "status": self.status_code,
            "detail": str(self.detail),
        }
        if self.errors:
            body["errors"] = self.errors
        return AsciiJSONResponse(
            body, status_code=self.status_code, media_type=PROBLEM_CONTENT_TYPE, headers=self.headers
        )

    @staticmethod
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        """An exception handler for FastAPI apps: the problem as ``application/problem+json``."""
        assert isinstance(exc, Problem)
        return exc.response()
