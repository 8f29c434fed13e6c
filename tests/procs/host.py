"""A host process: serves on 127.0.0.1 until SIGTERM or SIGINT.

Usage: ``python -m tests.procs.host [--port N] [--ping-interval S] [--ping-timeout S]
[--max-message-size N] [--max-queued-bytes N] [--slow-consumer-timeout S]``; the port
is 0 (ephemeral) by default.

Prints ``READY <url>`` once serving with its signal handlers installed, and ``STOPPED``
once ``stop_when_signal()`` has returned.
"""

from __future__ import annotations

import argparse
import asyncio

from autogen_http_runtime import HttpAgentServer, HttpAgentService

from . import run_until_signal, say


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    parser.add_argument("--max-message-size", type=int, default=32 * 1024 * 1024)
    parser.add_argument("--max-queued-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--slow-consumer-timeout", type=float, default=10.0)
    args = parser.parse_args()
    service = HttpAgentService(
        max_message_size=args.max_message_size,
        max_queued_bytes=args.max_queued_bytes,
        slow_consumer_timeout=args.slow_consumer_timeout,
    )
    server = HttpAgentServer(
        "127.0.0.1",
        port=args.port,
        service=service,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
    )
    await server.start()
    stopping = await run_until_signal(server.stop_when_signal(grace=1.0))
    say(f"READY {server.url}")
    await stopping
    say("STOPPED")


if __name__ == "__main__":
    asyncio.run(main())
