"""Write a worker agent and call it from another worker (README.md, section "Quick start").

    python samples/echo_agent.py [--host-address 127.0.0.1:9000]

Without --host-address it starts its own host on a free port. Prints ``echo: hello``.
samples/echo_worker.py serves the same agent until stopped, for docs/protocol.md's examples.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass

from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    message_handler,
    try_get_known_serializers_for_type,
)

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime


@dataclass
class Text:
    content: str


# A RoutedAgent dispatches on the handler's type hint. A bare BaseAgent works too, but it
# must call super().__init__(description) and implement on_message_impl, not on_message.
class EchoAgent(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("Echoes what it receives.")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        return Text(f"echo: {message.content}")


async def main(host_address: str | None) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if host_address is None:
            server = await stack.enter_async_context(HttpAgentServer(port=0))
            host_address = server.url

        worker = HttpWorkerAgentRuntime(host_address)
        worker.add_message_serializer(try_get_known_serializers_for_type(Text))
        # A plain factory works: the runtime calls it inside AgentInstantiationContext, which
        # BaseAgent.__init__ reads to learn its id and runtime. Registering before start() is fine.
        await worker.register_factory("echo", lambda: EchoAgent())
        await worker.start()
        stack.push_async_callback(worker.stop)

        caller = HttpWorkerAgentRuntime(host_address)
        caller.add_message_serializer(try_get_known_serializers_for_type(Text))
        await caller.start()
        stack.push_async_callback(caller.stop)

        reply = await caller.send_message(Text("hello"), AgentId("echo", "default"), timeout=10)
        print(reply.content)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host-address", help="use this host instead of starting one")
    asyncio.run(main(parser.parse_args().host_address))
