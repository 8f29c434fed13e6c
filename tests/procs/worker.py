"""A worker process serving one agent type whose handler never returns.

Usage: ``python -m tests.procs.worker URL AGENT_TYPE [--until signal|stdin] [--a2a]``.

It registers ``AGENT_TYPE`` (with ``--a2a``, offered over A2A, taking ``Text``) and a
subscription of it to the topic ``AGENT_TYPE.topic``, then prints ``READY``. Each message
the agent receives prints ``started <content>`` and then blocks until cancelled. With
``--until signal`` (the default) the worker runs ``stop_when_signal()``; with ``--until
stdin`` it calls ``stop()`` when a line (or EOF) arrives on stdin. Either way it prints
``STOPPED`` and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from autogen_core import MessageContext, RoutedAgent, TypeSubscription, message_handler

from autogen_http_runtime import HttpWorkerAgentRuntime

from ..utils import SERIALIZERS, Text
from . import run_until_signal, say


class Blocker(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("never answers")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        say(f"started {message.content}")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def read_stdin_line() -> bytes:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        return await reader.readline()
    finally:
        transport.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("agent_type")
    parser.add_argument("--until", choices=["signal", "stdin"], default="signal")
    parser.add_argument("--a2a", action="store_true")
    args = parser.parse_args()

    runtime = HttpWorkerAgentRuntime(args.url, name=f"child-{args.agent_type}")
    runtime.add_message_serializer(SERIALIZERS)
    await runtime.start()
    await runtime.register_factory(args.agent_type, Blocker)
    if args.a2a:
        await runtime.register_a2a_skill(
            args.agent_type, name="Blocker", description="Never answers.", input_type=Text
        )
    await runtime.add_subscription(
        TypeSubscription(topic_type=f"{args.agent_type}.topic", agent_type=args.agent_type)
    )
    if args.until == "signal":
        stopping = await run_until_signal(runtime.stop_when_signal())
        say("READY")
        await stopping
    else:
        say("READY")
        await read_stdin_line()
        await runtime.stop()
    say("STOPPED")


if __name__ == "__main__":
    asyncio.run(main())
