"""An AgentChat team whose participants sit on durable replicas survives a replica's death mid-run.

The team runs on one worker (its manager stays there); a second worker, a real process,
serves the participants too, as replicas. The test picks a team whose participants are
split between them, lets the run go until the process's participant has taken its turn
and its state is stored, SIGKILLs the process while the other participant's model is
held, and lets the run go on. The participant's next message reaches its replica on the
first worker, restored from the host's store, and the run ends with the transcript the
in-process runtime gives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from autogen_core import AgentId

from autogen_http_runtime import HttpAgentServer, HttpWorkerAgentRuntime

from .cluster_utils import until
from .procs.team_member import CRITIC, WRITER, TurnClient, turn_team
from .test_agentchat import assert_same, stream
from .test_processes import spawn
from .utils import bounded


@pytest.fixture
async def host() -> AsyncIterator[HttpAgentServer]:
    server = HttpAgentServer("127.0.0.1", port=0, replicas=True)
    await bounded(server.start())
    try:
        yield server
    finally:
        await bounded(server.stop(grace=1))


async def test_a_round_robin_team_finishes_its_run_after_a_participants_replica_is_killed(
    host: HttpAgentServer,
) -> None:
    expected = await bounded(stream(turn_team(None), "Start."))
    core = host.service.core
    runner = HttpWorkerAgentRuntime(host.url, name="runner", persist_agent_state=True)
    await bounded(runner.start())
    try:
        async with spawn("team_member", host.url) as member:
            await member.expect("READY")
            assert member.proc.stdin is not None
            gate = asyncio.Event()
            clients = {"writer": TurnClient(WRITER, gate, gated_at=1), "critic": TurnClient(CRITIC, gate)}
            for _ in range(30):  # until a team's participants are split between the two workers
                team: Any = turn_team(runner, clients["writer"], clients["critic"])
                await bounded(team._init(runner))
                team._initialized = True
                team_id = team._team_id
                member.proc.stdin.write(f"TEAM {team_id}\n".encode())
                await member.proc.stdin.drain()
                await member.expect(f"JOINED {team_id}")
                owners = {
                    name: core.directory.owner(AgentId(f"{name}_{team_id}", team_id))
                    for name in ("writer", "critic")
                }
                on_member = [
                    name for name, owner in owners.items() if owner is not None and owner.name == "member"
                ]
                if len(on_member) == 1:
                    break
            else:
                pytest.fail("no team had its participants split between the workers")
            doomed = on_member[0]
            # The survivor's participant is held at the turn after the doomed one's first.
            held = clients["critic" if doomed == "writer" else "writer"]
            clients[doomed].gate = None
            run = asyncio.ensure_future(stream(team, "Start."))
            await bounded(held.waiting.wait())
            said = (WRITER if doomed == "writer" else CRITIC)[0]

            async def saved() -> bool:  # its turn is in the store, not only on its way there
                stored = await core.state.store.load(f"{doomed}_{team_id}/{team_id}")
                return stored is not None and said in stored.state

            await until(saved)
            member.proc.kill()
            assert await bounded(member.proc.wait()) == -9

            async def gone() -> bool:
                return len(core.directory.serving(f"{doomed}_{team_id}")) == 1

            await until(gone)
            gate.set()
            got = await bounded(run)
        assert_same(expected, got)
        owner = core.directory.owner(AgentId(f"{doomed}_{team_id}", team_id))
        assert owner is not None and owner.name == "runner"
        assert runner.agent_state_counts()["failed"] == 0
    finally:
        await bounded(runner.stop())
