"""A durable worker process that serves the participants of round-robin teams, as a replica.

Usage: ``python -m tests.procs.team_member URL``; then, on stdin, one ``TEAM <team id>``
line per team: the worker registers that team's participants (not its manager, which
stays with the worker running the team) and prints ``JOINED <team id>``. It prints
``READY`` once connected, and serves until killed.

The participants' models answer by turn: the reply is the script's entry for the number
of replies the agent has given before, read from the conversation it is sent. So an
agent restored from its saved state elsewhere answers what it would have answered here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import AgentRuntime, CancellationToken, TypeSubscription
from autogen_core.models import AssistantMessage, CreateResult, LLMMessage
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models.replay import ReplayChatCompletionClient

from autogen_http_runtime import HttpWorkerAgentRuntime

from . import say

WRITER = ["draft one", "draft two", "draft three"]
CRITIC = ["too short", "APPROVE", "APPROVE again"]


class TurnClient(ReplayChatCompletionClient):
    """A replay client whose position is the conversation's, not its own: the n-th reply
    of its agent is ``script[n]``. ``gate``, if given, is awaited before reply ``gated_at``."""

    def __init__(self, script: list[str], gate: asyncio.Event | None = None, gated_at: int = 0) -> None:
        super().__init__(list(script))
        self.gate = gate
        self.gated_at = gated_at
        #: Set when the reply at ``gated_at`` is asked for (and waits on ``gate``).
        self.waiting = asyncio.Event()

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Any = "auto",
        json_output: Any = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        turn = sum(1 for message in messages if isinstance(message, AssistantMessage))
        if self.gate is not None and turn == self.gated_at:
            self.waiting.set()
            await self.gate.wait()
        self._current_index = turn
        return await super().create(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )


def turn_team(
    runtime: AgentRuntime | None, writer: TurnClient | None = None, critic: TurnClient | None = None
) -> RoundRobinGroupChat:
    """Two assistants taking turns until one says APPROVE, their models answering by turn."""
    return RoundRobinGroupChat(
        [
            AssistantAgent("writer", model_client=writer or TurnClient(WRITER), system_message="You write."),
            AssistantAgent(
                "critic", model_client=critic or TurnClient(CRITIC), system_message="You criticize."
            ),
        ],
        termination_condition=TextMentionTermination("APPROVE") | MaxMessageTermination(10),
        runtime=runtime,
    )


async def join_team(runtime: HttpWorkerAgentRuntime, team_id: str) -> None:
    """Register the participants of team ``team_id`` here (AgentChat 0.7's ``_init`` without its manager)."""
    from autogen_agentchat.teams._group_chat._chat_agent_container import ChatAgentContainer

    team: Any = turn_team(runtime)
    team._team_id = team_id
    team._group_topic_type = f"group_topic_{team_id}"
    team._output_topic_type = f"output_topic_{team_id}"
    team._participant_topic_types = [f"{p.name}_{team_id}" for p in team._participants]
    for participant, agent_type in zip(team._participants, team._participant_topic_types, strict=True):
        factory = team._create_participant_factory(
            team._group_topic_type, team._output_topic_type, participant, team._message_factory
        )
        await ChatAgentContainer.register(runtime, type=agent_type, factory=factory)
        await runtime.add_subscription(TypeSubscription(topic_type=agent_type, agent_type=agent_type))
        await runtime.add_subscription(
            TypeSubscription(topic_type=team._group_topic_type, agent_type=agent_type)
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    args = parser.parse_args()
    runtime = HttpWorkerAgentRuntime(args.url, name="member", persist_agent_state=True)
    await runtime.start()
    say("READY")
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command, _, team_id = line.strip().partition(" ")
        if command == "TEAM":
            await join_team(runtime, team_id)
            say(f"JOINED {team_id}")


if __name__ == "__main__":
    asyncio.run(main())
