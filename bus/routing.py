"""How the broker picks an agent among those that serve a kind and have credit.

A seam for learned routing: a :class:`Router` sees the task and the candidates
(all with free credit, never empty) and returns one of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from .agent_record import AgentRecord
    from .task import Task


class Router(ABC):
    @abstractmethod
    def choose(self, task: "Task", candidates: Sequence["AgentRecord"]) -> "AgentRecord | None":
        """The agent to run ``task``; None holds it queued until more credit appears."""

    def bind(self, broker: Any) -> None:
        """Called once with the broker, for routers that look at all capable agents."""


class LeastLoaded(Router):
    """The candidate with the most free credit; ties go to the earliest listed.

    Free credit rather than in-flight count, so a capacity-8 agent with 4 running
    is preferred over an idle capacity-1 agent: it has more room.
    """

    def choose(self, task: "Task", candidates: Sequence["AgentRecord"]) -> "AgentRecord":
        best = candidates[0]
        best_free = best.capacity - len(best.inflight)
        for agent in candidates:
            free = agent.capacity - len(agent.inflight)
            if free > best_free:
                best, best_free = agent, free
        return best
