"""A host serves its AutoGen agents to any A2A client (docs/a2a.md). Needs the [a2a] extra.

    python samples/a2a_serve.py                        # starts its own host, calls it
    python samples/a2a_serve.py --serve --port 9000    # serves until Ctrl-C, for your client

A worker serves two agent types and offers them over A2A with ``register_a2a_skill``;
the host (``HttpAgentServer(a2a=True)``) gives each an Agent Card and an A2A endpoint.
Then the A2A SDK's own client, knowing nothing of AutoGen, finds them from the host's
card and calls them. Prints:

    agents: ['stock', 'upper']
    text part: {'content': 'HELLO, A2A'}
    data part: {'enough': True, 'in_stock': 12.0, 'item': 'tea'}
    streamed: task, status_update, artifact_update, status_update
    error: TASK_STATE_FAILED: KeyError: 'cake'
    bad input: InvalidParamsError: Not a valid 'StockQuery' at 'qty': 'many' is not of type 'integer'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass

import httpx
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.helpers import get_data_parts, new_data_part, new_text_part
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState
from a2a.utils.errors import InvalidParamsError
from autogen_core import MessageContext, RoutedAgent, message_handler
from pydantic import BaseModel

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime


@dataclass
class Text:  # one required string field: a plain A2A text part becomes Text(content=...)
    content: str


class StockQuery(BaseModel):  # takes a data part {"item": ..., "qty": ...}
    item: str
    qty: int


class StockReply(BaseModel):
    item: str
    in_stock: int
    enough: bool


class Upper(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("Upper-cases text.")

    @message_handler
    async def on_text(self, message: Text, ctx: MessageContext) -> Text:
        return Text(message.content.upper())


class Stock(RoutedAgent):
    SHELF = {"tea": 12, "coffee": 0}

    def __init__(self) -> None:
        super().__init__("Says whether an item is in stock.")

    @message_handler
    async def on_query(self, message: StockQuery, ctx: MessageContext) -> StockReply:
        count = self.SHELF[message.item]  # an unknown item raises KeyError: the task fails
        return StockReply(item=message.item, in_stock=count, enough=count >= message.qty)


async def serve_agents(worker: HttpWorkerAgentRuntime) -> None:
    await Upper.register(worker, "upper", Upper)
    await worker.register_a2a_skill(
        "upper", name="Upper", description="Upper-cases text.", input_type=Text, output_type=Text
    )
    await Stock.register(worker, "stock", Stock)
    await worker.register_a2a_skill(
        "stock",
        name="Stock",
        description="Says whether an item is in stock.",
        input_type=StockQuery,
        output_type=StockReply,
    )


def message(part: Part) -> SendMessageRequest:
    return SendMessageRequest(message=Message(role=Role.ROLE_USER, message_id="m", parts=[part]))


async def call_as_an_a2a_client(host_url: str) -> None:
    async with httpx.AsyncClient() as http:
        listing = await A2ACardResolver(http, host_url).get_agent_card()  # the host's card
        print(f"agents: {sorted(skill.id for skill in listing.skills)}")
        config = ClientConfig(httpx_client=http, streaming=False)
        upper = await create_client(f"{host_url}/a2a/upper", client_config=config)
        stock = await create_client(f"{host_url}/a2a/stock", client_config=config)

        [event] = [e async for e in upper.send_message(message(new_text_part("hello, a2a")))]
        # A reply that is not a string comes back as a data part (A2A numbers are doubles).
        print(f"text part: {get_data_parts(event.task.artifacts[0].parts)[0]}")
        [event] = [e async for e in stock.send_message(message(new_data_part({"item": "tea", "qty": 3})))]
        print(f"data part: {get_data_parts(event.task.artifacts[0].parts)[0]}")

        streaming = await create_client(
            f"{host_url}/a2a/upper", client_config=ClientConfig(httpx_client=http)
        )
        kinds = [e.WhichOneof("payload") async for e in streaming.send_message(message(new_text_part("hi")))]
        print(f"streamed: {', '.join(kinds)}")

        [event] = [e async for e in stock.send_message(message(new_data_part({"item": "cake", "qty": 1})))]
        status = event.task.status
        print(f"error: {TaskState.Name(status.state)}: {status.message.parts[0].text}")
        try:
            [_ async for _ in stock.send_message(message(new_data_part({"item": "tea", "qty": "many"})))]
        except InvalidParamsError as exc:
            print(f"bad input: InvalidParamsError: {exc.message}")
        for sdk in (upper, stock, streaming):
            await sdk.close()


async def main(serve_only: bool, port: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        host = await stack.enter_async_context(HttpAgentServer(port=port, a2a=True))
        worker = HttpWorkerAgentRuntime(host.url)
        await worker.start()
        stack.push_async_callback(worker.stop)
        await serve_agents(worker)
        if serve_only:
            print(f"A2A agents listed at {host.url}/.well-known/agent-card.json; Ctrl-C to stop")
            await worker.stop_when_signal()  # then the host stops, as the block ends
            return
        await call_as_an_a2a_client(host.url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="serve until Ctrl-C instead of calling")
    parser.add_argument("--port", type=int, default=0, help="the host's port (default: a free one)")
    args = parser.parse_args()
    asyncio.run(main(args.serve, args.port))
