"""``POST /v1/rpc``: a JSON-RPC 2.0 request or batch calling agents, as a worker would.

Each item is checked, handed to the routing core as the request a worker sends over its
WebSocket (under its position in the batch, so ids stay unique), and answered with what
the serving worker answers, the id put back. ``X-Deadline`` (and each call's ``timeout``)
bounds the wait: a call past it is cancelled on the host and answered with -32007.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass
from typing import Any, Final

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from .._exceptions import ErrorCode
from .._host.core import RoutingCore
from .._protocol import json_codec as _json
from .._protocol import wire
from .._protocol.wire import JsonObject, MessageError, Method
from .admission import request_identity
from .local import LocalTransport, deadline_passed, host_shut_down
from .problems import Problem
from .responses import AsciiJSONResponse

DEADLINE_HEADER: Final = "X-Deadline"
EVENTS_PATH: Final = "/v1/events"


@dataclass
class _Call:
    """One call of a ``POST /v1/rpc`` request, forwarded through the core and not answered yet."""

    client_id: wire.RequestId | None
    #: Seconds allowed, and when they run out on the event loop's clock.
    allowed: float | None
    deadline: float | None


class RpcEndpoint:
    """The ``POST /v1/rpc`` handler for one routing core."""

    def __init__(self, core: RoutingCore, *, slow_consumer_timeout: float) -> None:
        self._core = core
        self._slow_consumer_timeout = slow_consumer_timeout

    async def __call__(self, request: Request) -> Response:
        core = self._core
        loop = asyncio.get_running_loop()
        try:
            timeout = deadline_header(request)
            body = await read_body(request, core.max_message_size)
        except Problem as exc:
            return exc.response()
        started = loop.time()
        try:
            parsed = _json.loads(body)
        except (ValueError, RecursionError) as exc:
            return AsciiJSONResponse(wire.error(None, ErrorCode.PARSE_ERROR, f"Parse error: {exc}"))
        batch = isinstance(parsed, list)
        items: list[Any] = parsed if batch else [parsed]
        if not items:
            return AsciiJSONResponse(
                wire.error(None, ErrorCode.INVALID_REQUEST, "An empty batch is not a request.")
            )

        answers: dict[int, JsonObject] = {}
        calls: dict[int, _Call] = {}
        #: Positions of notifications: whatever happens to them, they get no answer.
        silent = {i for i, item in enumerate(items) if isinstance(item, dict) and "id" not in item}
        identity = request_identity(request)
        async with LocalTransport(
            core, identity, slow_consumer_timeout=self._slow_consumer_timeout
        ) as caller:
            # The core knows each call by its position; what it records (errors) it records
            # under the client's own id.
            client_ids: dict[wire.RequestId, wire.RequestId | None] = {}
            caller.session.client_ids = client_ids
            for index, item in enumerate(items):
                try:
                    request_id, method, params = _prepare(item)
                except MessageError as exc:
                    answers[index] = wire.error(exc.request_id, exc.code, exc.message, exc.data)
                    continue
                limits = [t for t in (timeout, wire.optional_number(params, "timeout")) if t is not None]
                allowed = min(limits) if limits else None
                if allowed is not None:
                    params["timeout"] = allowed
                deadline = None if allowed is None else started + allowed
                calls[index] = _Call(request_id, allowed, deadline)
                client_ids[index] = request_id
                await caller.send([wire.Request(index, method, params)])
            if calls and not await _collect(request, caller, calls, answers):
                return Response(status_code=499)  # the caller hung up: nobody reads this

        replies = [answers[index] for index in range(len(items)) if index in answers and index not in silent]
        if not replies:
            return Response(status_code=204)
        return AsciiJSONResponse(replies if batch else replies[0])


async def _collect(
    request: Request, caller: LocalTransport, calls: dict[int, _Call], answers: dict[int, JsonObject]
) -> bool:
    """Wait for the answers to ``calls`` until each is in or past its deadline.

    Returns:
        False if the HTTP client disconnected first.
    """
    loop = asyncio.get_running_loop()
    outbox = caller.session.outbox
    waiting = {index for index in calls if index not in answers}
    hung_up = asyncio.ensure_future(_disconnected(request))
    try:
        while waiting:
            while not outbox.empty() and waiting:
                if not _file(outbox.get_nowait(), calls, waiting, answers):
                    return True
            now = loop.time()
            for index in sorted(waiting):
                deadline = calls[index].deadline
                if deadline is not None and deadline <= now:
                    waiting.discard(index)
                    caller.cancel(index)
                    allowed = calls[index].allowed
                    assert allowed is not None
                    answers[index] = deadline_passed(calls[index].client_id, allowed)
            if not waiting:
                break
            deadlines = [d for d in (calls[i].deadline for i in waiting) if d is not None]
            wait_for = max(0.0, min(deadlines) - now) if deadlines else None
            getter = asyncio.ensure_future(outbox.get())
            done, _ = await asyncio.wait(
                {getter, hung_up}, timeout=wait_for, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in done:
                if not _file(getter.result(), calls, waiting, answers):
                    return True
            else:
                getter.cancel()
                if hung_up in done:
                    return False
        return True
    finally:
        hung_up.cancel()


def _file(item: object, calls: dict[int, _Call], waiting: set[int], answers: dict[int, JsonObject]) -> bool:
    """File one answer from the session's outbox; False once the session is closed."""
    if not isinstance(item, dict):
        # The host shut down (it has already sent -32010 for every call it knew of).
        for index in sorted(waiting):
            answers[index] = host_shut_down(calls[index].client_id)
        waiting.clear()
        return False
    position = item.get("id")
    if isinstance(position, int) and position in waiting:
        waiting.discard(position)
        item["id"] = calls[position].client_id
        answers[position] = item
    return True


