"""Publish/subscribe across workers (README.md, section "Quick start").

    python samples/pubsub.py [--host-address 127.0.0.1:9000]

Without --host-address it starts its own host on a free port. One worker serves agent type
"my_agent" and subscribes it to every topic type starting with "news."; another worker
publishes a headline to topic "news.tech". Prints ``my_agent/server got '42' on news.tech``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass

from autogen_core import (
    MessageContext,
    RoutedAgent,
    TopicId,
    TypePrefixSubscription,
    message_handler,
    try_get_known_serializers_for_type,
)

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime


# A payload needs a serializer to cross processes: publish a dataclass, not a raw dict.
@dataclass
class Headline:
    text: str


class NewsReader(RoutedAgent):
    def __init__(self, received: asyncio.Event) -> None:
        super().__init__("Prints the headlines it receives.")
        self._received = received

    @message_handler
    async def on_headline(self, message: Headline, ctx: MessageContext) -> None:
        assert ctx.topic_id is not None  # set for published messages
        print(f"{self.id} got {message.text!r} on {ctx.topic_id.type}", flush=True)
        self._received.set()


async def main(host_address: str | None) -> None:
    received = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        if host_address is None:
            server = await stack.enter_async_context(HttpAgentServer(port=0))
            host_address = server.url

        subscriber = HttpWorkerAgentRuntime(host_address)
        await subscriber.start()
        stack.push_async_callback(subscriber.stop)
        # register() also adds the serializers for the types NewsReader handles.
        await NewsReader.register(subscriber, "my_agent", lambda: NewsReader(received))
        # The class takes a prefix, not a glob. The host stores the subscription, so any
        # worker could add it, and it holds for "my_agent" wherever that type is served.
        await subscriber.add_subscription(
            TypePrefixSubscription(topic_type_prefix="news.", agent_type="my_agent")
        )

        publisher = HttpWorkerAgentRuntime(host_address)
        publisher.add_message_serializer(try_get_known_serializers_for_type(Headline))
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        # The recipient's key is the topic's source: this reaches AgentId("my_agent", "server").
        await publisher.publish_message(Headline("42"), TopicId("news.tech", "server"))

        # Publishing returns once the event is sent; delivery is asynchronous.
        await asyncio.wait_for(received.wait(), timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host-address", help="use this host instead of starting one")
    asyncio.run(main(parser.parse_args().host_address))
