"""The control requests a worker sends its host: hello, agent types and subscriptions. No I/O.

Registrations go to the directory, which answers through a callback: the worker hears
back once the change holds (at once on one host). Descriptions of agent types (their A2A
skills) go to the table beside it (:mod:`.descriptions`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

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
    """Answers ``hello``, ``register_agent_type``, ``unregister_agent_type``, ``describe_agent_type``,
    ``add_subscription`` and ``remove_subscription`` for the routing core.

    Args:
        sessions: Every session the core has open, by id (for a reconnecting worker's hello).
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
        session.batching = req.params.get("batch") is True
        name, instance = req.params.get("name"), req.params.get("instance")
        session.name = name if isinstance(name, str) else ""
        session.instance = instance if isinstance(instance, str) else ""
        if session.instance:
            # A worker reconnecting before the host noticed its old connection die: the new
            # connection replaces the old one, which frees its types for re-registration.
            replaced = "replaced by a new connection from the same worker"
            for old in [
                s for s in self._sessions.values() if s.instance == session.instance and s is not session
            ]:
                old.close(CLOSE_NORMAL, replaced)
                self._close_session(old, replaced)
        session.greeted = True
        self._directory.add_worker(session)
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
        if self._draining():
            raise MessageError(ErrorCode.SHUTTING_DOWN, "The host is shutting down.", req.id)
        self._directory.register_type(session, agent_type, self._answer(session, req))

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
        self._directory.add_subscription(session, spec, self._answer(session, req))

    def remove_subscription(self, session: WorkerSession, req: wire.Request) -> None:
        with wire.tagged(req.id):
            subscription_id = wire.required_str(req.params, "id")
        entry = self._directory.subscription(subscription_id)
        if entry is not None and self._guard.access is not None and entry.owner is not session:
            self._guard.authorize(session, "subscribe", entry.spec.topic, req.id)
        self._directory.remove_subscription(subscription_id, self._answer(session, req))

    def _answer(self, session: WorkerSession, req: wire.Request) -> Done:
        """The ``done`` of a directory write: answer the request with ``{}`` or the error."""

        def done(error: MessageError | None) -> None:
            if error is None:
                session.send(wire.result(req.id, {}))
            else:
                error.request_id = req.id
                self._reject(session, error)

        return done
