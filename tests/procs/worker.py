"""A worker process serving one agent type whose handler waits to be told to answer.

Usage: ``python -m tests.procs.worker URL AGENT_TYPE [--until signal|stdin|interrupt]
[--stop-grace S] [--a2a]``.

It registers ``AGENT_TYPE`` (with ``--a2a``, offered over A2A, taking ``Text``) and a
subscription of it to the topic ``AGENT_TYPE.topic``, then prints ``READY``. Each message
the agent receives prints ``started <content>``; the handler then blocks until a
``release`` line arrives on stdin, and answers the content upper-cased (so it never
answers unless told). How the worker ends:

- ``--until signal`` (the default): ``stop_when_signal()``;
- ``--until stdin``: ``stop()`` when any other line (or EOF) arrives on stdin;
- ``--until interrupt``: neither; it waits forever, so SIGINT ends it the way Ctrl-C ends
  a plain ``asyncio.run()`` program (its tasks cancelled, ``KeyboardInterrupt``).

The first two print ``STOPPED`` and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from autogen_core import MessageContext, RoutedAgent, TypeSubscription, message_handler

from autogen_http_runtime import HttpWorkerAgentRuntime

from ..utils import SERIALIZERS, Text
from . import run_until_signal, say

#: Set by a ``release`` line on stdin: every handler waiting answers.
released = asyncio.Event()


class Blocker(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("answers when released")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        say(f"started {message.content}")
        await released.wait()
        return Text(message.content.upper())


async def read_stdin(stop: asyncio.Event) -> None:
    """``release`` lines release the handlers; any other line, or EOF, sets ``stop``."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            if line.strip() == b"release":
                released.set()
            else:
                stop.set()
        stop.set()
    finally:
        transport.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("agent_type")
    parser.add_argument("--until", choices=["signal", "stdin", "interrupt"], default="signal")
    parser.add_argument("--stop-grace", type=float, default=None)
    parser.add_argument("--a2a", action="store_true")
    args = parser.parse_args()

    grace = {} if args.stop_grace is None else {"stop_grace": args.stop_grace}
    runtime = HttpWorkerAgentRuntime(args.url, name=f"child-{args.agent_type}", **grace)
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
    stop = asyncio.Event()
    reading = asyncio.create_task(read_stdin(stop))
    if args.until == "signal":
        stopping = await run_until_signal(runtime.stop_when_signal())
        say("READY")
        await stopping
    elif args.until == "stdin":
        say("READY")
        await stop.wait()
        await runtime.stop()
    else:
        say("READY")
        await asyncio.Event().wait()
    reading.cancel()
    say("STOPPED")


if __name__ == "__main__":
    # Ctrl-C in a terminal raises KeyboardInterrupt; a child of a background job starts with
    # SIGINT ignored instead (bash ignores it for `&` jobs, as scripts/test.sh runs one suite).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    asyncio.run(main())
