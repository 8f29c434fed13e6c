"""The curl examples of docs/protocol.md, run as written against a live host.

Each ``curl`` command of the HTTP API section runs twice: with the real curl where it is
installed, and as the same request made with httpx; both must print the JSON shown after it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import httpx
from autogen_core import AgentId, MessageContext, RoutedAgent, TopicId, TypeSubscription, message_handler

from autogen_http_runtime import HttpAgentServer

from .conftest import WorkerFactory
from .utils import TIMEOUT, Text, bounded

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
DOC_BASE = "http://127.0.0.1:9000"


class Echo(RoutedAgent):
    """The page's `echo` agent: answers "echo: <content>" and records what is published to it."""

    def __init__(self, heard: asyncio.Queue[tuple[AgentId, Text, MessageContext]]) -> None:
        super().__init__("Echoes what it receives.")
        self.heard = heard

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        if ctx.topic_id is not None:
            self.heard.put_nowait((self.id, message, ctx))
        return Text(f"echo: {message.content}")


def examples() -> list[tuple[list[str], Any]]:
    """(curl arguments, the JSON the page says it prints) for each curl example."""
    http_part = DOC.read_text("utf-8").split("\n## HTTP API\n", 1)[1]
    found = re.findall(r"```bash\n(curl .*?)```\s*```json\n(.*?)```", http_part, flags=re.DOTALL)
    return [(shlex.split(command.replace("\\\n", " ")), json.loads(answer)) for command, answer in found]


def as_httpx(args: list[str], base_url: str) -> httpx.Request:
    """The request curl would make for ``args`` (the options the page uses)."""
    method, url, headers, data = "GET", "", [], None
    rest = iter(args[1:])
    for arg in rest:
        if arg == "-s":
            continue
        if arg == "-H":
            name, _, value = next(rest).partition(":")
            headers.append((name.strip(), value.strip()))
        elif arg == "-d":
            data, method = next(rest), "POST"
        elif arg == "-X":
            method = next(rest)
        else:
            assert not arg.startswith("-"), f"an option this test does not know: {arg}"
            url = arg.replace(DOC_BASE, base_url)
    return httpx.Request(method, url, headers=headers, content=data)


async def test_the_curl_examples_do_what_the_page_says(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    heard: asyncio.Queue[tuple[AgentId, Text, MessageContext]] = asyncio.Queue()
    worker = await make_worker()
    await Echo.register(worker, "echo", lambda: Echo(heard))
    await worker.add_subscription(TypeSubscription("greetings", "echo"))

    found = examples()
    assert len(found) == 3 and {args[2] for args, _ in found} == {
        f"{DOC_BASE}/v1/events",
        f"{DOC_BASE}/v1/rpc",
    }
    curl = shutil.which("curl")
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
        for args, expected in found:
            answer = await bounded(http.send(as_httpx(args, server.url)))
            assert answer.json() == expected, args
            if curl is not None:
                real = [curl, *(a.replace(DOC_BASE, server.url) for a in args[1:])]
                process = await asyncio.create_subprocess_exec(*real, stdout=asyncio.subprocess.PIPE)
                stdout, _ = await bounded(process.communicate())
                assert process.returncode == 0 and json.loads(stdout) == expected, (args, stdout)

    published = [(await bounded(heard.get()))[1:] for _ in range(4 if curl else 2)]
    assert sorted(message.content for message, _ in published) == sorted(
        ["hello", "hello again"] * (2 if curl else 1)
    )
    for _, ctx in published:
        assert ctx.topic_id == TopicId("greetings", "lobby") and ctx.sender is None
