"""Send one text to the demo's "reverse" and "upper" agents and print their replies.

    python samples/orchestrator.py [--host-address 127.0.0.1:9000]

Connects as a worker that serves no agents of its own, so it can only send.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from autogen_core import AgentId

from autogen_http_runtime import HttpWorkerAgentRuntime
from messages import SERIALIZERS, TextMessage

TEXT = "Hello distributed HTTP runtime!"


async def main(host_address: str) -> None:
    runtime = HttpWorkerAgentRuntime(host_address, name="orchestrator")
    runtime.add_message_serializer(SERIALIZERS)
    await runtime.start()
    try:
        for agent_type in ("reverse", "upper"):
            reply = await runtime.send_message(TextMessage(TEXT), AgentId(agent_type, "default"), timeout=30)
            print(f"{agent_type:<7} → {reply.content}", flush=True)
    finally:
        await runtime.stop()


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
