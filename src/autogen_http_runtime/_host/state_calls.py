"""The host's side of durable agents: ``state.load`` and ``state.save`` from a worker.

A worker with ``persist_agent_state=True`` loads an agent's last state before the agent's
first message there, and saves it after each message (docs/durable-agents.md). The core
hands the requests here synchronously; each runs against the :class:`~.state.StateStore`
in a task of its own and is answered when the store is; with a store whose operations
never wait (``immediate``: memory, files), at once; with one that queues them in order
(``QueuedStateStore``: Redis), when the future it gives is done, with no task. The
operations on one agent id take effect one at a time, in the order they arrived at this
host, so a load never overtakes a save sent before it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from .._exceptions import ErrorCode
from .._protocol import json_codec as _json
from .._protocol import wire
from .._protocol.params import writer_token
from .._protocol.wire import MessageError, Method
from .directory import Directory
from .session import WorkerSession
from .state import (
    DEFAULT_MAX_STATE_SIZE,
    MemoryStateStore,
    QueuedStateStore,
    SaveOutcome,
    StateStore,
    StateStoreError,
    StoredState,
)

T = TypeVar("T")
R = TypeVar("R")

#: The methods this module answers.
STATE_METHODS = frozenset({Method.STATE_LOAD, Method.STATE_SAVE})


@dataclass
class StateStats:
    """Counts of ``autogen_http_state_*`` in ``/metrics``."""

    loads: int = 0
    #: Loads that found a state (the rest found none: the agent's first activation anywhere).
    loads_found: int = 0
    saves: int = 0
    #: Saves refused because the store holds a newer version (another worker saved since).
    refused_stale: int = 0
    #: Saves refused as larger than ``max_state_size``.
    refused_too_large: int = 0
    #: Loads and saves the store failed (disk, Redis, memory full).
    failures: int = 0


class StateCalls:
    """Answers ``state.load`` and ``state.save`` against ``store``.

    Args:
        store: Where states are kept; a :class:`MemoryStateStore` by default.
        directory: Who serves what: a worker may load and save only ids of types it serves.
        max_state_size: The largest state stored, in bytes of JSON text.
    """

    def __init__(
        self,
        directory: Directory,
        logger: logging.Logger,
        *,
        store: StateStore | None = None,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
    ) -> None:
        self.store: StateStore = store if store is not None else MemoryStateStore()
        self.max_state_size = max_state_size
        self.stats = StateStats()
        self._directory = directory
        self._log = logger
        #: The last operation queued for each agent id: the next waits for it.
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: The store's operations never wait: each is run to its end as it arrives, no task.
        self._immediate = bool(getattr(self.store, "immediate", False))
        #: The store queues operations in order as they start: no task each, its futures followed.
        self._queued = self.store if isinstance(self.store, QueuedStateStore) else None
        self._pending: set[asyncio.Future[Any]] = set()
        self._warned_failure = False

    def handle(self, session: WorkerSession, req: wire.Request) -> None:
        """Check a ``state.*`` request and start it; answered once the store has done it.

        Raises:
            MessageError: The params are wrong, or the worker does not serve the agent's type.
        """
        with wire.tagged(req.id):
            agent = wire.required_agent_id(req.params, "agent")
        # A draining worker has left the directory, but the handlers it is finishing still
        # save the states of the types it served.
        if not (
            self._directory.serves(session, agent.type)
            or (session.draining and agent.type in session.agent_types)
        ):
            raise MessageError(
                ErrorCode.INVALID_PARAMS,
                f"Agent type {agent.type!r} is not registered by this worker: it may not load or save "
                f"the state of {agent}.",
                req.id,
            )
        key = f"{agent.type}/{agent.key}"
        queued = self._queued
        if req.method == Method.STATE_LOAD:
            if queued is not None:
                self._follow(session, req, key, lambda: queued.start_load(key), self._loaded)
            else:
                self._start(session, req, key, lambda: self._load(key))
            return
        version, state, base = req.params.get("version"), req.params.get("state"), req.params.get("base")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise MessageError(ErrorCode.INVALID_PARAMS, "'version' must be an integer >= 1.", req.id)
        if base is not None and (not isinstance(base, str) or len(base) > 200):
            raise MessageError(ErrorCode.INVALID_PARAMS, "'base' must be a string (a writer's id).", req.id)
        if not isinstance(state, dict):
            raise MessageError(ErrorCode.INVALID_PARAMS, "'state' must be an object.", req.id)
        text = _json.dumps(state)
        if len(text) > self.max_state_size:
            self.stats.refused_too_large += 1
            raise MessageError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"The state of {agent} is {len(text)} bytes; the host stores at most "
                f"{self.max_state_size} (max_state_size).",
                req.id,
            )
        # The writer is this connection's worker as the host knows it: the worker cannot choose it.
        writer = writer_token(session.instance or session.worker_id)
        if queued is not None:
            self._follow(
                session, req, key, lambda: queued.start_save(key, version, text, writer, base), self._saved
            )
        else:
            self._start(session, req, key, lambda: self._save(key, version, text, writer, base))

    async def _load(self, key: str) -> Any:
        return self._loaded(await self.store.load(key))

    async def _save(self, key: str, version: int, text: str, writer: str, base: str | None) -> Any:
        return self._saved(await self.store.save(key, version, text, writer, base))

    def _loaded(self, stored: StoredState | None) -> Any:
        self.stats.loads += 1
        if stored is None:
            return None
        self.stats.loads_found += 1
        return {"version": stored.version, "state": _json.loads(stored.state), "writer": stored.writer}

    def _saved(self, outcome: SaveOutcome) -> Any:
        if outcome.stored:
            self.stats.saves += 1
        else:
            self.stats.refused_stale += 1
        return {"stored": outcome.stored, "version": outcome.version}

    def _follow(
        self,
        session: WorkerSession,
        req: wire.Request,
        key: str,
        start: Callable[[], asyncio.Future[R]],
        answer: Callable[[R], Any],
    ) -> None:
        """Start an operation of a queued store, and answer when its future is done."""
        try:
            future = start()
        except Exception as exc:
            self._failed_with(session, req, key, exc)
            return
        self._pending.add(future)
        future.add_done_callback(functools.partial(self._answer, session, req, key, answer))

    def _answer(
        self,
        session: WorkerSession,
        req: wire.Request,
        key: str,
        answer: Callable[[R], Any],
        future: asyncio.Future[R],
    ) -> None:
        self._pending.discard(future)
        if future.cancelled():
            self._failed(session, req, "the operation was cancelled")
            return
        try:
            result = answer(future.result())
        except Exception as exc:
            self._failed_with(session, req, key, exc)
        else:
            session.send(wire.result(req.id, result))

    def _failed_with(self, session: WorkerSession, req: wire.Request, key: str, exc: Exception) -> None:
        if not isinstance(exc, StateStoreError):  # a bug or an unexpected library error
            self._log.error("State %s of %s failed", req.method, key, exc_info=exc)
        self._failed(
            session, req, str(exc) if isinstance(exc, StateStoreError) else f"{type(exc).__name__}: {exc}"
        )

    def _start(
        self,
        session: WorkerSession,
        req: wire.Request,
        key: str,
        operation: Callable[[], Coroutine[Any, Any, T]],
    ) -> None:
        if self._immediate:
            self._run_now(session, req, key, operation)
            return
        loop = asyncio.get_running_loop()
        before = self._tails.get(key)
        tail: asyncio.Future[None] = loop.create_future()
        self._tails[key] = tail
        task = loop.create_task(self._run(session, req, key, operation, before, tail))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _run_now(
        self,
        session: WorkerSession,
        req: wire.Request,
        key: str,
        operation: Callable[[], Coroutine[Any, Any, T]],
    ) -> None:
        # The answer goes out with what else this turn of the event loop sends the worker.
        coroutine = operation()
        try:
            coroutine.send(None)
        except StopIteration as done:
            session.send(wire.result(req.id, done.value))
            return
        except Exception as exc:
            self._failed_with(session, req, key, exc)
            return
        coroutine.close()
        self._log.error(
            "State store %s says it is immediate, but waited: fix its `immediate`", self.store.where
        )
        self._failed(session, req, "the store waited")

    async def _run(
        self,
        session: WorkerSession,
        req: wire.Request,
        key: str,
        operation: Callable[[], Coroutine[Any, Any, T]],
        before: asyncio.Future[None] | None,
        tail: asyncio.Future[None],
    ) -> None:
        try:
            if before is not None:
                await asyncio.shield(before)  # cancelling this task must not cancel the one before
            answer = await operation()
        except StateStoreError as exc:
            self._failed(session, req, str(exc))
        except Exception as exc:  # a bug or an unexpected library error: the worker still hears
            self._log.exception("State %s of %s failed", req.method, key)
            self._failed(session, req, f"{type(exc).__name__}: {exc}")
        else:
            session.send(wire.result(req.id, answer))
        finally:
            if not tail.done():
                tail.set_result(None)
            if self._tails.get(key) is tail:
                del self._tails[key]

    def _failed(self, session: WorkerSession, req: wire.Request, why: str) -> None:
        self.stats.failures += 1
        # Logged at WARNING once, then at DEBUG: a store that is down fails every save.
        level = logging.DEBUG if self._warned_failure else logging.WARNING
        self._warned_failure = True
        self._log.log(level, "State store %s failed a %s: %s", self.store.where, req.method, why)
        # Answered here, not through the core's reject: the worker sent nothing wrong.
        session.send(wire.error(req.id, ErrorCode.INTERNAL_ERROR, f"The state store failed: {why}"))

    async def close(self, timeout: float = 2.0) -> None:
        """Let the operations under way finish (up to ``timeout`` seconds), then close the store."""
        if self._tasks or self._pending:
            await asyncio.wait([*self._tasks, *self._pending], timeout=timeout)
        await self.store.close()
