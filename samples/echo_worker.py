"""The `echo` worker of docs/protocol.md: serves until SIGINT or SIGTERM.

    autogen-http-runtime serve                       # a host on 127.0.0.1:9000, in one terminal
    python samples/echo_worker.py                    # this worker, in another

Options: ``--host-address`` (default ``$AUTOGEN_HTTP_HOST_ADDRESS`` or ``127.0.0.1:9000``).

It registers agent type ``echo``, which answers a ``Text`` message ``{"content": s}`` with
``{"content": "echo: " + s}``, and subscribes it to topic type ``greetings``: the worker
the HTTP API examples of docs/protocol.md (``POST /v1/rpc``, ``POST /v1/events``) talk to.

It prints ``echo worker ready on <host>`` once it serves and Ctrl-C would stop it cleanly,
then one line per event it receives (``echo/lobby got 'hello' on greetings/lobby``), and
``echo worker stopped`` after a signal. (``samples/echo_agent.py`` is the same agent called
once from another worker, in a single process that then exits.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass

from autogen_core import (
    MessageContext,
    RoutedAgent,
    TypeSubscription,
    message_handler,
    try_get_known_serializers_for_type,
)

from autogen_http_runtime import HttpWorkerAgentRuntime


@dataclass
class Text:
    """Travels as ``{"data_type": "Text", "data": {"content": ...}}``: the type name is the class's."""

    content: str


class EchoAgent(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("Echoes what it receives.")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        if ctx.topic_id is not None:  # an event: nobody reads a reply, so say what came
            print(f"{self.id} got {message.content!r} on {ctx.topic_id}", flush=True)
        return Text(f"echo: {message.content}")


async def main(host_address: str) -> None:
    runtime = HttpWorkerAgentRuntime(host_address, name="echo-worker")
    runtime.add_message_serializer(try_get_known_serializers_for_type(Text))
    await runtime.start()
    await EchoAgent.register(runtime, "echo", EchoAgent)
    await runtime.add_subscription(TypeSubscription(topic_type="greetings", agent_type="echo"))
    stopping = asyncio.ensure_future(runtime.stop_when_signal())
    # One turn of the loop lets stop_when_signal install its signal handlers: only then is
    # it safe to say "ready", since a signal before that would kill the process outright.
    await asyncio.sleep(0)
    print(f"echo worker ready on {host_address}", flush=True)
    await stopping
    print("echo worker stopped", flush=True)


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
