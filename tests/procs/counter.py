"""A durable worker process: serves a counting agent with ``persist_agent_state=True``.

Usage: ``python -m tests.procs.counter URL NAME``.

Its agent type ``counter`` (a replica) answers ``Text("<NAME>:<count>")`` to each text,
counting the messages its agent id got, wherever they were handled: the count is its
state, restored from the host's store when the id moves here. It prints ``READY`` once
registered, then serves until killed.
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


class Counter(RoutedAgent):
    def __init__(self, name: str) -> None:
        super().__init__("counts the messages of its id")
        self._name = name
        self.count = 0

    async def save_state(self) -> Mapping[str, Any]:
        return {"count": self.count}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.count = int(state["count"])

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        self.count += 1
        return Text(f"{self._name}:{self.count}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("name")
    args = parser.parse_args()
    runtime = HttpWorkerAgentRuntime(args.url, name=args.name, persist_agent_state=True)
    runtime.add_message_serializer(SERIALIZERS)
    await runtime.start()
    await Counter.register(runtime, "counter", lambda: Counter(args.name))
    say("READY")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
