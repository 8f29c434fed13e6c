"""The host's routing core: sessions in, messages routed, answers out. No web framework, no sockets.

A :class:`~.transport.Transport` hands the core what a peer sends (:meth:`RoutingCore.handle_text`
for a WebSocket message, :meth:`RoutingCore.handle_messages` for messages already decoded)
and carries back what the core queues in the peer's session. Handling is synchronous and
never awaits, so the messages of one peer are routed in the order they arrived and no lock
is needed. Who serves what is the :class:`~.directory.Directory`'s business; calls in
flight are :mod:`.calls`', events :mod:`.events`', registrations :mod:`.control`'s.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable

from .._constants import (
    DEFAULT_HIGH_WATER,
    DEFAULT_MAX_CALLS_IN_FLIGHT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_SUBSCRIPTIONS,
    HOST_LOGGER,
)
from .._exceptions import ErrorCode
from .._logging import call_extra
from .._protocol import wire
from .._protocol.wire import MessageError, Method
from .calls import CallTable
from .control import Control
from .descriptions import TypeDescriptions
from .directory import Directory, LocalDirectory
from .events import EventFanOut
from .guard import Guard
from .relay import HostRelay
from .security import ANONYMOUS, AccessPolicy, Identity, RateLimiter
from .session import CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION, WorkerSession
from .state import DEFAULT_MAX_STATE_SIZE, StateStore
from .state_calls import STATE_METHODS, StateCalls
from .stats import RouterStats


class RoutingCore:
    """Routes messages between the peers of one host.

    Args:
        max_message_size: The largest message, in bytes, the host reads and forwards.
        max_queued_bytes: Bytes the host may queue for one worker before dropping it as too slow.
        max_calls_in_flight: Calls one worker may have in flight through the host.
        access: Per-identity authorisation, also turning on sender verification; ``None``
            lets every session do everything.
        rate_limiter: Per-identity token buckets for calls, publishes and new subscriptions;
            ``None``: no limit.
        max_subscriptions: Subscriptions the workers of one identity may hold at once;
            ``None``: no limit.
        directory: Who serves what; a :class:`LocalDirectory` (this host alone) by default.
        state_store: Where durable agents' states go; in this process's memory by default.
        max_state_size: The largest state stored for one agent id, in bytes of JSON.
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
        max_subscriptions: int | None = DEFAULT_MAX_SUBSCRIPTIONS,
        directory: Directory | None = None,
        state_store: StateStore | None = None,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
        logger: logging.Logger | None = None,
    ) -> None:
        self._log = logger or logging.getLogger(HOST_LOGGER)
        self.max_message_size = max_message_size
        # Room for at least two of the largest messages, or no large one could ever pass.
        self.max_queued_bytes = max(max_queued_bytes, 2 * max_message_size)
        self.high_water = min(DEFAULT_HIGH_WATER, self.max_queued_bytes // 2)
        self.stats = RouterStats()
        self.directory: Directory = directory or LocalDirectory()
        #: How the workers describe the types they serve (A2A skills): beside the directory.
        self.descriptions = TypeDescriptions()
        self.guard = Guard(access, rate_limiter, self._log)
        self.sessions: dict[str, WorkerSession] = {}
        #: The worker sessions (not HTTP requests) of each identity name.
        self._by_identity: dict[str, set[WorkerSession]] = {}
        self.calls = CallTable(
            self.directory, self.guard, self.stats, max_calls_in_flight=max_calls_in_flight, logger=self._log
        )
        self._events = EventFanOut(self.directory, self.guard, self.stats, self._log)
        self._control = Control(
            self.directory,
            self.descriptions,
            self.guard,
            self.sessions,
            max_message_size=max_message_size,
            max_subscriptions=max_subscriptions,
            sessions_of=self.sessions_of,
            close_session=self.close_session,
            reject=self._reject,
            draining=lambda: self._draining,
            logger=self._log,
        )
        self.state = StateCalls(self.directory, self._log, store=state_store, max_state_size=max_state_size)
        #: What the other hosts of a cluster send this one (in a cluster only).
        self.relay = HostRelay(
            self.sessions,
            self.calls,
            self.stats,
            here=self.directory.host,
            reject=self._reject,
            complain=self._complain_once,
            logger=self._log,
        )
        self.relay.hand_over = self._events.hand_over
        self._draining = False
        #: Set when the host starts shutting down: long-lived streams (the dashboard's) end on it.
        self.stopping = asyncio.Event()

    # -- sessions ---------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return not self._draining

    @property
    def access(self) -> AccessPolicy | None:
        return self.guard.access

    @property
    def rate_limiter(self) -> RateLimiter | None:
        return self.guard.rate_limiter

    @property
    def pending_calls(self) -> int:
        return len(self.calls)

    @property
    def max_subscriptions(self) -> int | None:
        return self._control.max_subscriptions

    def open_session(self, *, local: str = "", identity: Identity = ANONYMOUS) -> WorkerSession:
        """A session for a new peer.

        Args:
            local: For a caller inside the host process (an HTTP request), its name: the
                session needs no ``hello``, is never listed as a worker, gets the messages
                themselves in its outbox (not their text), and is closed by whoever opened it
                with :meth:`close_session`.
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
        if not session.local:
            self._by_identity.setdefault(identity.name, set()).add(session)
        return session

    def sessions_of(self, identity: str) -> list[WorkerSession]:
        """The worker sessions (HTTP requests aside) open for the identity named ``identity``."""
        return list(self._by_identity.get(identity, ()))

    def cut_off(self, session: WorkerSession, reason: str) -> None:
        """Close a worker's connection now (1008) and forget it: its credentials were revoked
        or expired. What it has not read is dropped; the calls it serves fail at once."""
        session.cut(CLOSE_POLICY_VIOLATION, reason)
        self.close_session(session, reason)

    def close_session(self, session: WorkerSession, reason: str = "disconnected") -> None:
        """Forget a peer: free its agent types and subscriptions, fail the calls it served."""
        if self.sessions.pop(session.worker_id, None) is None:
            return
        session.closed = True
        session.release_senders()  # a sender held back for it would wait for nothing
        if not session.local:
            same = self._by_identity.get(session.identity.name)
            if same is not None:
                same.discard(session)
                if not same:
                    del self._by_identity[session.identity.name]
            self.stats.count_closed(session)
            if not session.draining:  # a draining worker has left the directory already
                self.directory.remove_worker(session)
            self.descriptions.forget_worker(session)
        self.calls.session_closed(session, reason)
        if session.local:  # an HTTP request ending: not a worker leaving, nothing to log
            return
        if session.bad_frames > 1:
            self._log.info("Worker %s sent %d bad frames in all", session.worker_id, session.bad_frames)
        if session.draining:
            self._log.info("Worker %s disconnected (%s) after draining", session.worker_id, reason)
            return
        self._log.info(
            "Worker %s disconnected (%s); freed %d agent type(s) and %d subscription(s)",
            session.worker_id,
            reason,
            len(session.agent_types),
            len(session.subscription_ids),
        )

    # -- messages ---------------------------------------------------------------------

    def handle_text(self, session: WorkerSession, text: str | bytes) -> WorkerSession | None:
        """Route one WebSocket message received from ``session``: a message or a batch of them.

        ``text`` is the message's text, or its bytes when they are ASCII (no copy to decode them).

        Never raises: a bad message is answered with a JSON-RPC error (when it has an id to
        answer) and logged; an unexpected failure is logged and answered with -32603.

        Returns:
            A worker these messages were routed to that is now behind (see ``high_water``):
            the transport should wait for it to catch up before reading more from ``session``.
        """
        if session.worker_id not in self.sessions:
            return None  # the worker said 'bye'; whatever it sends until the socket closes is moot
        session.bytes_in += len(text)
        return self.handle_messages(session, wire.decode_batch(text))

    def handle_messages(
        self, session: WorkerSession, messages: Iterable[wire.Message | MessageError]
    ) -> WorkerSession | None:
        """Route messages already decoded (an HTTP request's); see :meth:`handle_text`."""
        behind: WorkerSession | None = None
        for message in messages:
            if session.worker_id not in self.sessions:
                break  # it said 'bye' within the batch
            session.frames_in += 1
            if isinstance(message, MessageError):
                self._reject(session, message)
            else:
                behind = self._route(session, message) or behind
        return behind

    def handle_binary(self, session: WorkerSession) -> None:
        self._reject(
            session, MessageError(ErrorCode.INVALID_REQUEST, "Binary frames are not supported; send text.")
        )

    def _route(self, session: WorkerSession, message: wire.Message) -> WorkerSession | None:
        try:
            if isinstance(message, wire.Request):
                return self._on_request(session, message)
            if isinstance(message, (wire.Response, wire.ErrorResponse)):
                self._on_response(session, message)
                return None
            if isinstance(message, wire.Notification):
                self._on_notification(session, message)
                return None
            return self._events.publish(session, message)
        except MessageError as exc:
            self._reject(session, exc, message)
        except RecursionError:
            # Nested just deep enough to be read but not written again (see CallTable.answer).
            request_id = message.id if isinstance(message, wire.Request) else None
            text = "The frame is nested too deeply to route."
            self._reject(session, MessageError(ErrorCode.INVALID_REQUEST, text, request_id))
        except Exception:
            request_id = message.id if isinstance(message, wire.Request) else None
            self._log.exception(
                "Failed to route a frame from worker %s",
                session.worker_id,
                extra=call_extra(request_id, _traceparent(message)),
            )
            session.send(
                wire.error(request_id, ErrorCode.INTERNAL_ERROR, "Internal error while routing the frame.")
            )
        return None

    def _on_request(self, session: WorkerSession, req: wire.Request) -> WorkerSession | None:
        control = self._control
        if req.method == Method.HELLO:
            control.hello(session, req)
            return None
        if not session.greeted:
            raise MessageError(ErrorCode.INVALID_REQUEST, "Send 'hello' before any other request.", req.id)
        if req.method in wire.ROUTED_METHODS:
            if self._draining:
                raise MessageError(
                    ErrorCode.SHUTTING_DOWN, "The host is shutting down and takes no new calls.", req.id
                )
            try:
                return self.calls.forward(session, req)
            except MessageError as exc:
                # In a cluster, the type may have been registered on another host a moment ago:
                # route the call again once this host's view has caught up, rather than fail it.
                if exc.code == ErrorCode.AGENT_NOT_FOUND and self.directory.catch_up(
                    lambda: self._forward_late(session, req)
                ):
                    return None
                raise
        if req.method == Method.REGISTER_AGENT_TYPE:
            control.register_type(session, req)
        elif req.method == Method.REGISTER_AGENT_INSTANCE:
            control.register_instance(session, req)
        elif req.method == Method.UNREGISTER_AGENT_TYPE:
            control.unregister_type(session, req)
        elif req.method == Method.DESCRIBE_AGENT_TYPE:
            control.describe_type(session, req)
        elif req.method == Method.ADD_SUBSCRIPTION:
            control.add_subscription(session, req)
        elif req.method == Method.REMOVE_SUBSCRIPTION:
            control.remove_subscription(session, req)
        elif req.method in STATE_METHODS:
            self.state.handle(session, req)
        elif req.method == Method.DRAIN:
            control.drain(session, req)
        elif req.method == Method.BYE:
            session.send(wire.result(req.id, {}))
            self.close_session(session, "said bye")
        else:
            raise MessageError(ErrorCode.METHOD_NOT_FOUND, f"Method '{req.method}' not found.", req.id)
        return None

    def _forward_late(self, session: WorkerSession, req: wire.Request) -> None:
        """Route a call again after the directory caught up (see :meth:`Directory.catch_up`)."""
        if session.worker_id not in self.sessions:
            return  # the caller left meanwhile
        try:
            self.calls.forward(session, req)
        except MessageError as exc:
            self._reject(session, exc, req)

    def _on_response(self, session: WorkerSession, frame: wire.Response | wire.ErrorResponse) -> None:
        call = self.calls.served_by(session, frame.id)
        if call is not None:
            self.calls.answer(call, frame)
            return
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

    @property
    def events(self) -> EventFanOut:
        return self._events

    def _on_notification(self, session: WorkerSession, note: wire.Notification) -> None:
        if note.method == Method.EVENT_ACK:
            self._events.acknowledged(session, note.params)
            return
        if note.method != Method.CANCEL:
            self._complain_once(session, "sent an unknown notification %r", note.method)
            return
        self.calls.cancel(session, note.params.get("id"))

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

    def _reject(self, session: WorkerSession, exc: MessageError, message: wire.Message | None = None) -> None:
        self.stats.count_error_for(session, exc.code, exc.message, exc.request_id)
        if exc.code <= ErrorCode.INVALID_REQUEST or exc.code in (
            ErrorCode.METHOD_NOT_FOUND,
            ErrorCode.INVALID_PARAMS,
        ):
            extra = call_extra(exc.request_id, _traceparent(message))
            self._complain_once(session, "sent a bad frame: %s", exc.message, extra=extra)
        elif self._log.isEnabledFor(logging.DEBUG):
            self._log.debug(
                "Call from worker %s failed: %s",
                session.worker_id,
                exc.message,
                extra=call_extra(exc.request_id, _traceparent(message)),
            )
        session.send(wire.error(exc.request_id, exc.code, exc.message, exc.data))

    # -- shutdown ---------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Stop taking calls, let those in flight finish for up to ``grace`` seconds, then fail the rest.

        Every worker's WebSocket is then closed with code 1001 (going away).
        """
        self._draining = True
        self.stopping.set()
        await self.calls.drain(grace)
        for session in list(self.sessions.values()):
            session.close(CLOSE_GOING_AWAY, "host shutting down")


def _traceparent(message: wire.Message | None) -> object:
    """The ``traceparent`` a request or event carries, for log lines about it."""
    if isinstance(message, wire.Request):
        return message.params.get("traceparent")
    if isinstance(message, wire.Event):
        return message.attributes.get("traceparent")
    return None
