"""Exchange raw ``str`` messages with a custom serializer (README.md, section "Quick start").

    python samples/string_serializer.py [--host-address 127.0.0.1:9000]

Without --host-address it starts its own host on a free port. Prints
``without a serializer: SerializationError`` then ``reply: 'HELLO, PLAIN STRING' (str)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

from autogen_core import AgentId, MessageContext, MessageSerializer, RoutedAgent, message_handler

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime, SerializationError


class StringSerializer(MessageSerializer[str]):
    """Serializes a ``str`` as a JSON string. ``type_name`` must be the type's name, "str"."""

    @property
    def data_content_type(self) -> str:
        return "application/json"

    @property
    def type_name(self) -> str:
        return "str"

    def deserialize(self, payload: bytes) -> str:
        value = json.loads(payload.decode("utf-8"))
        if not isinstance(value, str):
            raise ValueError(f"Expected a JSON string, got {type(value).__name__}.")
        return value

    def serialize(self, message: str) -> bytes:
        return json.dumps(message).encode("utf-8")


# The agent must accept a str: a RoutedAgent handler typed ``message: str`` does.
class ShoutAgent(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("Replies with the text in upper case.")

    @message_handler
    async def on_str(self, message: str, ctx: MessageContext) -> str:
        return message.upper()


async def main(host_address: str | None) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if host_address is None:
            server = await stack.enter_async_context(HttpAgentServer(port=0))
            host_address = server.url

        worker = HttpWorkerAgentRuntime(host_address)
        worker.add_message_serializer(StringSerializer())  # to read the request and write the reply
        await worker.start()
        stack.push_async_callback(worker.stop)
        # Not ShoutAgent.register(...): it looks up autogen-core's known serializers for each
        # handled type and raises ValueError for str. register_factory skips that lookup.
        await worker.register_factory("shout", ShoutAgent)

        caller = HttpWorkerAgentRuntime(host_address)
        await caller.start()
        stack.push_async_callback(caller.stop)
        recipient = AgentId("shout", "default")
        try:
            await caller.send_message("hello, plain string", recipient)
        except SerializationError as exc:  # also a ValueError
            print(f"without a serializer: {type(exc).__name__}")

        caller.add_message_serializer(StringSerializer())
        reply = await caller.send_message("hello, plain string", recipient, timeout=10)
        print(f"reply: {reply!r} ({type(reply).__name__})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host-address", help="use this host instead of starting one")
    asyncio.run(main(parser.parse_args().host_address))