def _prepare(item: Any) -> tuple[wire.RequestId | None, str, JsonObject]:
    """Check one JSON-RPC request of ``POST /v1/rpc``: (id, or None for a notification, method, params).

    Raises:
        MessageError: The answer to give in its place.
    """
    if not isinstance(item, dict):
        raise MessageError(ErrorCode.INVALID_REQUEST, "A request must be a JSON object.")
    if "specversion" in item:
        raise MessageError(ErrorCode.INVALID_REQUEST, f"Publish CloudEvents with POST {EVENTS_PATH}.")
    message = wire.read_message(item)
    request_id: wire.RequestId | None
    if isinstance(message, wire.Notification):
        request_id, method, params = None, message.method, message.params
    elif isinstance(message, wire.Request):
        request_id, method, params = message.id, message.method, message.params
    else:
        raise MessageError(
            ErrorCode.INVALID_REQUEST, "Send a request: 'jsonrpc', 'method', 'params' and 'id'."
        )
    if isinstance(request_id, str) and not _is_text(request_id):
        # Refused before anything runs: its answer could carry it only as an escape that many
        # clients cannot read back.
        raise MessageError(
            ErrorCode.INVALID_REQUEST, "A string request id must be Unicode text (it holds a lone surrogate)."
        )
    with wire.tagged(request_id):
        if method not in wire.ROUTED_METHODS:
            raise MessageError(
                ErrorCode.METHOD_NOT_FOUND,
                f"Method '{method}' is not available over HTTP; use "
                f"{', '.join(sorted(wire.ROUTED_METHODS))}.",
            )
        wire.required_agent_id(params, "recipient")
        wire.optional_number(params, "timeout")
        if method == Method.SEND:
            wire.agent_id_from_wire(params, "sender", optional=True)
            params["payload"] = wire.payload_to_wire(wire.payload_from_wire(params.get("payload")))
            message_id = params.get("message_id")
            if message_id is None:
                params["message_id"] = str(uuid.uuid4())
            elif not isinstance(message_id, str):
                raise MessageError(ErrorCode.INVALID_PARAMS, "'message_id' must be a string.")
        elif method == Method.AGENT_LOAD_STATE and not isinstance(params.get("state"), dict):
            raise MessageError(ErrorCode.INVALID_PARAMS, "'state' must be an object.")
    return request_id, method, params


def _is_text(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8: no lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def deadline_header(request: Request) -> float | None:
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise Problem(
            400,
            "invalid-deadline",
            "Invalid deadline",
            f"{DEADLINE_HEADER} must be a number of seconds >= 0, not {raw!r}.",
        )
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing one over ``limit`` bytes before reading it all.

    Raises:
        Problem: 413 for a body over the limit, 400 for one cut short.
    """
    too_large = Problem(
        413, "too-large", "Body too large", f"The body exceeds this host's limit of {limit} bytes."
    )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise Problem(400, "disconnected", "Client disconnected", "The body was cut short.") from None
    return b"".join(chunks)


async def _disconnected(request: Request) -> None:
    """Return once the HTTP client has gone away (after its body was read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
