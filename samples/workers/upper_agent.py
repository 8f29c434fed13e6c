"""A worker serving agent type "upper": replies to a TextMessage with the text in upper case.

    python samples/workers/upper_agent.py [--host-address 127.0.0.1:9000]

The host address can also come from the AUTOGEN_HTTP_HOST_ADDRESS environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from autogen_core import MessageContext, RoutedAgent, message_handler

from autogen_http_runtime import HttpWorkerAgentRuntime

# Run as a script, this file sees only samples/workers/ on sys.path; messages.py is one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from messages import SERIALIZERS, TextMessage


class UpperAgent(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("Replies with the text in upper case.")

    @message_handler
    async def on_text(self, message: TextMessage, ctx: MessageContext) -> TextMessage:
        return TextMessage(message.content.upper())


async def main(host_address: str) -> None:
    runtime = HttpWorkerAgentRuntime(host_address, name="upper")
    runtime.add_message_serializer(SERIALIZERS)
    await runtime.start()
    await UpperAgent.register(runtime, "upper", UpperAgent)
    print("worker ready: upper", flush=True)
    await runtime.stop_when_signal()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--host-address",
        default=os.environ.get("AUTOGEN_HTTP_HOST_ADDRESS", "127.0.0.1:9000"),
        help="host:port or http://host:port (default: $AUTOGEN_HTTP_HOST_ADDRESS or 127.0.0.1:9000)",
    )
    asyncio.run(main(parser.parse_args().host_address))
