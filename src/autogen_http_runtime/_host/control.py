"""The control requests a worker sends its host: hello, agent types and subscriptions. No I/O.

Registrations go to the directory, which answers through a callback: the worker hears
back once the change holds (at once on one host). Descriptions of agent types (their A2A
skills) go to the table beside it (:mod:`.descriptions`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from .._compat import is_valid_agent_type
from .._constants import PROTOCOL_VERSION
from .._exceptions import ErrorCode
from .._protocol import wire
from .._protocol.descriptions import a2a_skill_from_wire
from .._protocol.wire import MessageError
from .descriptions import TypeDescriptions
from .directory import Directory, Done
from .guard import Guard
from .session import CLOSE_NORMAL, WorkerSession


class Control:
    """Answers ``hello``, ``register_agent_type``, ``register_agent_instance``,
    ``unregister_agent_type``, ``describe_agent_type``, ``add_subscription``,
    ``remove_subscription`` and ``drain`` for the routing core.

    Args:
        sessions_of: The worker sessions open for an identity name (for a reconnecting
            worker's hello, and to count an identity's subscriptions).
        max_subscriptions: Subscriptions the workers of one identity may hold at once;
            ``None``: no limit.
        close_session: How the core forgets a session.
        reject: How the core answers a request with an error (counted and logged).
        draining: Whether the host has started shutting down.
    """

    def __init__(
        self,
        directory: Directory,
        descriptions: TypeDescriptions,
        guard: Guard,
        sessions: dict[str, WorkerSession],
        *,
        max_message_size: int,
        max_subscriptions: int | None,
        sessions_of: Callable[[str], Iterable[WorkerSession]],
        close_session: Callable[[WorkerSession, str], None],
        reject: Callable[[WorkerSession, MessageError], None],
        draining: Callable[[], bool],
        logger: logging.Logger,
    ) -> None:
        self._directory = directory
        self._descriptions = descriptions
        self._guard = guard
        self._sessions = sessions
        self._max_message_size = max_message_size
        self.max_subscriptions = max_subscriptions
        self._sessions_of = sessions_of
        self._close_session = close_session
        self._reject = reject
        self._draining = draining
        self._log = logger

    def hello(self, session: WorkerSession, req: wire.Request) -> None:
        with wire.tagged(req.id):
            protocol = wire.required_str(req.params, "protocol")
            limit = wire.optional_number(req.params, "max_message_size")
        if protocol != PROTOCOL_VERSION:
            raise MessageError(
                ErrorCode.INVALID_REQUEST,
                f"Unsupported protocol {protocol!r}; this host speaks {PROTOCOL_VERSION!r}.",
                req.id,
            )
        if limit is not None:
            if limit < 1024 or limit != int(limit):
                raise MessageError(
                    ErrorCode.INVALID_PARAMS,
                    "'max_message_size' must be a whole number of bytes >= 1024.",
                    req.id,
                )
            session.max_message_size = min(self._max_message_size, int(limit))
        name, instance = req.params.get("name"), req.params.get("instance")
        instance = instance if isinstance(instance, str) else ""
        # A worker reconnecting before the host noticed its old connection die: the new
        # connection replaces the old one, which frees its types for re-registration. Only
        # the identity that holds an instance may resume it, or any caller could take over
        # another's worker by naming its instance.
        older = [
            s for s in self._sessions.values() if instance and s.instance == instance and s is not session
        ]
        for old in older:
            if old.identity.name != session.identity.name:
                self._guard.refuse(
                    session,
                    f"instance '{instance}' belongs to another identity: it may not be resumed",
                    f"Instance '{instance}' belongs to another identity; pick an instance of your own.",
                    req.id,
                )
        session.batching = req.params.get("batch") is True
        session.acks = req.params.get("acks") is True
        session.name = name if isinstance(name, str) else ""
        session.instance = instance
        replaced = "replaced by a new connection from the same worker"
        for old in older:
            old.close(CLOSE_NORMAL, replaced)
            self._close_session(old, replaced)
        session.greeted = True

        def done(error: MessageError | None) -> None:
            if error is not None:  # its instance is another identity's, on another host
                session.greeted = False
                error.request_id = req.id
                self._reject(session, error)
                return
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
                        "replicas": self._directory.replicas,
                    },
                )
            )

        self._directory.add_worker(session, done)

    def register_type(self, session: WorkerSession, req: wire.Request) -> None:
        with wire.tagged(req.id):
            agent_type = wire.required_str(req.params, "type")
        if not is_valid_agent_type(agent_type):
            raise MessageError(
                ErrorCode.INVALID_PARAMS,
                f"Invalid agent type {agent_type!r}: use letters, digits, _ - .",
                req.id,
            )
        self._guard.authorize(session, "register", agent_type, req.id)
        _refuse_if_draining(session, req)
        if self._draining():
            raise MessageError(ErrorCode.SHUTTING_DOWN, "The host is shutting down.", req.id)

        def done(error: MessageError | None) -> None:
            if error is not None:
                error.request_id = req.id
                self._reject(session, error)
                return
            replicas = len(self._directory.serving(agent_type))
            if replicas > 1:
                self._log.info(
                    "Worker %s joined the replica set of agent type %r (%d replicas)",
                    session.worker_id,
                    agent_type,
                    replicas,
                )
            # Without replicas the answer stays what it always was: {}.
            answer = {"replicas": replicas} if self._directory.replicas else {}
            session.send(wire.result(req.id, answer))

        self._directory.register_type(session, agent_type, done)

    def register_instance(self, session: WorkerSession, req: wire.Request) -> None:
        with wire.tagged(req.id):
            agent_id = wire.required_agent_id(req.params, "agent")
        self._guard.authorize(session, "register", agent_id.type, req.id)
        self._directory.pin(session, agent_id, self._answer(session, req))

    def unregister_type(self, session: WorkerSession, req: wire.Request) -> None:
        with wire.tagged(req.id):
            agent_type = wire.required_str(req.params, "type")
        self._directory.unregister_type(session, agent_type)
        self._descriptions.forget_type(session, agent_type)
        session.send(wire.result(req.id, {}))

    def describe_type(self, session: WorkerSession, req: wire.Request) -> None:
        with wire.tagged(req.id):
            agent_type = wire.required_str(req.params, "type")
            skill = a2a_skill_from_wire(req.params.get("a2a"))
        if not self._directory.serves(session, agent_type):
            raise MessageError(
                ErrorCode.INVALID_PARAMS,
                f"Agent type {agent_type!r} is not registered by this worker: register it first.",
                req.id,
            )
        self._descriptions.describe(session, agent_type, skill)
        session.send(wire.result(req.id, {}))

    def add_subscription(self, session: WorkerSession, req: wire.Request) -> None:
        with wire.tagged(req.id):
            spec = wire.subscription_from_wire(req.params.get("subscription"))
        self._guard.authorize_subscription(session, spec, req.id)
        _refuse_if_draining(session, req)
        if not (
            spec.kind == "type_prefix"
            and spec.topic == f"{spec.agent_type}:"
            and self._directory.serves(session, spec.agent_type)
        ):
            # A type's own direct-topic subscription (RoutedAgent.register adds one with each
            # type) comes with the type, which takes no token either.
            self._guard.take_rate(session, req.id)
        limit = self.max_subscriptions
        if limit is not None:
            held = sum(len(s.subscription_ids) for s in self._sessions_of(session.identity.name))
            if held >= limit:
                raise MessageError(
                    ErrorCode.TOO_MANY_CALLS,
                    f"Identity '{session.identity.name}' already holds {held} subscriptions, the most "
                    f"one identity may (max_subscriptions); remove some first.",
                    req.id,
                )
        self._directory.add_subscription(session, spec, self._answer(session, req))

    def remove_subscription(self, session: WorkerSession, req: wire.Request) -> None:
        """Any worker of the identity that added a subscription may remove it; nobody else."""
        with wire.tagged(req.id):
            subscription_id = wire.required_str(req.params, "id")
        entry = self._directory.subscription(subscription_id)
        if entry is not None and entry.owner is not session:
            if self._guard.access is not None:
                self._guard.authorize(session, "subscribe", entry.spec.topic, req.id)
            owner = entry.owner
            if isinstance(owner, WorkerSession) and owner.identity.name != session.identity.name:
                self._guard.refuse(
                    session,
                    f"subscription '{subscription_id}' belongs to another identity: it may not be removed",
                    f"Subscription '{subscription_id}' belongs to another identity.",
                    req.id,
                )
        self._directory.remove_subscription(subscription_id, self._answer(session, req))

    def drain(self, session: WorkerSession, req: wire.Request) -> None:
        """The worker is stopping: take it out of placement now, keep its session for its answers.

        Its agent types and subscriptions are freed (another worker may take them at once)
        and nothing new is routed to it; calls already forwarded to it still get its
        answers, and it may still call and publish while its handlers finish. It says
        ``bye`` (or closes) when they have. A second ``drain`` is answered the same way.
        """
        if not session.draining:
            session.draining = True
            self._directory.remove_worker(session)
            # Its departure is logged when it closes; this line matters when it keeps callers waiting.
            self._log.log(
                logging.INFO if session.calls_served else logging.DEBUG,
                "Worker %s is draining: freed %d agent type(s) and %d subscription(s); %d call(s) to finish",
                session.worker_id,
                len(session.agent_types),
                len(session.subscription_ids),
                len(session.calls_served),
            )
        session.send(wire.result(req.id, {}))

    def _answer(self, session: WorkerSession, req: wire.Request) -> Done:
        """The ``done`` of a directory write: answer the request with ``{}`` or the error."""

        def done(error: MessageError | None) -> None:
            if error is None:
                session.send(wire.result(req.id, {}))
            else:
                error.request_id = req.id
                self._reject(session, error)

        return done


def _refuse_if_draining(session: WorkerSession, req: wire.Request) -> None:
    """A draining worker is out of the directory: what it registered now would outlive it there."""
    if session.draining:
        raise MessageError(
            ErrorCode.INVALID_REQUEST,
            "This worker sent 'drain': it can no longer register agent types or add subscriptions.",
            req.id,
        )
