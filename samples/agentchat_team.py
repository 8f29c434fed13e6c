"""An AgentChat team on a worker: the team's code is AgentChat's own, plus ``runtime=``.

    python samples/agentchat_team.py [--host-address 127.0.0.1:9000]

Without --host-address it starts its own host on a free port. The models are scripted
(``ReplayChatCompletionClient``), so it needs no API key and prints the same every time::

    user: Write a haiku about agents on many machines.
    poet: Many hosts, one team / words cross the wire and come back / nothing is lost.
    critic: Too long. Shorter, please.
    poet: One socket each / the host routes every word / the team never knows.
    critic: APPROVE
    stop reason: Text 'APPROVE' mentioned

Swap in a real model client (e.g. ``OpenAIChatCompletionClient``) and run the worker
wherever the host can be reached; no serializers need registering.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.replay import ReplayChatCompletionClient

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime


async def main(host_address: str | None) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if host_address is None:
            server = await stack.enter_async_context(HttpAgentServer(port=0))
            host_address = server.url

        worker = HttpWorkerAgentRuntime(host_address)
        await worker.start()
        stack.push_async_callback(worker.stop)

        poet = AssistantAgent(
            "poet",
            model_client=ReplayChatCompletionClient(
                [
                    "Many hosts, one team / words cross the wire and come back / nothing is lost.",
                    "One socket each / the host routes every word / the team never knows.",
                ]
            ),
            system_message="You write haiku.",
        )
        critic = AssistantAgent(
            "critic",
            model_client=ReplayChatCompletionClient(["Too long. Shorter, please.", "APPROVE"]),
            system_message="You review haiku. Say APPROVE when it is good.",
        )
        # The only change from an in-process team: runtime=worker.
        team = RoundRobinGroupChat(
            [poet, critic],
            termination_condition=TextMentionTermination("APPROVE") | MaxMessageTermination(10),
            runtime=worker,
        )
        result = await asyncio.wait_for(
            team.run(task="Write a haiku about agents on many machines."), timeout=30
        )
        for message in result.messages:
            print(f"{message.source}: {message.to_text()}")
        print(f"stop reason: {result.stop_reason}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host-address", help="use this host instead of starting one")
    asyncio.run(main(parser.parse_args().host_address))
