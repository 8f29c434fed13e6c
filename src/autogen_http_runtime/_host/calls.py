"""Calls the routing core forwards: to the worker that serves the recipient, and the answers back.

A caller's request id is rewritten to a host id of its own on the way to the serving
worker, and back on the way to the caller; :class:`CallTable` keeps each call in flight
until it is answered, cancelled, or one of its ends goes away. No I/O.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass

from autogen_core import AgentId

from .._exceptions import ErrorCode
from .._logging import call_extra
from .._protocol import wire
from .._protocol.wire import MessageError, Method, RequestId
from .directory import Directory
from .guard import Guard
from .session import WorkerSession
from .stats import CallOutcome, RouterStats


@dataclass(eq=False, slots=True)
class PendingCall:
    """A routed call the host forwarded and is waiting to see answered."""

    host_id: int
    caller: WorkerSession
    caller_id: RequestId
    target: WorkerSession
    method: str
    #: ``time.perf_counter()`` when the host forwarded it: the latency histogram's start.
    started: float = 0.0
    #: The call's W3C ``traceparent``, for log lines about it.
    traceparent: str | None = None


class CallTable:
    """The calls in flight through one host, and how each is forwarded, answered and ended.

    Args:
        max_calls_in_flight: Calls one session may have in flight through the host.
    """

    def __init__(
        self,
        directory: Directory,
        guard: Guard,
        stats: RouterStats,
        *,
        max_calls_in_flight: int,
        logger: logging.Logger,
    ) -> None:
        self._directory = directory
        self._guard = guard
        self._stats = stats
        self.max_calls_in_flight = max_calls_in_flight
        self._log = logger
        self._pending: dict[int, PendingCall] = {}
        self._ids = itertools.count(1)
        self._drained: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def forward(self, caller: WorkerSession, req: wire.Request) -> WorkerSession | None:
        """Forward a routed request to the worker serving its recipient.

        Returns:
            That worker, if it is now behind (the caller's transport waits for it).

        Raises:
            MessageError: The call cannot be forwarded (the code says why).
        """
        guard = self._guard
        try:  # not wire.tagged(): a context manager costs a microsecond on every call
            recipient = wire.required_agent_id(req.params, "recipient")
            if guard.access is not None:
                guard.authorize(caller, "call", recipient.type, req.id)
                guard.verify_sender(
                    caller, wire.agent_id_from_wire(req.params, "sender", optional=True), req.id
                )
        except MessageError as exc:
            exc.request_id = req.id
            raise
        if guard.rate_limiter is not None:
            guard.take_rate(caller, req.id)
        target = self._directory.owner(recipient)
        if target is None:
            raise MessageError(
                ErrorCode.AGENT_NOT_FOUND,
                f"Agent type '{recipient.type}' is not registered: no connected worker serves it.",
                req.id,
            )
        if target.remote is not None and (why := target.remote.unavailable) is not None:
            raise MessageError(
                ErrorCode.CLUSTER_UNAVAILABLE,
                f"Agent '{recipient}' is served on host {target.remote.name}, out of reach: "
                f"{why.rstrip('.')}.",
                req.id,
            )
        if len(caller.calls_made) >= self.max_calls_in_flight and req.id not in caller.calls_made:
            raise MessageError(
                ErrorCode.TOO_MANY_CALLS,
                f"This worker already has {self.max_calls_in_flight} calls in flight; "
                "wait for some to finish.",
                req.id,
            )
        return self._dispatch(caller, req, target, recipient)

    def relay(self, peer: WorkerSession, req: wire.Request, target: WorkerSession) -> WorkerSession | None:
        """Forward a request another host of the cluster routed to ``target``, a worker of this one.

        ``peer`` stands for that host's callers: the host that took the call checked the
        caller's rights and limits, and chose ``target``; the frame it came in was signed.

        Returns and raises: as :meth:`forward`.
        """
        with wire.tagged(req.id):
            recipient = wire.required_agent_id(req.params, "recipient")
        return self._dispatch(peer, req, target, recipient)

    def _dispatch(
        self, caller: WorkerSession, req: wire.Request, target: WorkerSession, recipient: AgentId
    ) -> WorkerSession | None:
        if req.id in caller.calls_made:
            raise MessageError(
                ErrorCode.INVALID_REQUEST, f"Request id {req.id!r} is already in flight.", req.id
            )
        host_id = next(self._ids)
        data = wire.encode_bytes(wire.request(host_id, req.method, req.params))
        size = len(data)
        if size > target.max_message_size:
            raise MessageError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"The message is {size} bytes; the recipient's worker accepts at most "
                f"{target.max_message_size}.",
                req.id,
            )
        call = PendingCall(
            host_id, caller, req.id, target, req.method, time.perf_counter(), req.params.get("traceparent")
        )
        target.routed(recipient.type, recipient.key, self._directory.replicas)
        self._stats.calls_routed += 1
        self._pending[host_id] = call
        caller.calls_made[req.id] = host_id
        caller.total_calls_made += 1
        target.calls_served[host_id] = call
        target.total_calls_served += 1
        target.send_encoded(data)
        return target if target.backlogged else None

    def served_by(self, session: WorkerSession, frame_id: RequestId | None) -> PendingCall | None:
        """The call in flight with host id ``frame_id``, if ``session`` serves it."""
        call = self._pending.get(frame_id) if isinstance(frame_id, int) else None
        return call if call is not None and call.target is session else None

    def answered_by_host(self, host: str, frame: wire.Response | wire.ErrorResponse) -> bool:
        """Relay an answer another host of the cluster sent to a call this host forwarded there.

        Returns:
            Whether a call in flight to a worker on ``host`` had this id (a late answer to a
            call that ended meanwhile has none).
        """
        call = self._pending.get(frame.id) if isinstance(frame.id, int) else None
        if call is None or call.target.remote is None or call.target.remote.name != host:
            return False
        self.answer(call, frame)
        return True

    def answer(self, call: PendingCall, frame: wire.Response | wire.ErrorResponse) -> None:
        """Relay the serving worker's answer to ``call`` to its caller.

        An answer never holds back the worker that sent it, even when it leaves the caller
        behind: that worker serves other callers too, and one caller that does not read must
        not delay them. The caller's own transport drops it if it stays behind (see
        ``transport.py``), and past ``max_queued_bytes`` it is dropped at once.
        """
        self._stats.call_latency.observe(time.perf_counter() - call.started)
        self._stats.calls_answered += 1
        if isinstance(frame, wire.Response):
            self.finish(call, CallOutcome.OK)
            reply = wire.result(call.caller_id, frame.result)
        else:
            self.finish(call, CallOutcome.ERROR)
            self._stats.count_error_for(call.caller, frame.code, frame.message, call.caller_id)
            reply = wire.error(call.caller_id, frame.code, frame.message, frame.data)
        caller = call.caller
        if caller.local:
            caller.send(reply)  # an HTTP request writes its own answer: no frame, no frame limit
            return
        try:
            data = wire.encode_bytes(reply)
        except RecursionError:
            # json reads as deep as the stack allows, and writing runs a few frames deeper.
            message = "The reply is nested too deeply to forward."
            data = wire.encode_bytes(wire.error(call.caller_id, ErrorCode.MESSAGE_TOO_LARGE, message))
        size = len(data)
        if size > caller.max_message_size:
            # Sending it would make the caller's WebSocket close (1009) and fail all its calls.
            self._log.warning(
                "Reply of %d bytes too large for worker %s",
                size,
                caller.worker_id,
                extra=call_extra(call.caller_id, call.traceparent, host_request_id=call.host_id),
            )
            message = (
                f"The reply is {size} bytes; the calling worker accepts at most {caller.max_message_size}."
            )
            data = wire.encode_bytes(wire.error(call.caller_id, ErrorCode.MESSAGE_TOO_LARGE, message))
        caller.send_encoded(data)

    def cancel(self, caller: WorkerSession, caller_id: object) -> None:
        """The caller gave up on a call: forget it and tell the serving worker."""
        host_id = caller.calls_made.get(caller_id) if isinstance(caller_id, (int, str)) else None
        call = self._pending.get(host_id) if host_id is not None else None
        if call is not None:
            self.finish(call, CallOutcome.CANCELLED)
            call.target.send(wire.notification(Method.CANCEL, {"id": call.host_id}))

    def session_closed(self, session: WorkerSession, reason: str) -> None:
        """Fail the calls ``session`` served at their callers; cancel those it made."""
        for call in list(session.calls_served.values()):
            self.finish(call, CallOutcome.WORKER_DISCONNECTED)
            message = (
                f"The worker serving the recipient disconnected before answering '{call.method}' ({reason})."
            )
            self._stats.count_error_for(call.caller, ErrorCode.WORKER_DISCONNECTED, message, call.caller_id)
            call.caller.send(wire.error(call.caller_id, ErrorCode.WORKER_DISCONNECTED, message))
        for host_id in list(session.calls_made.values()):
            made = self._pending.get(host_id)
            if made is not None:
                self.finish(made, CallOutcome.CALLER_DISCONNECTED)
                made.target.send(wire.notification(Method.CANCEL, {"id": made.host_id}))

    def host_lost(self, host: str | None, code: ErrorCode, reason: str, *, both_ways: bool = True) -> int:
        """End the calls in flight across to another host of the cluster that can no longer be
        answered: ``host`` is gone, or (``None``) every other host is out of reach.

        Calls to workers there fail at their callers with ``code``; calls made from there to
        workers here are cancelled at those workers (their answers could not go back), unless
        not ``both_ways`` (only the way there was lost: a direct link to it closed).

        Returns:
            How many calls ended.
        """
        ended = 0
        for call in list(self._pending.values()):
            target, caller = call.target.remote, call.caller.remote
            if target is not None and (host is None or target.name == host):
                self.finish(call, CallOutcome.WORKER_DISCONNECTED)
                message = f"The call '{call.method}' to host {target.name} cannot be answered: {reason}."
                self._stats.count_error_for(call.caller, code, message, call.caller_id)
                call.caller.send(wire.error(call.caller_id, code, message))
            elif both_ways and caller is not None and (host is None or caller.name == host):
                self.finish(call, CallOutcome.CALLER_DISCONNECTED)
                call.target.send(wire.notification(Method.CANCEL, {"id": call.host_id}))
            else:
                continue
            ended += 1
        return ended

    def finish(self, call: PendingCall, outcome: str) -> None:
        self._stats.call_outcomes[outcome] += 1
        self._pending.pop(call.host_id, None)
        call.caller.calls_made.pop(call.caller_id, None)
        call.target.calls_served.pop(call.host_id, None)
        if self._drained is not None and not self._pending:
            self._drained.set()

    async def drain(self, grace: float) -> None:
        """Let the calls in flight finish for up to ``grace`` seconds, then fail the rest."""
        if self._pending:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout=grace)
            except asyncio.TimeoutError:
                self._log.warning(
                    "%d call(s) still in flight after %.1fs; failing them", len(self._pending), grace
                )
        for call in list(self._pending.values()):
            self.finish(call, CallOutcome.SHUTDOWN)
            call.target.send(wire.notification(Method.CANCEL, {"id": call.host_id}))
            message = "The host shut down before the call completed."
            self._stats.count_error_for(call.caller, ErrorCode.SHUTTING_DOWN, message, call.caller_id)
            call.caller.send(wire.error(call.caller_id, ErrorCode.SHUTTING_DOWN, message))
