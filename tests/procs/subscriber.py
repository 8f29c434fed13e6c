"""A worker process with a subscriber: one replica of an agent type subscribed to a topic type.

Usage: ``python -m tests.procs.subscriber URL AGENT_TYPE TOPIC_TYPE NAME``.

Its agent prints ``handled <key> <text> <event id>`` for each event it handles, once the
handler is done; on the text ``hold`` it prints ``holding <key> <event id>`` and blocks (the
tests SIGKILL it mid-handler). It prints ``READY`` once registered and subscribed.
"""

from __future__ import annotations

import argparse
import asyncio

from autogen_core import MessageContext, RoutedAgent, TypeSubscription, message_handler

from autogen_http_runtime import HttpWorkerAgentRuntime

from ..utils import SERIALIZERS, Text
from . import say


class Subscriber(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("prints the events it handles")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        if message.content == "hold":
            say(f"holding {self.id.key} {ctx.message_id}")
            await asyncio.Event().wait()
        say(f"handled {self.id.key} {message.content} {ctx.message_id}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("agent_type")
    parser.add_argument("topic_type")
    parser.add_argument("name")
    args = parser.parse_args()
    runtime = HttpWorkerAgentRuntime(args.url, name=args.name)
    runtime.add_message_serializer(SERIALIZERS)
    await runtime.start()
    await Subscriber.register(runtime, args.agent_type, Subscriber)
    await runtime.add_subscription(TypeSubscription(args.topic_type, args.agent_type))
    say("READY")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
