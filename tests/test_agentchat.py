"""AgentChat teams on a worker whose host runs in another OS process, against the in-process runtime.

Each team is built twice by the same function: once with no ``runtime`` (AgentChat's own
embedded ``SingleThreadedAgentRuntime``) and once with ``runtime=`` a worker connected to a
host in a child process. The models are ``ReplayChatCompletionClient``s, so both runs are
scripted and must yield the same messages, item by item: class, source, type and content
(every field but the random ``id`` and the ``created_at`` timestamp). The workers get no
serializers from the test: the team code is unchanged.
"""

from __future__ import annotations

import asyncio
import json
import selectors
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, StructuredMessage
from autogen_agentchat.teams import BaseGroupChat, RoundRobinGroupChat, SelectorGroupChat, Swarm
from autogen_core import AgentRuntime, FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient
from pydantic import BaseModel

from autogen_http_runtime import HttpWorkerAgentRuntime

from .utils import TIMEOUT, bounded

ROOT = Path(__file__).resolve().parent.parent

TOOL_MODEL = ModelInfo(
    vision=False, function_calling=True, json_output=True, family=ModelFamily.UNKNOWN, structured_output=True
)

Item = BaseAgentEvent | BaseChatMessage | TaskResult
TeamFactory = Callable[[AgentRuntime | None], BaseGroupChat]
WorkerFactory = Callable[[], Awaitable[HttpWorkerAgentRuntime]]


# -- a host in another process ---------------------------------------------------------


