"""A worker process that is one replica of an agent type.

Usage: ``python -m tests.procs.replica URL AGENT_TYPE NAME``.

Its agent answers ``Text("<NAME>")`` to any text but ``hold``, on which it prints
``holding <key>`` and blocks until cancelled. It prints ``READY`` once registered, then
serves until killed (the tests SIGKILL it).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from autogen_core import MessageContext, RoutedAgent, message_handler

from autogen_http_runtime import HttpWorkerAgentRuntime

from ..utils import SERIALIZERS, Text
from . import say


class Replica(RoutedAgent):
    def __init__(self, name: str) -> None:
        super().__init__("says which replica it runs on")
        self._name = name

    async def save_state(self) -> Mapping[str, Any]:
        return {"name": self._name}

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        if message.content == "hold":
            say(f"holding {self.id.key}")
            await asyncio.Event().wait()
        return Text(self._name)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("agent_type")
    parser.add_argument("name")
    args = parser.parse_args()
    runtime = HttpWorkerAgentRuntime(args.url, name=args.name)
    runtime.add_message_serializer(SERIALIZERS)
    await runtime.start()
    await Replica.register(runtime, args.agent_type, lambda: Replica(args.name))
    say("READY")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
