"""What workers said about the agent types they serve, beyond their names: today, A2A skills.

Kept beside the directory, not in it: the directory says who serves what, this table how a
type is offered to the outside (``HttpAgentService(a2a=True)`` reads it through
:mod:`.views`). A description belongs to the worker that gave it and goes when that worker
unregisters the type or leaves. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from .._protocol.descriptions import A2ASkill
from .session import WorkerSession

__all__ = ["TypeDescriptions"]


class TypeDescriptions:
    """Each described agent type's A2A skill and the worker that described it."""

    def __init__(self) -> None:
        self._skills: dict[str, tuple[WorkerSession, A2ASkill]] = {}
        self._listeners: list[Callable[[str], None]] = []

    def a2a_skill(self, agent_type: str) -> A2ASkill | None:
        entry = self._skills.get(agent_type)
        return None if entry is None else entry[1]

    def a2a_skills(self) -> dict[str, A2ASkill]:
        """Every described type's skill, sorted by type."""
        return {agent_type: self._skills[agent_type][1] for agent_type in sorted(self._skills)}

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(agent_type)`` whenever a type's description is set, replaced or removed."""
        self._listeners.append(listener)

    def describe(self, session: WorkerSession, agent_type: str, skill: A2ASkill | None) -> None:
        """``session``, which serves ``agent_type``, offers it as ``skill`` (``None``: no longer)."""
        if skill is None:
            self.forget_type(session, agent_type)
            return
        self._skills[agent_type] = (session, skill)
        self._changed(agent_type)

    def forget_type(self, session: WorkerSession, agent_type: str) -> None:
        """``session`` no longer serves ``agent_type``: its description goes (another's stays)."""
        entry = self._skills.get(agent_type)
        if entry is not None and entry[0] is session:
            del self._skills[agent_type]
            self._changed(agent_type)

    def forget_worker(self, session: WorkerSession) -> None:
        """``session`` left: every description it gave goes."""
        for agent_type in [t for t, (owner, _) in self._skills.items() if owner is session]:
            del self._skills[agent_type]
            self._changed(agent_type)

    def _changed(self, agent_type: str) -> None:
        for listener in self._listeners:
            listener(agent_type)