def _read_line(proc: subprocess.Popen[str], seconds: float) -> str:
    """The child's next stdout line, waiting at most ``seconds``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(seconds):
            raise TimeoutError(f"no line from the host process within {seconds} s")
    return proc.stdout.readline().rstrip("\n")


@pytest.fixture(scope="module")
def host_url() -> Iterator[str]:
    """A host (``tests/procs/host.py``) in a child process, shared by the tests of this module."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.procs.host"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        line = _read_line(proc, TIMEOUT)
        assert line.startswith("READY "), f"unexpected first line from the host: {line!r}"
        yield line.split(" ", 1)[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture
async def make_worker(host_url: str) -> AsyncIterator[WorkerFactory]:
    """Workers connected to the host process, with no serializers added; stopped at the end."""
    workers: list[HttpWorkerAgentRuntime] = []

    async def create() -> HttpWorkerAgentRuntime:
        worker = HttpWorkerAgentRuntime(host_url)
        workers.append(worker)
        await bounded(worker.start())
        return worker

    try:
        yield create
    finally:
        for worker in workers:
            await bounded(worker.stop())


# -- the teams ---------------------------------------------------------------------------


def function_call(name: str, arguments: dict[str, Any], call_id: str) -> CreateResult:
    """A scripted model reply asking for one tool (or handoff) call."""
    return CreateResult(
        content=[FunctionCall(id=call_id, name=name, arguments=json.dumps(arguments))],
        finish_reason="function_calls",
        usage=RequestUsage(prompt_tokens=3, completion_tokens=2),
        cached=False,
    )


def round_robin(runtime: AgentRuntime | None) -> RoundRobinGroupChat:
    """Two assistants taking turns until one says APPROVE."""
    writer = AssistantAgent(
        "writer",
        model_client=ReplayChatCompletionClient(["draft one", "draft two", "draft three"]),
        system_message="You write.",
    )
    critic = AssistantAgent(
        "critic",
        model_client=ReplayChatCompletionClient(["too short", "APPROVE", "APPROVE again"]),
        system_message="You criticize.",
    )
    return RoundRobinGroupChat(
        [writer, critic],
        termination_condition=TextMentionTermination("APPROVE") | MaxMessageTermination(10),
        runtime=runtime,
    )


class Verdict(BaseModel):
    approved: bool
    note: str


#: Every (a, b) the ``add`` tool was called with, in order.
ADD_CALLS: list[tuple[int, int]] = []


async def add(a: int, b: int) -> int:
    """Add two numbers."""
    ADD_CALLS.append((a, b))
    return a + b


def selector(runtime: AgentRuntime | None) -> SelectorGroupChat:
    """A model picks the speaker: the writer twice (text, then a tool call), then the critic,
    whose reply is a ``StructuredMessage[Verdict]`` (a generic message class)."""
    writer = AssistantAgent(
        "writer",
        model_client=ReplayChatCompletionClient(
            ["a first draft", function_call("add", {"a": 2, "b": 3}, "call-add")], model_info=TOOL_MODEL
        ),
        tools=[FunctionTool(add, description="Add two numbers.")],
    )
    critic = AssistantAgent(
        "critic",
        model_client=ReplayChatCompletionClient(
            ['{"approved": true, "note": "APPROVE"}'], model_info=TOOL_MODEL
        ),
        output_content_type=Verdict,
    )
    return SelectorGroupChat(
        [writer, critic],
        model_client=ReplayChatCompletionClient(["writer", "writer", "critic"]),
        termination_condition=TextMentionTermination("APPROVE") | MaxMessageTermination(10),
        allow_repeated_speaker=True,
        custom_message_types=[StructuredMessage[Verdict]],
        runtime=runtime,
    )


def swarm(runtime: AgentRuntime | None) -> Swarm:
    """Alice hands off to Bob, Bob hands back to Alice, who finishes."""
    alice = AssistantAgent(
        "alice",
        model_client=ReplayChatCompletionClient(
            [function_call("transfer_to_bob", {}, "handoff-1"), "all done, APPROVE"], model_info=TOOL_MODEL
        ),
        handoffs=["bob"],
    )
    bob = AssistantAgent(
        "bob",
        model_client=ReplayChatCompletionClient(
            [function_call("transfer_to_alice", {}, "handoff-2")], model_info=TOOL_MODEL
        ),
        handoffs=["alice"],
    )
    return Swarm(
        [alice, bob],
        termination_condition=TextMentionTermination("APPROVE") | MaxMessageTermination(10),
        runtime=runtime,
    )


def tool_team(runtime: AgentRuntime | None) -> RoundRobinGroupChat:
    """A calculator that calls a FunctionTool, then a checker that approves."""
    calculator = AssistantAgent(
        "calculator",
        model_client=ReplayChatCompletionClient(
            [function_call("add", {"a": 20, "b": 22}, "call-1")], model_info=TOOL_MODEL
        ),
        tools=[FunctionTool(add, description="Add two numbers.")],
    )
    checker = AssistantAgent("checker", model_client=ReplayChatCompletionClient(["42 is right. APPROVE"]))
    return RoundRobinGroupChat(
        [calculator, checker],
        termination_condition=TextMentionTermination("APPROVE") | MaxMessageTermination(10),
        runtime=runtime,
    )


# -- comparing runs ----------------------------------------------------------------------


def view(item: Item) -> tuple[Any, ...]:
    """What must match between runs: the class and every field but the random id and the time."""
    if isinstance(item, TaskResult):
        return ("TaskResult", item.stop_reason, [view(message) for message in item.messages])
    return (type(item), item.source, item.type, item.model_dump(mode="json", exclude={"id", "created_at"}))


async def stream(team: BaseGroupChat, task: str) -> list[Item]:
    return [item async for item in team.run_stream(task=task)]


async def distributed_stream(team: BaseGroupChat, task: str) -> list[Item]:
    return await bounded(stream(team, task))


def assert_same(expected: list[Item], got: list[Item]) -> None:
    assert len(got) == len(expected), [view(item) for item in got]
    for number, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert view(have) == view(want), f"item {number} differs"


def agent_keys(state: Any) -> set[str]:
    """The keys of the agents a runtime has instantiated, from its save_state()."""
    return {agent_id.split("/", 1)[1] for agent_id in state}


# -- tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("team", [round_robin, selector, swarm, tool_team], ids=lambda t: t.__name__)
async def test_run_stream_yields_the_in_process_sequence(
    team: TeamFactory, make_worker: WorkerFactory
) -> None:
    expected = await stream(team(None), "Start.")
    worker = await make_worker()

    got = await distributed_stream(team(worker), "Start.")

    assert_same(expected, got)
    assert isinstance(got[-1], TaskResult) and got[-1].stop_reason == "Text 'APPROVE' mentioned"


async def test_round_robin_run_reset_and_rerun(make_worker: WorkerFactory) -> None:
    reference = round_robin(None)
    expected_first = await reference.run(task="Write a line.")
    await reference.reset()
    expected_second = await reference.run(task="Again.")
    worker = await make_worker()
    team = round_robin(worker)

    first = await bounded(team.run(task="Write a line."))
    # The manager and both participants are instantiated under the team's key only:
    # DefaultTopicId() inside their handlers resolved to the handling agent's own key.
    state = await worker.save_state()
    assert len(state) == 3 and len(agent_keys(state)) == 1
    # reset(), pause() and resume() are RPCs to every agent whose handlers return None.
    await bounded(team.pause())
    await bounded(team.resume())
    await bounded(team.reset())
    second = await bounded(team.run(task="Again."))

    assert [view(m) for m in first.messages] == [view(m) for m in expected_first.messages]
    assert [view(m) for m in second.messages] == [view(m) for m in expected_second.messages]
    assert [m.source for m in first.messages] == ["user", "writer", "critic", "writer", "critic"]
    assert first.stop_reason == second.stop_reason == expected_first.stop_reason


async def test_tool_call_runs_inside_the_team(make_worker: WorkerFactory) -> None:
    worker = await make_worker()
    ADD_CALLS.clear()

    result = await bounded(tool_team(worker).run(task="What is 20 + 22?"))

    assert ADD_CALLS == [(20, 22)]
    kinds = [(m.source, m.type) for m in result.messages]
    assert kinds == [
        ("user", "TextMessage"),
        ("calculator", "ToolCallRequestEvent"),
        ("calculator", "ToolCallExecutionEvent"),
        ("calculator", "ToolCallSummaryMessage"),
        ("checker", "TextMessage"),
    ]
    request, execution, summary = result.messages[1:4]
    assert isinstance(request, BaseAgentEvent) and isinstance(execution, BaseAgentEvent)
    assert request.model_dump()["content"] == [
        {"id": "call-1", "arguments": '{"a": 20, "b": 22}', "name": "add"}
    ]
    assert execution.model_dump()["content"][0]["content"] == "42"
    assert summary.to_text() == "42"


async def test_a_failing_agent_fails_the_run_as_in_process(make_worker: WorkerFactory) -> None:
    def failing(runtime: AgentRuntime | None) -> RoundRobinGroupChat:
        writer = AssistantAgent("writer", model_client=ReplayChatCompletionClient(["draft"]))
        critic = AssistantAgent("critic", model_client=ReplayChatCompletionClient([]))  # raises
        return RoundRobinGroupChat([writer, critic], max_turns=5, runtime=runtime)

    with pytest.raises(RuntimeError) as in_process:
        await failing(None).run(task="Start.")
    worker = await make_worker()

    with pytest.raises(RuntimeError) as distributed:
        await bounded(failing(worker).run(task="Start."))

    assert str(distributed.value).splitlines()[0] == str(in_process.value).splitlines()[0]
    assert "No more mock responses available" in str(distributed.value)


class Rendezvous:
    """Lets ``parties`` callers through once all of them have arrived (asyncio.Barrier is 3.11+)."""

    def __init__(self, parties: int) -> None:
        self._waiting = parties
        self._all_here = asyncio.Event()

    async def arrive(self) -> None:
        self._waiting -= 1
        if self._waiting == 0:
            self._all_here.set()
        await self._all_here.wait()


def meeting_team(runtime: AgentRuntime | None, tag: str, rendezvous: Rendezvous) -> RoundRobinGroupChat:
    """The writer first calls a tool that waits at ``rendezvous``, then the critic approves."""

    async def meet() -> str:
        await rendezvous.arrive()
        return f"{tag} met"

    writer = AssistantAgent(
        "writer",
        model_client=ReplayChatCompletionClient(
            [function_call("meet", {}, "meet-1"), f"{tag} draft"], model_info=TOOL_MODEL
        ),
        tools=[FunctionTool(meet, description="Wait for the other team.")],
    )
    critic = AssistantAgent(
        "critic", model_client=ReplayChatCompletionClient([f"{tag} too short", f"{tag} APPROVE"])
    )
    return RoundRobinGroupChat(
        [writer, critic],
        termination_condition=TextMentionTermination("APPROVE") | MaxMessageTermination(10),
        runtime=runtime,
    )


async def test_two_teams_on_two_workers_run_at_once_without_cross_talk(make_worker: WorkerFactory) -> None:
    expected_one = await stream(meeting_team(None, "one", Rendezvous(1)), "Task one")
    expected_two = await stream(meeting_team(None, "two", Rendezvous(1)), "Task two")
    worker_one, worker_two = await make_worker(), await make_worker()
    # Same agent names in both teams. Each team's tool call waits until the other team's
    # has started too, so the two runs overlap.
    both = Rendezvous(2)
    team_one, team_two = meeting_team(worker_one, "one", both), meeting_team(worker_two, "two", both)

    got_one, got_two = await bounded(
        asyncio.gather(stream(team_one, "Task one"), stream(team_two, "Task two"))
    )

    assert_same(expected_one, got_one)
    assert_same(expected_two, got_two)
    texts_one = [item.to_text() for item in got_one if not isinstance(item, TaskResult)]
    texts_two = [item.to_text() for item in got_two if not isinstance(item, TaskResult)]
    assert "one met" in texts_one and "two met" in texts_two
    assert all("two" not in text for text in texts_one)
    assert all("one" not in text for text in texts_two)
    # Each worker instantiated only its own team's agents, all under one key.
    keys_one = agent_keys(await worker_one.save_state())
    keys_two = agent_keys(await worker_two.save_state())
    assert len(keys_one) == len(keys_two) == 1 and keys_one != keys_two
