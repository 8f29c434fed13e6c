"""Placement on its own: which member owns an agent id (no sockets)."""

from __future__ import annotations

from collections import Counter

from autogen_core import AgentId

from autogen_http_runtime._host.placement import Placement, score

IDS = [AgentId("t", f"k{i}") for i in range(2000)]


def placed(placement: Placement[str]) -> dict[AgentId, str | None]:
    return {agent_id: placement.owner(agent_id) for agent_id in IDS}


def make(*members: str) -> Placement[str]:
    placement: Placement[str] = Placement(lambda member: member)
    for member in members:
        placement.join("t", member)
    return placement


def test_every_process_places_alike() -> None:
    """The scores depend on nothing but the member's key and the id (no per-process hash seed)."""
    assert score("a", AgentId("t", "k")) == 0x7C1575AD2F8D3940  # pinned: every host must agree
    assert placed(make("a", "b", "c")) == placed(make("c", "a", "b"))  # the order of joining does not matter


def test_ids_spread_evenly_and_a_joiner_takes_only_its_own() -> None:
    three = make("a", "b", "c")
    before = placed(three)
    assert all(600 <= n <= 730 for n in Counter(before.values()).values())
    three.join("t", "d")
    after = placed(three)
    moved = [agent_id for agent_id in IDS if after[agent_id] != before[agent_id]]
    assert all(after[agent_id] == "d" for agent_id in moved)
    assert 400 <= len(moved) <= 600  # about a quarter


def test_a_leaver_gives_away_only_its_own() -> None:
    placement = make("a", "b", "c")
    before = placed(placement)
    placement.leave("t", "b")
    after = placed(placement)
    assert all(after[i] == before[i] for i in IDS if before[i] != "b")
    assert {after[i] for i in IDS if before[i] == "b"} == {"a", "c"}


def test_a_pinned_id_stays_with_its_member_and_goes_with_it() -> None:
    placement = make("a", "b")
    target = next(i for i in IDS if placement.owner(i) == "a")
    assert placement.pin(target, "b") is None
    assert placement.owner(target) == "b"
    assert placement.pin(target, "a") == "b"  # taken: nothing changes
    assert placement.owner(target) == "b"
    placement.leave("t", "b")
    assert placement.owner(target) == "a"


def test_no_member_no_owner() -> None:
    placement = make("a")
    placement.leave("t", "a")
    assert placement.owner(IDS[0]) is None and list(placement.types()) == []
