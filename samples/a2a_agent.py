"""AutoGen agents call an A2A agent through A2AAgent (docs/a2a.md). Needs the [a2a] extra.

    python samples/a2a_agent.py                       # against a demo A2A agent it starts
    python samples/a2a_agent.py --url URL --text "Hi" # against any A2A agent (its base URL)

Without --url it serves a small A2A agent of its own, made only of the a2a-sdk's server
classes, and calls it twice over: from autogen-core's in-process runtime, and from one
worker of this runtime to A2AAgent served by another worker. Prints:

    in-process: 'HELLO FROM AUTOGEN'
    distributed: Forecast(city='Paris', sky='sunny', celsius=21)
    same A2A context for one agent id: True
    error: A2AAgentError: no forecast for Atlantis
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import uvicorn
from a2a.helpers import (
    get_data_parts,
    new_data_part,
    new_task_from_user_message,
    new_text_message,
    new_text_part,
)
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from autogen_core import AgentId, SingleThreadedAgentRuntime
from pydantic import BaseModel
from starlette.applications import Starlette

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime, RemoteAgentError
from autogen_http_runtime.a2a import A2AAgent


@dataclass
class ForecastRequest:  # goes out as an A2A data part: {"city": "..."}
    city: str


class Forecast(BaseModel):  # what the A2A agent's data reply is validated into
    city: str
    sky: str
    celsius: int


class DemoExecutor(AgentExecutor):
    """Text: a Message with it in upper case. Data {"city": ...}: a completed Task with a data
    artifact, or a failed one for a city it does not know."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None and context.task_id and context.context_id
        data = get_data_parts(context.message.parts)
        if not data:
            reply = new_text_message(context.get_user_input().upper(), context_id=context.context_id)
            await event_queue.enqueue_event(reply)
            return
        await event_queue.enqueue_event(new_task_from_user_message(context.message))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        city = str(data[0].get("city", "")).title()
        if city != "Paris":
            await updater.failed(updater.new_agent_message([new_text_part(f"no forecast for {city}")]))
            return
        await updater.add_artifact([new_data_part({"city": city, "sky": "sunny", "celsius": 21})])
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id and context.context_id
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


@contextlib.asynccontextmanager
async def demo_a2a_agent() -> AsyncIterator[str]:
    """Serve DemoExecutor on 127.0.0.1 (a free port); yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    card = AgentCard(
        name="demo",
        description="Shouts text back; gives the forecast for Paris.",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=[AgentSkill(id="forecast", name="forecast", description="Weather.", tags=["demo"])],
    )
    handler = DefaultRequestHandler(
        agent_executor=DemoExecutor(), task_store=InMemoryTaskStore(), agent_card=card
    )
    app = Starlette(routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, rpc_url="/")])
    config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="critical")
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    serving = asyncio.create_task(server.main_loop())
    try:
        yield url
    finally:
        await handler.aclose()
        server.should_exit = True
        await serving
        await server.shutdown(sockets=[sock])


async def in_process(url: str, text: str) -> None:
    runtime = SingleThreadedAgentRuntime()
    await A2AAgent.register(runtime, "remote", lambda: A2AAgent(url))
    runtime.start()
    reply = await runtime.send_message(text, AgentId("remote", "me"))
    print(f"in-process: {reply!r}")
    await runtime.close()  # also closes the A2AAgent's HTTP client


async def distributed(url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        host = await stack.enter_async_context(HttpAgentServer(port=0))
        http = await stack.enter_async_context(httpx.AsyncClient())  # shared by the A2AAgents
        serving = HttpWorkerAgentRuntime(host.url)
        await A2AAgent.register(
            serving, "weather", lambda: A2AAgent(url, output_type=Forecast, httpx_client=http)
        )
        caller = HttpWorkerAgentRuntime(host.url)
        for worker in (serving, caller):
            await worker.start()
            stack.push_async_callback(worker.stop)

        alice = AgentId("weather", "alice")
        print(f"distributed: {await caller.send_message(ForecastRequest('paris'), alice)!r}")
        first = (await caller.agent_save_state(alice))["context_id"]  # A2AAgent's state
        await caller.send_message(ForecastRequest("paris"), alice)
        second = (await caller.agent_save_state(alice))["context_id"]
        print(f"same A2A context for one agent id: {first is not None and first == second}")
        try:
            await caller.send_message(ForecastRequest("atlantis"), alice)
        except RemoteAgentError as exc:
            print(f"error: {exc.remote_type}: {exc.remote_message.rsplit(': ', 1)[-1]}")


async def main(url: str | None, text: str) -> None:
    if url is not None:
        await in_process(url, text)
        return
    async with demo_a2a_agent() as demo_url:
        await in_process(demo_url, "hello from autogen")
        await distributed(demo_url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="base URL (or Agent Card URL) of an A2A agent to call")
    parser.add_argument("--text", default="Hello!", help="what to send it (with --url)")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.text))
