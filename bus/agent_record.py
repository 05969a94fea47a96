"""What the broker knows of one connected agent: its credit, what it holds, who it is.

A module of its own because the broker, the routers (bus/routing.py, neural/router.py)
and their tests all read it, and none of them should import the broker for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import protocol as P
from .auth import UNRESTRICTED_LOCAL, Principal


@dataclass(eq=False)
class AgentRecord:
    identity: bytes
    name: str
    kinds: list[str]
    capacity: int
    inflight: dict[str, float] = field(default_factory=dict)  # task id -> when it was dispatched
    expires: float = 0.0
    last_sent: float = 0.0
    joined: float = 0.0
    completed: int = 0
    failed: int = 0                 # of those completed, answered FAILED
    max_body: int = P.MAX_BODY      # the largest TASK body it takes (READY ``max_body``, 1.1)
    reports_running: bool = False   # its HEARTBEATs list what it runs: the dispatch lease (1.1)
    principal: Principal = UNRESTRICTED_LOCAL  # whose key it connected with: what it may serve
    prefetch: int = 0               # tasks it holds queued beyond capacity (READY ``prefetch``, 1.1)

    @property
    def assignee(self) -> str:
        """How the journal names it: identity and agent name, stable across restarts."""
        return f"{self.principal.name}/{self.name}"

    @property
    def free(self) -> int:
        """Credit left: tasks it may still be sent."""
        return self.capacity + self.prefetch - len(self.inflight)
