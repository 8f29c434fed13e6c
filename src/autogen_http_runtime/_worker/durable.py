"""Durable agents (``persist_agent_state=True``): each agent's state kept in the host's store.

Before an agent's first message on this worker (its activation here) the worker asks the
host for the agent's last saved state (``state.load``) and gives it to ``load_state()``;
after each message the agent handles, it sends ``save_state()`` to the host
(``state.save``) with the next version, before the handler's reply, on the same
connection, without waiting for the store's answer. Saves of one agent are made one at a
time, so they leave in version order. docs/durable-agents.md says what a crash can lose.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import asdict, dataclass
from typing import Any

from autogen_core import Agent, AgentId

from .._exceptions import HostConnectionError
from .._logging import OncePerKind
from .._protocol import json_codec as _json
from .._protocol import wire
from .._protocol.params import writer_token
from .._protocol.wire import Method
from .connection import HostConnection


@dataclass
class StateCounts:
    """What this worker's durable agents did since it started (``agent_state_counts()``)."""

    #: Activations that asked the host for a saved state.
    loads: int = 0
    #: Saves the host stored.
    saves: int = 0
    #: Saves refused because the host holds a newer version: another worker saved the id
    #: since; the agent reloads before its next message.
    stale: int = 0
    #: Saves that never reached the store: a state that is not JSON, too large (the host's
    #: ``max_state_size`` or the connection's message limit), the store failing, or no connection.
    failed: int = 0


class AgentStates:
    """Loads and saves the states of one worker's agents through its host.

    Args:
        instance: This worker's instance id (sent in ``hello``): the host records it as the
            writer of the states this worker saves.
        timeout: Seconds an activation waits for the host's answer to ``state.load``.
    """

    def __init__(self, logger: logging.Logger, instance: str, timeout: float) -> None:
        self._log = logger
        self._writer = writer_token(instance)
        self._timeout = timeout
        #: The version of each agent's state this worker last loaded or saved.
        self._versions: dict[AgentId, int] = {}
        #: Who wrote the state each agent's copy here is based on (the loaded state's writer,
        #: then this worker): a save is stored only if that is still who wrote the stored one.
        self._bases: dict[AgentId, str] = {}
        #: Activations under way: other messages for the agent wait for them.
        self._loading: dict[AgentId, asyncio.Future[None]] = {}
        #: Agents whose last save the host refused as stale: reloaded before their next message.
        self._stale: set[AgentId] = set()
        self._saving: dict[AgentId, asyncio.Lock] = {}
        self.counts = StateCounts()
        #: An error the first time for its kind, DEBUG after: a failing store fails every save.
        self._failures = OncePerKind(logger, logging.ERROR, kinds=100)

    def as_dict(self) -> dict[str, int]:
        return asdict(self.counts)

    async def activate(self, connection: HostConnection, agent: Agent) -> None:
        """Give ``agent`` its last saved state, the first time it gets a message here
        (and again after a save of it was refused as stale).

        Raises:
            RuntimeError: The host could not be asked, or the agent's ``load_state`` failed.
        """
        agent_id = agent.id
        if agent_id in self._versions and agent_id not in self._stale:
            return
        loading = self._loading.get(agent_id)
        if loading is not None:
            await asyncio.shield(loading)
            return
        self._loading[agent_id] = loading = connection.loop.create_future()
        try:
            answer = await connection.call(
                Method.STATE_LOAD, {"agent": wire.agent_id_to_wire(agent_id)}, timeout=self._timeout
            )
            self.counts.loads += 1
            if isinstance(answer, dict):
                await agent.load_state(answer["state"])
                self._versions[agent_id] = int(answer["version"])
                writer = answer.get("writer")
                if isinstance(writer, str):
                    self._bases[agent_id] = writer
                else:  # a host that does not say: the newest version wins
                    self._bases.pop(agent_id, None)
            else:
                self._versions.setdefault(agent_id, 0)
                self._bases[agent_id] = ""
            self._stale.discard(agent_id)
        except BaseException as exc:
            failure = RuntimeError(f"Could not restore the saved state of agent {agent_id}: {exc}")
            loading.set_exception(failure)
            loading.exception()  # retrieved: nobody else may be waiting
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise failure from exc
        else:
            loading.set_result(None)
        finally:
            del self._loading[agent_id]

    async def save(self, connection: HostConnection, agent: Agent) -> None:
        """Send ``agent``'s state to the host with the next version; never raises but
        ``CancelledError``: a failure is logged and counted, and the handler's reply goes
        out all the same."""
        agent_id = agent.id
        lock = self._saving.get(agent_id)
        if lock is None:
            lock = self._saving[agent_id] = asyncio.Lock()
        async with lock:
            version = self._versions.get(agent_id, 0) + 1
            try:
                state = _json.readable(dict(await agent.save_state()))
                params: wire.JsonObject = {
                    "agent": wire.agent_id_to_wire(agent_id),
                    "version": version,
                    "state": state,
                }
                base = self._bases.get(agent_id)
                if base is not None:
                    params["base"] = base
                _, answer = connection.start_call(Method.STATE_SAVE, params)
            except Exception as exc:
                self.counts.failed += 1
                self._failures.log(
                    type(exc).__name__,
                    "Did not save the state of agent %s: %s: %s",
                    agent_id,
                    type(exc).__name__,
                    exc,
                )
                return
            self._versions[agent_id] = version
            if agent_id in self._bases:
                self._bases[agent_id] = self._writer
            answer.add_done_callback(functools.partial(self._saved, agent_id, version))

    def _saved(self, agent_id: AgentId, version: int, answer: asyncio.Future[Any]) -> None:
        if answer.cancelled():
            return
        if (exc := answer.exception()) is not None:
            if isinstance(exc, HostConnectionError):
                # The save went out; the connection closed before its answer (a stop, a lost
                # host): whether the store has it, the next activation will tell.
                self._log.debug("No answer to the save of agent %s (version %d): %s", agent_id, version, exc)
                return
            self.counts.failed += 1
            self._failures.log(
                type(exc).__name__, "The host did not store the state of agent %s: %s", agent_id, exc
            )
            return
        result = answer.result()
        if not isinstance(result, dict) or result.get("stored") is True:
            self.counts.saves += 1
            return
        held = result.get("version")
        self.counts.stale += 1
        self._stale.add(agent_id)
        self._log.warning(
            "The host holds a newer state of agent %s (version %s) than this worker saved (%d): "
            "another worker handled it since; reloading it before its next message here",
            agent_id,
            held,
            version,
        )
