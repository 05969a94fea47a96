"""The task lifecycle's named hooks, and the contract of the features that use them.

The broker loop tells the protocol's story: read, validate, stage, commit, answer,
dispatch.  What happens *around* a task's life (events, retry policy, outcome records
for learned routing, Prometheus metrics) plugs in here as a :class:`Middleware`, the
way Dramatiq's ``middleware/`` does: one file per feature under ``bus/middleware/``,
each overriding only the hooks it needs.  :class:`Hooks` keeps, per hook, just the
methods a middleware actually overrides, so an unused hook costs the loop nothing.

Hooks run in the broker's thread, inside one loop turn, and must not block: a
middleware that needs to do I/O stages it and does it in :meth:`Middleware.committed`
(after the journal commit, once per turn) or in :meth:`Middleware.tick`.
"""

from __future__ import annotations

from typing import Any, Protocol

from .agent_record import AgentRecord
from .task import Task


class LifecycleHost(Protocol):
    """What a middleware may ask of the broker: nothing more."""

    def publish_event(self, topic: str, body: dict[str, Any]) -> None: ...
    def events_wanted(self, topic: str) -> bool: ...
    def serves(self, kind: str) -> bool: ...
    def has_live(self, kind: str) -> bool: ...
    def submit_internal(self, kind: str, payload: Any, priority: int) -> Task: ...
    def status(self) -> dict[str, Any]: ...


class Middleware:
    """Override the hooks you need; the broker calls only those."""

    def attach(self, host: LifecycleHost) -> None:
        """Called once, when the broker binds, before the journal's replay (which may call hooks)."""

    def submitted(self, task: Task) -> None:
        """A new task was accepted and staged: a submission, a workflow step, a scheduled tick."""

    def dispatched(self, task: Task, agent: AgentRecord) -> None:
        """The task was given to ``agent`` (its ``attempts`` already counts this run)."""

    def answered(self, task: Task, agent: AgentRecord, ok: bool) -> None:
        """``agent``, which held the task, answered DONE (``ok``) or FAILED, before the
        broker decides what follows (finish, or retry)."""

    def failure(self, task: Task, cause: str, reason: str) -> tuple[float | None, str] | None:
        """The task failed (``cause``: ``error``, ``lost`` or ``asked`` by its handler).
        Return ``(delay, reason)`` to run it again after ``delay`` seconds, ``(None,
        error)`` to end it failed with ``error``, or ``None`` to leave the decision to
        the next middleware.  The first answer wins; with none, the task fails."""
        return None

    def retried(self, task: Task, reason: str, delay: float) -> None:
        """The task was queued again (after ``delay`` seconds) because of ``reason``."""

    def finished(self, task: Task) -> None:
        """The task reached a final state (done, failed, cancelled, expired); staged."""

    def agent_joined(self, agent: AgentRecord) -> None:
        """A new agent registered."""

    def agent_gone(self, agent: AgentRecord, reason: str, clean: bool) -> None:
        """An agent left: ``clean`` (said goodbye, nothing in flight) or lost; its
        in-flight tasks are about to be retried or failed."""

    def report(self, body: dict[str, Any]) -> None:
        """Add this feature's fields to a STATUS_REPLY body (optional fields: PROTOCOL.md)."""

    def committed(self, seconds: float, records: int) -> None:
        """The turn's journal commit took ``seconds`` for ``records`` staged records;
        the place for a middleware's own writes."""

    def tick(self, now_m: float) -> None:
        """Ten times per heartbeat interval (``time.monotonic()``)."""

    def close(self) -> None:
        """The broker is closing."""


HOOK_NAMES = ("submitted", "dispatched", "answered", "failure", "retried", "finished", "agent_joined",
              "agent_gone", "report", "committed", "tick", "close")


class Hooks:
    """Per hook, the bound methods of the middleware that override it, in order."""

    def __init__(self, middleware: list[Middleware]) -> None:
        self.middleware = list(middleware)
        for name in HOOK_NAMES:
            base = getattr(Middleware, name)
            setattr(self, name, [getattr(m, name) for m in self.middleware
                                 if getattr(type(m), name, base) is not base])

    submitted: list
    dispatched: list
    answered: list
    failure: list
    retried: list
    finished: list
    agent_joined: list
    agent_gone: list
    report: list
    committed: list
    tick: list
    close: list

    def attach(self, host: LifecycleHost) -> None:
        for m in self.middleware:
            m.attach(host)

    def decide_failure(self, task: Task, cause: str, reason: str) -> tuple[float | None, str]:
        for hook in self.failure:
            decision = hook(task, cause, reason)
            if decision is not None:
                return decision
        return None, reason

    def find(self, kind: type) -> Any:
        """The first middleware of ``kind``, or ``None`` (for status and tests)."""
        return next((m for m in self.middleware if isinstance(m, kind)), None)
