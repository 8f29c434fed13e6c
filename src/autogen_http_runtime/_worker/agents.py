"""The agents one worker serves: factories, registered instances and the agents created so far.

No I/O: the worker runtime decides what the host must hear of; this keeps the local
bookkeeping with the same rules and messages as autogen-core's in-process runtime.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from autogen_core import Agent, AgentId, AgentInstantiationContext, AgentMetadata, AgentRuntime

from .._exceptions import AgentNotFoundError, ErrorCode

T = TypeVar("T", bound=Agent)
AgentFactory = Callable[[], Awaitable[Agent]]
builtin_type = type


class LocalAgents:
    """Agent types served by this worker and their live instances."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self._runtime = runtime
        self._factories: dict[str, AgentFactory] = {}
        self._instance_types: dict[str, type[Agent]] = {}
        self._agents: dict[AgentId, Agent] = {}

    def __contains__(self, agent_type: str) -> bool:
        return agent_type in self._factories

    def types(self) -> list[str]:
        return list(self._factories)

    def add_factory(
        self,
        agent_type: str,
        agent_factory: Callable[[], T | Awaitable[T]],
        expected_class: type[T] | None,
    ) -> None:
        """Raises: ValueError: The type is already registered here."""
        if agent_type in self._factories:
            raise ValueError(f"Agent with type {agent_type} already exists.")

        async def factory_wrapper() -> T:
            maybe_agent = agent_factory()
            agent = await maybe_agent if inspect.isawaitable(maybe_agent) else maybe_agent
            if expected_class is not None and not issubclass(builtin_type(agent), expected_class):
                raise ValueError(
                    f"Factory registered using the wrong type: expected {expected_class.__name__}, "
                    f"got {builtin_type(agent).__name__}"
                )
            return agent

        self._factories[agent_type] = factory_wrapper

    def add_instance_type(self, agent_id: AgentId, agent_instance: Agent) -> bool:
        """Make ``agent_id.type`` a type served by instances; True when the type is new here.

        Raises:
            ValueError: The id is taken, or the type is served by a factory or another class.
        """
        if agent_id in self._agents:
            raise ValueError(f"Agent with id {agent_id} already exists.")
        if agent_id.type not in self._factories:
            self._factories[agent_id.type] = _instance_only_factory
            self._instance_types[agent_id.type] = builtin_type(agent_instance)
            return True
        if self._factories[agent_id.type] is not _instance_only_factory:
            raise ValueError("Agent factories and agent instances cannot be registered to the same type.")
        if self._instance_types[agent_id.type] is not builtin_type(agent_instance):
            raise ValueError("Agent instances must be the same object type.")
        return False

    def add_instance(self, agent_id: AgentId, agent_instance: Agent) -> None:
        self._agents[agent_id] = agent_instance

    def remove_instance(self, agent_id: AgentId) -> None:
        self._agents.pop(agent_id, None)

    def instance_ids(self) -> list[AgentId]:
        """The ids of the agent instances registered here (not those a factory made)."""
        return [agent_id for agent_id in self._agents if agent_id.type in self._instance_types]

    def remove_type(self, agent_type: str) -> None:
        self._factories.pop(agent_type, None)
        self._instance_types.pop(agent_type, None)

    async def close(self, log: logging.Logger) -> None:
        """``close()`` each agent here; each error is logged, and the first raised at the end."""
        first: Exception | None = None
        for agent_id, agent in list(self._agents.items()):
            try:
                await agent.close()
            except Exception as exc:
                log.error("Agent %s failed to close: %r", agent_id, exc)
                first = first or exc
        if first is not None:
            raise first

    async def get(self, agent_id: AgentId) -> Agent:
        """The agent with this id, created by its type's factory on first use.

        Raises:
            AgentNotFoundError: This worker does not serve ``agent_id.type`` (a ``LookupError``).
        """
        agent = self._agents.get(agent_id)
        if agent is not None:
            return agent
        factory = self._factories.get(agent_id.type)
        if factory is None:
            raise AgentNotFoundError(
                f"Agent type '{agent_id.type}' is not registered on this worker.",
                code=ErrorCode.AGENT_NOT_FOUND,
            )
        with AgentInstantiationContext.populate_context((self._runtime, agent_id)):
            agent = await factory()
        self._agents[agent_id] = agent
        return agent

    async def underlying(self, agent_id: AgentId, kind: type[T]) -> T:
        """The agent object itself (``try_get_underlying_agent_instance``).

        Raises:
            LookupError: This worker does not serve ``agent_id.type``.
            TypeError: The agent is not an instance of ``kind``.
        """
        if agent_id.type not in self._factories:
            raise LookupError(f"Agent with name {agent_id.type} not found on this worker.")
        agent = await self.get(agent_id)
        if not isinstance(agent, kind):
            raise TypeError(
                f"Agent with name {agent_id.type} is not of type {kind.__name__}. "
                f"It is of type {builtin_type(agent).__name__}"
            )
        return agent

    async def metadata(self, agent_id: AgentId) -> AgentMetadata:
        return (await self.get(agent_id)).metadata

    async def save_agent(self, agent_id: AgentId) -> Mapping[str, Any]:
        return await (await self.get(agent_id)).save_state()

    async def load_agent(self, agent_id: AgentId, state: Mapping[str, Any]) -> None:
        await (await self.get(agent_id)).load_state(state)

    async def save_all(self) -> dict[str, dict[str, Any]]:
        """The state of every agent created so far, keyed by ``str(agent_id)``."""
        return {
            str(agent_id): dict(await agent.save_state()) for agent_id, agent in list(self._agents.items())
        }

    async def load_all(self, state: Mapping[str, Any]) -> None:
        """Load state saved by :meth:`save_all` into the agents of the types served here."""
        for agent_id_str, agent_state in state.items():
            agent_id = AgentId.from_str(agent_id_str)
            if agent_id.type in self._factories:
                await self.load_agent(agent_id, agent_state)


async def _instance_only_factory() -> Agent:
    raise RuntimeError(
        "Agent factory was invoked for an agent instance that was not registered. This is likely due to "
        "the agent type being incorrectly subscribed to a topic. If this exception occurs when publishing "
        "a message to the DefaultTopicId, then it is likely that `skip_class_subscriptions` needs to be "
        "turned off when registering the agent."
    )
