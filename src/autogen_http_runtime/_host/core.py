"""The host's routing core: agent types -> workers, subscriptions, and calls in flight.

Plain asyncio and no web framework: :class:`HttpAgentService` feeds it the text frames
a worker's WebSocket delivers and pumps each :class:`WorkerSession`'s outbox back into
that WebSocket. Frame handling is synchronous and never awaits, so frames from one
worker are routed in the order they arrived and no lock is needed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from autogen_core import AgentId, Subscription, TopicId, TypePrefixSubscription, TypeSubscription
from autogen_core._agent_id import is_valid_agent_type

from .._constants import (
    DEFAULT_HIGH_WATER,
    DEFAULT_MAX_CALLS_IN_FLIGHT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUED_BYTES,
    HOST_LOGGER,
    PROTOCOL_VERSION,
)
from .._logging import call_extra
from .._protocol import wire
from .._protocol.wire import ErrorCode, FrameError, JsonObject, Method, RequestId
from .security import ANONYMOUS, AccessPolicy, Action, Identity, RateLimiter
from .session import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    PendingCall,
    WorkerSession,
)
from .stats import CallOutcome, RouterStats
from .subscriptions import SubscriptionTable, subscription_from_spec

_T = TypeVar("_T")


class MessageRouter:
    """Routes frames between the workers connected to one host.

    Args:
        max_message_size: The largest frame, in bytes, the host reads and forwards.
        max_queued_bytes: Bytes the host may queue for one worker before dropping it as too slow.
        max_calls_in_flight: Calls one worker may have in flight through the host.
        access: Per-identity authorisation, also turning on sender verification; ``None``
            lets every session do everything.
        rate_limiter: Per-identity token buckets for calls and publishes; ``None``: no limit.
        logger: Where to log; defaults to ``autogen_http_runtime.host``.
    """

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        max_calls_in_flight: int = DEFAULT_MAX_CALLS_IN_FLIGHT,
        access: AccessPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.access = access
        self.rate_limiter = rate_limiter
        self.max_message_size = max_message_size
        # Room for at least two of the largest frames, or no large frame could ever pass.
        self.max_queued_bytes = max(max_queued_bytes, 2 * max_message_size)
        self.high_water = min(DEFAULT_HIGH_WATER, self.max_queued_bytes // 2)
        self._backlog: WorkerSession | None = None
        self.stats = RouterStats()
        self.max_calls_in_flight = max_calls_in_flight
        self.sessions: dict[str, WorkerSession] = {}
        self.agent_types: dict[str, WorkerSession] = {}
        self.subscriptions = SubscriptionTable()
        self._subscription_owner: dict[str, WorkerSession] = {}
        self._pending: dict[int, PendingCall] = {}
        self._ids = itertools.count(1)
        self._draining = False
        self._drained: asyncio.Event | None = None
        #: Set when the host starts shutting down: long-lived streams (the dashboard's) end on it.
        self.stopping = asyncio.Event()
        self._log = logger or logging.getLogger(HOST_LOGGER)

    # -- sessions ---------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return not self._draining

    @property
    def pending_calls(self) -> int:
        return len(self._pending)

    def open_session(self, *, local: str = "", identity: Identity = ANONYMOUS) -> WorkerSession:
        """A session for a new worker connection.

        Args:
            local: For a caller inside the host process (e.g. an HTTP endpoint), its name:
                the session needs no ``hello``, is never listed as a worker, and whoever
                opened it reads its replies from ``outbox`` and closes it with
                :meth:`close_session`.
            identity: Who the transport authenticated the caller as.
        """
        session = WorkerSession(
            worker_id=uuid.uuid4().hex,
            max_message_size=self.max_message_size,
            max_queued_bytes=self.max_queued_bytes,
            high_water=self.high_water,
            name=local,
            greeted=bool(local),
            local=bool(local),
            identity=identity,
        )
        self.sessions[session.worker_id] = session
        return session

    def workers(self) -> list[WorkerSession]:
        """The connected workers (not the host's own local sessions)."""
        return [session for session in self.sessions.values() if not session.local]

    def close_session(self, session: WorkerSession, reason: str = "disconnected") -> None:
        """Forget a worker: free its agent types and subscriptions, fail the calls it served."""
        if self.sessions.pop(session.worker_id, None) is None:
            return
        session.closed = True
        session.release_senders()  # a sender held back for it would wait for nothing
        if not session.local:
            self.stats.closed_frames_in += session.frames_in
            self.stats.closed_frames_out += session.frames_out
            self.stats.closed_bytes_in += session.bytes_in
            self.stats.closed_bytes_out += session.bytes_out
        for agent_type in session.agent_types:
            if self.agent_types.get(agent_type) is session:
                del self.agent_types[agent_type]
        for subscription_id in session.subscription_ids:
            if self._subscription_owner.get(subscription_id) is session:
                del self._subscription_owner[subscription_id]
                self.subscriptions.remove(subscription_id)
        for call in list(session.calls_served.values()):
            self._finish(call, CallOutcome.WORKER_DISCONNECTED)
            message = (
                f"The worker serving the recipient disconnected before answering '{call.method}' ({reason})."
            )
            self.stats.count_error(
                ErrorCode.WORKER_DISCONNECTED, message, call.caller.worker_id, call.caller_id
            )
            call.caller.send(wire.error(call.caller_id, ErrorCode.WORKER_DISCONNECTED, message))
        for host_id in list(session.calls_made.values()):
            made = self._pending.get(host_id)
            if made is not None:
                self._finish(made, CallOutcome.CALLER_DISCONNECTED)
                made.target.send(wire.notification(Method.CANCEL, {"id": made.host_id}))
        if session.local:  # an HTTP request ending: not a worker leaving, nothing to log
            return
        if session.bad_frames > 1:
            self._log.info("Worker %s sent %d bad frames in all", session.worker_id, session.bad_frames)
        self._log.info(
            "Worker %s disconnected (%s); freed %d agent type(s) and %d subscription(s)",
            session.worker_id,
            reason,
            len(session.agent_types),
            len(session.subscription_ids),
        )

    # -- frames -----------------------------------------------------------------------

    def handle_text(self, session: WorkerSession, text: str | bytes) -> WorkerSession | None:
        """Route one text message received from ``session``: a frame or a batch of frames.

        ``text`` is the message's text, or its bytes when they are ASCII (no copy to decode them).

        Never raises: a bad frame is answered with a JSON-RPC error (when it has an id to
        answer) and logged; an unexpected failure is logged and answered with -32603.

        Returns:
            A worker these frames were routed to that is now behind (see ``high_water``):
            the transport should wait for it to catch up before reading more from ``session``.
        """
        if session.worker_id not in self.sessions:
            return None  # the worker said 'bye'; whatever it sends until the socket closes is moot
        session.bytes_in += len(text)
        self._backlog = None
        for frame in wire.decode_message(text):
            session.frames_in += 1
            if isinstance(frame, FrameError):
                self._reject(session, frame)
            else:
                self._route(session, frame)
            if session.worker_id not in self.sessions:
                break  # it said 'bye' within the batch
        return self._backlog

    def _route(self, session: WorkerSession, frame: wire.Frame) -> None:
        try:
            if isinstance(frame, wire.Request):
                self._on_request(session, frame)
            elif isinstance(frame, (wire.Response, wire.ErrorResponse)):
                self._on_response(session, frame)
            elif isinstance(frame, wire.Notification):
                self._on_notification(session, frame)
            else:
                self._on_event(session, frame)
        except FrameError as exc:
            self._reject(session, exc, frame)
        except RecursionError:
            # Nested just deep enough to be read but not written again (see _on_response).
            request_id = frame.id if isinstance(frame, wire.Request) else None
            message = "The frame is nested too deeply to route."
            self._reject(session, FrameError(ErrorCode.INVALID_REQUEST, message, request_id))
        except Exception:
            request_id = frame.id if isinstance(frame, wire.Request) else None
            self._log.exception(
                "Failed to route a frame from worker %s",
                session.worker_id,
                extra=call_extra(request_id, _traceparent(frame)),
            )
            session.send(
                wire.error(request_id, ErrorCode.INTERNAL_ERROR, "Internal error while routing the frame.")
            )

    def _deliver(self, target: WorkerSession, data: bytes) -> None:
        target.send_encoded(data)
        if target.backlogged:
            self._backlog = target

    def handle_binary(self, session: WorkerSession) -> None:
        self._reject(
            session, FrameError(ErrorCode.INVALID_REQUEST, "Binary frames are not supported; send text.")
        )

    def _complain_once(
        self, session: WorkerSession, what: str, *args: object, extra: dict[str, object] | None = None
    ) -> None:
        """Log a worker's misbehaviour at WARNING the first time, at DEBUG after (a flood must
        not flood the log); it counts with its bad frames."""
        session.bad_frames += 1
        if session.bad_frames == 1:
            self._log.warning(
                "Worker %s " + what + " (more from it are logged at DEBUG)",
                session.worker_id,
                *args,
                extra=extra,
            )
        elif self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("Worker %s " + what, session.worker_id, *args, extra=extra)

    def _reject(self, session: WorkerSession, exc: FrameError, frame: wire.Frame | None = None) -> None:
        self.stats.count_error(exc.code, exc.message, session.worker_id, exc.request_id)
        if exc.code <= ErrorCode.INVALID_REQUEST or exc.code in (
            ErrorCode.METHOD_NOT_FOUND,
            ErrorCode.INVALID_PARAMS,
        ):
            extra = call_extra(exc.request_id, _traceparent(frame))
            self._complain_once(session, "sent a bad frame: %s", exc.message, extra=extra)
        elif self._log.isEnabledFor(logging.DEBUG):
            self._log.debug(
                "Call from worker %s failed: %s",
                session.worker_id,
                exc.message,
                extra=call_extra(exc.request_id, _traceparent(frame)),
            )
        session.send(wire.error(exc.request_id, exc.code, exc.message))

    def _on_request(self, session: WorkerSession, req: wire.Request) -> None:
        if req.method == Method.HELLO:
            self._hello(session, req)
            return
        if not session.greeted:
            raise FrameError(ErrorCode.INVALID_REQUEST, "Send 'hello' before any other request.", req.id)
        if req.method in wire.ROUTED_METHODS:
            self._forward(session, req)
        elif req.method == Method.REGISTER_AGENT_TYPE:
            self._register_agent_type(session, req)
        elif req.method == Method.UNREGISTER_AGENT_TYPE:
            agent_type = _params(req, lambda p: wire.required_str(p, "type"))
            if self.agent_types.get(agent_type) is session:
                del self.agent_types[agent_type]
                session.agent_types.discard(agent_type)
            session.send(wire.result(req.id, {}))
        elif req.method == Method.ADD_SUBSCRIPTION:
            self._add_subscription(session, req)
        elif req.method == Method.REMOVE_SUBSCRIPTION:
            self._remove_subscription(session, req)
        elif req.method == Method.BYE:
            session.send(wire.result(req.id, {}))
            self.close_session(session, "said bye")
        else:
            raise FrameError(ErrorCode.METHOD_NOT_FOUND, f"Method '{req.method}' not found.", req.id)

    def _hello(self, session: WorkerSession, req: wire.Request) -> None:
        try:
            protocol = wire.required_str(req.params, "protocol")
            limit = wire.optional_number(req.params, "max_message_size")
        except FrameError as exc:
            exc.request_id = req.id
            raise
        if protocol != PROTOCOL_VERSION:
            raise FrameError(
                ErrorCode.INVALID_REQUEST,
                f"Unsupported protocol {protocol!r}; this host speaks {PROTOCOL_VERSION!r}.",
                req.id,
            )
        if limit is not None:
            if limit < 1024 or limit != int(limit):
                raise FrameError(
                    ErrorCode.INVALID_PARAMS,
                    "'max_message_size' must be a whole number of bytes >= 1024.",
                    req.id,
                )
            session.max_message_size = min(self.max_message_size, int(limit))
        session.batching = req.params.get("batch") is True
        name, instance = req.params.get("name"), req.params.get("instance")
        session.name = name if isinstance(name, str) else ""
        session.instance = instance if isinstance(instance, str) else ""
        if session.instance:
            # A worker reconnecting before the host noticed its old connection die: the new
            # connection replaces the old one, which frees its types for re-registration.
            for old in [
                s for s in self.sessions.values() if s.instance == session.instance and s is not session
            ]:
                old.close(CLOSE_NORMAL, "replaced by a new connection from the same worker")
                self.close_session(old, "replaced by a new connection from the same worker")
        session.greeted = True
        self._log.info(
            "Worker %s connected%s", session.worker_id, f" ({session.name})" if session.name else ""
        )
        session.send(
            wire.result(
                req.id,
                {
                    "protocol": PROTOCOL_VERSION,
                    "worker_id": session.worker_id,
                    "max_message_size": session.max_message_size,
                },
            )
        )

    def _register_agent_type(self, session: WorkerSession, req: wire.Request) -> None:
        agent_type = _params(req, lambda p: wire.required_str(p, "type"))
        if not is_valid_agent_type(agent_type):
            raise FrameError(
                ErrorCode.INVALID_PARAMS,
                f"Invalid agent type {agent_type!r}: use letters, digits, _ - .",
                req.id,
            )
        self._authorize(session, "register", agent_type, req.id)
        owner = self.agent_types.get(agent_type)
        if owner is not None and owner is not session:
            raise FrameError(
                ErrorCode.AGENT_TYPE_CONFLICT,
                f"Agent type '{agent_type}' is already registered by worker {owner.worker_id}.",
                req.id,
            )
        if self._draining:
            raise FrameError(ErrorCode.SHUTTING_DOWN, "The host is shutting down.", req.id)
        self.agent_types[agent_type] = session
        session.agent_types.add(agent_type)
        session.send(wire.result(req.id, {}))

    def _add_subscription(self, session: WorkerSession, req: wire.Request) -> None:
        spec = _params(req, lambda p: wire.subscription_from_wire(p.get("subscription")))
        if not _own_direct_topic(self.access, session, spec):
            self._authorize(session, "subscribe", spec.topic, req.id)
        try:
            self.subscriptions.add(subscription_from_spec(spec))
        except ValueError as exc:
            raise FrameError(ErrorCode.SUBSCRIPTION_EXISTS, str(exc), req.id) from None
        self._subscription_owner[spec.id] = session
        session.subscription_ids.add(spec.id)
        session.send(wire.result(req.id, {}))

    def _remove_subscription(self, session: WorkerSession, req: wire.Request) -> None:
        subscription_id = _params(req, lambda p: wire.required_str(p, "id"))
        if subscription_id not in self.subscriptions:
            raise FrameError(
                ErrorCode.SUBSCRIPTION_NOT_FOUND,
                f"Subscription does not exist: id {subscription_id!r}.",
                req.id,
            )
        if self.access is not None and self._subscription_owner[subscription_id] is not session:
            self._authorize(session, "subscribe", _topic_of(self.subscriptions.get(subscription_id)), req.id)
        self.subscriptions.remove(subscription_id)
        owner = self._subscription_owner.pop(subscription_id)
        owner.subscription_ids.discard(subscription_id)
        session.send(wire.result(req.id, {}))

    def _forward(self, caller: WorkerSession, req: wire.Request) -> None:
        recipient = _params(req, lambda p: wire.required_agent_id(p, "recipient"))
        if self._draining:
            raise FrameError(
                ErrorCode.SHUTTING_DOWN, "The host is shutting down and takes no new calls.", req.id
            )
        if self.access is not None:
            self._authorize(caller, "call", recipient.type, req.id)
            sender = _params(req, lambda p: wire.agent_id_from_wire(p, "sender", optional=True))
            self._verify_sender(caller, sender, req.id)
        self._take_rate(caller, req.id)
        target = self.agent_types.get(recipient.type)
        if target is None:
            raise FrameError(
                ErrorCode.AGENT_NOT_FOUND,
                f"Agent type '{recipient.type}' is not registered: no connected worker serves it.",
                req.id,
            )
        if req.id in caller.calls_made:
            raise FrameError(
                ErrorCode.INVALID_REQUEST, f"Request id {req.id!r} is already in flight.", req.id
            )
        if len(caller.calls_made) >= self.max_calls_in_flight:
            raise FrameError(
                ErrorCode.TOO_MANY_CALLS,
                f"This worker already has {self.max_calls_in_flight} calls in flight; "
                "wait for some to finish.",
                req.id,
            )
        host_id = next(self._ids)
        data = wire.encode_bytes(wire.request(host_id, req.method, req.params))
        size = len(data)
        if size > target.max_message_size:
            raise FrameError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"The message is {size} bytes; the recipient's worker accepts at most "
                f"{target.max_message_size}.",
                req.id,
            )
        call = PendingCall(
            host_id, caller, req.id, target, req.method, time.perf_counter(), req.params.get("traceparent")
        )
        self.stats.calls_routed += 1
        self._pending[host_id] = call
        caller.calls_made[req.id] = host_id
        target.calls_served[host_id] = call
        self._deliver(target, data)

    def _on_response(self, session: WorkerSession, frame: wire.Response | wire.ErrorResponse) -> None:
        call = self._pending.get(frame.id) if isinstance(frame.id, int) else None
        if call is None or call.target is not session:
            if isinstance(frame, wire.ErrorResponse) and frame.id is None:
                self._complain_once(session, "reported error %d: %s", frame.code, frame.message)
            else:
                # Usually a late answer to a call that was cancelled or timed out: expected.
                self._log.debug(
                    "Dropped a response to unknown id %r from worker %s",
                    frame.id,
                    session.worker_id,
                    extra=call_extra(frame.id, None),
                )
            return
        self.stats.call_latency.observe(time.perf_counter() - call.started)
        self.stats.calls_answered += 1
        if isinstance(frame, wire.Response):
            self._finish(call, CallOutcome.OK)
            reply = wire.result(call.caller_id, frame.result)
        else:
            self._finish(call, CallOutcome.ERROR)
            self.stats.count_error(frame.code, frame.message, call.caller.worker_id, call.caller_id)
            reply = wire.error(call.caller_id, frame.code, frame.message, frame.data)
        try:
            data = wire.encode_bytes(reply)
        except RecursionError:
            # json reads as deep as the stack allows, and writing runs a few frames deeper.
            message = "The reply is nested too deeply to forward."
            data = wire.encode_bytes(wire.error(call.caller_id, ErrorCode.MESSAGE_TOO_LARGE, message))
        size = len(data)
        if size > call.caller.max_message_size:
            # Sending it would make the caller's WebSocket close (1009) and fail all its calls.
            self._log.warning(
                "Reply of %d bytes too large for worker %s",
                size,
                call.caller.worker_id,
                extra=call_extra(call.caller_id, call.traceparent, host_request_id=call.host_id),
            )
            message = (
                f"The reply is {size} bytes; the calling worker accepts at most "
                f"{call.caller.max_message_size}."
            )
            data = wire.encode_bytes(wire.error(call.caller_id, ErrorCode.MESSAGE_TOO_LARGE, message))
        self._deliver(call.caller, data)

    def _on_notification(self, session: WorkerSession, note: wire.Notification) -> None:
        if note.method != Method.CANCEL:
            self._complain_once(session, "sent an unknown notification %r", note.method)
            return
        caller_id = note.params.get("id")
        host_id = session.calls_made.get(caller_id) if isinstance(caller_id, (int, str)) else None
        call = self._pending.get(host_id) if host_id is not None else None
        if call is not None:
            self._finish(call, CallOutcome.CANCELLED)
            call.target.send(wire.notification(Method.CANCEL, {"id": call.host_id}))

    def _on_event(self, session: WorkerSession, event: wire.Event) -> None:
        if not session.greeted:
            raise FrameError(ErrorCode.INVALID_REQUEST, "Send 'hello' before publishing.")
        attributes = event.attributes
        attributes.pop(wire.EXT_RECIPIENT, None)
        sender = wire.event_agent(attributes, wire.EXT_SENDER)
        if self.access is not None:
            self._authorize(session, "publish", event.topic_type, None)
            self._verify_sender(session, sender, None)
        self._take_rate(session, None)
        self.stats.events_published += 1
        topic = TopicId(event.topic_type, event.topic_source)
        for recipient in self.subscriptions.recipients(topic):
            if recipient == sender:
                continue
            target = self.agent_types.get(recipient.type)
            if target is None:
                self.stats.event_copies_dropped += 1
                self._log.debug(
                    "No worker serves %s, subscribed to %s; event %s skipped", recipient, topic, event
                )
                continue
            data = wire.encode_bytes(wire.event_for_recipient(attributes, recipient))
            size = len(data)
            if size > target.max_message_size:
                self._log.warning(
                    "Event %s of %d bytes too large for worker %s; not delivered to %s",
                    attributes.get("id"),
                    size,
                    target.worker_id,
                    recipient,
                    extra=call_extra(None, attributes.get("traceparent"), event_id=attributes.get("id")),
                )
                self.stats.event_copies_dropped += 1
                continue
            self.stats.event_copies_delivered += 1
            self._deliver(target, data)

    # -- authorisation ----------------------------------------------------------------

    def _authorize(
        self, session: WorkerSession, action: Action, name: str, request_id: RequestId | None
    ) -> None:
        """Raises: FrameError: ``FORBIDDEN``, the access policy does not allow it."""
        if self.access is None or self.access.allows(session.identity, action, name):
            return
        self._log.warning(
            "Denied: identity %r (worker %s) may not %s %r",
            session.identity.name,
            session.worker_id,
            action,
            name,
        )
        raise FrameError(
            ErrorCode.FORBIDDEN,
            f"Identity '{session.identity.name}' may not {_VERBS[action]} '{name}'.",
            request_id,
        )

    def _verify_sender(
        self, session: WorkerSession, sender: AgentId | None, request_id: RequestId | None
    ) -> None:
        """A session speaks only for its own agents: those whose type it registered.

        An HTTP caller has no agents; it may name a sender whose type its rule lets it register.
        """
        if sender is None:
            return
        if session.local:
            allowed = self.access is not None and self.access.allows(
                session.identity, "register", sender.type
            )
        else:
            allowed = sender.type in session.agent_types
        if not allowed:
            self._log.warning(
                "Denied: identity %r (worker %s) named sender %s, not one of its agents",
                session.identity.name,
                session.worker_id,
                sender,
            )
            raise FrameError(
                ErrorCode.FORBIDDEN,
                f"Sender '{sender}' is not an agent of this caller (identity '{session.identity.name}'): "
                "a caller may only speak for agent types it registered.",
                request_id,
            )

    def _take_rate(self, session: WorkerSession, request_id: RequestId | None) -> None:
        if self.rate_limiter is None or self.rate_limiter.take(session.identity):
            return
        limit = self.rate_limiter.limit
        raise FrameError(
            ErrorCode.TOO_MANY_CALLS,
            f"Identity '{session.identity.name}' is over its rate limit of {limit.rate:g} calls and "
            f"publishes a second (bursts of {limit.burst}); retry later.",
            request_id,
        )

    def _finish(self, call: PendingCall, outcome: str) -> None:
        self.stats.call_outcomes[outcome] += 1
        self._pending.pop(call.host_id, None)
        call.caller.calls_made.pop(call.caller_id, None)
        call.target.calls_served.pop(call.host_id, None)
        if self._drained is not None and not self._pending:
            self._drained.set()

    # -- shutdown ---------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop taking calls, let those in flight finish for up to ``grace`` seconds, then fail the rest.

        Every worker's WebSocket is then closed with code 1001 (going away).
        """
        self._draining = True
        self.stopping.set()
        if self._pending:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout=grace)
            except asyncio.TimeoutError:
                self._log.warning(
                    "%d call(s) still in flight after %.1fs; failing them", len(self._pending), grace
                )
        for call in list(self._pending.values()):
            self._finish(call, CallOutcome.SHUTDOWN)
            call.target.send(wire.notification(Method.CANCEL, {"id": call.host_id}))
            message = "The host shut down before the call completed."
            self.stats.count_error(ErrorCode.SHUTTING_DOWN, message, call.caller.worker_id, call.caller_id)
            call.caller.send(wire.error(call.caller_id, ErrorCode.SHUTTING_DOWN, message))
        for session in list(self.sessions.values()):
            session.close(CLOSE_GOING_AWAY, "host shutting down")

    def describe_agent_types(self) -> dict[str, str]:
        """Each agent type and the worker id serving it, sorted by type."""
        return {agent_type: session.worker_id for agent_type, session in sorted(self.agent_types.items())}


_VERBS: dict[str, str] = {
    "register": "register agent type",
    "call": "call agent type",
    "publish": "publish to topic type",
    "subscribe": "subscribe to topic type",
}


def _own_direct_topic(
    access: AccessPolicy | None, session: WorkerSession, spec: wire.SubscriptionSpec
) -> bool:
    """``RoutedAgent.register`` subscribes each agent type to its direct topics (``"<type>:"``
    prefixed): allowed to whoever may register that type."""
    return (
        access is not None
        and spec.kind == "type_prefix"
        and spec.topic == f"{spec.agent_type}:"
        and access.allows(session.identity, "register", spec.agent_type)
    )


def _topic_of(subscription: Subscription | None) -> str:
    if isinstance(subscription, TypeSubscription):
        return subscription.topic_type
    if isinstance(subscription, TypePrefixSubscription):
        return subscription.topic_type_prefix
    return ""


def _traceparent(frame: wire.Frame | None) -> object:
    """The ``traceparent`` a request or event carries, for log lines about it."""
    if isinstance(frame, wire.Request):
        return frame.params.get("traceparent")
    if isinstance(frame, wire.Event):
        return frame.attributes.get("traceparent")
    return None


def _params(req: wire.Request, read: Callable[[JsonObject], _T]) -> _T:
    """Run a params reader, tagging any FrameError with the request's id."""
    try:
        return read(req.params)
    except FrameError as exc:
        exc.request_id = req.id
        raise
