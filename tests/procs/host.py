"""A host process: serves on 127.0.0.1 port 0 until SIGTERM or SIGINT.

Prints ``READY <url>`` once serving with its signal handlers installed, and ``STOPPED``
once ``stop_when_signal()`` has returned.
"""

from __future__ import annotations

import asyncio

from autogen_http_runtime import HttpAgentServer

from . import run_until_signal, say


async def main() -> None:
    server = HttpAgentServer("127.0.0.1", port=0)
    await server.start()
    stopping = await run_until_signal(server.stop_when_signal(grace=1.0))
    say(f"READY {server.url}")
    await stopping
    say("STOPPED")


if __name__ == "__main__":
    asyncio.run(main())
