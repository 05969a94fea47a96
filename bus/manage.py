"""MANAGE: what people and tools ask of the broker beside running tasks.

* ``tasks``: list live and recently finished tasks (failed ones are the dead letters:
  kept for the result retention, listed here, run again with ``requeue``);
* ``purge``: cancel every queued task of a kind;
* ``requeue``: run failed, cancelled or expired tasks again, as new tasks;
* ``schedule.add`` / ``schedule.list`` / ``schedule.remove``: periodic tasks
  (bus/schedules.py).

Every op sees and touches only what the asker's identity may act for.  The broker
sends the MANAGED reply after the journal commit, so whatever an op changed is
durable before anyone hears of it.
"""

from __future__ import annotations

import heapq
from typing import Any, Iterable, Protocol

from . import protocol as P
from .auth import Principal
from .errors import ProtocolError
from .protocol import State
from .schedules import MAX_NAME_BYTES, Scheduler
from .task import Task

LIVE = "live"
SUMMARY_ERROR_BYTES = 300


class ManageHost(Protocol):
    """The broker as MANAGE sees it: a narrow interface, no private state."""

    def live_tasks(self) -> Iterable[Task]: ...

    def final_tasks(self) -> Iterable[Task]: ...

    def find_final(self, task_id: str) -> Task | None: ...

    def cancel_queued(self, task: Task, reason: str) -> None: ...

    def run_again(self, task: Task, owner: str | None) -> Task: ...


def summary(task: Task) -> dict[str, Any]:
    """A task as a listing shows it: no payload or result, which may be large or secret."""
    out = {"id": task.id, "kind": task.kind, "project": task.project, "state": task.state,
           "attempts": task.attempts, "priority": task.priority, "submitted": task.submitted,
           "finished": task.finished}
    if task.error:
        out["error"] = task.error[:SUMMARY_ERROR_BYTES]
    if task.not_before is not None and task.state == State.QUEUED:
        out["not_before"] = task.not_before
    return out


class Manager:
    def __init__(self, host: ManageHost, scheduler: Scheduler) -> None:
        self.host = host
        self.scheduler = scheduler

    def handle(self, op: str, body: dict[str, Any], who: Principal) -> Any:
        """The MANAGED ``result`` of one request; ProtocolError if it is refused."""
        return getattr(self, "_" + op.replace(".", "_"))(body, who)

    def _project_filter(self, body: dict[str, Any], who: Principal) -> str | None:
        project = P.optional_text(body, "project", P.MAX_PROJECT_BYTES)
        if project is not None and not who.may_act_for(project):
            raise ProtocolError("forbidden", f"identity {who.name!r} may act for {who.describe_projects()}, "
                                             f"not project {project!r}")
        return project

    def _tasks(self, body: dict[str, Any], who: Principal) -> list[dict[str, Any]]:
        state = body.get("state")
        if state is not None and state != LIVE and state not in State.ALL:
            raise ProtocolError("bad-field", f"field 'state' must be '{LIVE}' or one of {sorted(State.ALL)}")
        kind = P.optional_text(body, "kind", P.MAX_KIND_BYTES)
        project = self._project_filter(body, who)
        limit = P.bounded_int(body, "limit", 1, P.MAX_LIST, 100)
        pools = [self.host.live_tasks()] if state in (None, LIVE, State.QUEUED, State.RUNNING) else []
        if state is None or (state != LIVE and state in State.FINAL):
            pools.append(self.host.final_tasks())
        chosen = heapq.nlargest(limit, (task for pool in pools for task in pool
                                         if (state in (None, LIVE) or task.state == state)
                                         and (kind is None or task.kind == kind)
                                         and (project is None or task.project == project)
                                         and who.may_act_for(task.project)),
                                key=lambda task: task.submitted or 0.0)  # newest first, summaries for those only
        return [summary(task) for task in chosen]

    def _purge(self, body: dict[str, Any], who: Principal) -> dict[str, Any]:
        kind = P.checked_text(body.get("kind"), "kind", P.MAX_KIND_BYTES)
        project = self._project_filter(body, who)
        doomed = [t for t in self.host.live_tasks()
                  if t.kind == kind and t.state == State.QUEUED and t.agent is None
                  and (project is None or t.project == project) and who.may_act_for(t.project)]
        for task in doomed:
            self.host.cancel_queued(task, f"purged ({kind})")
        return {"purged": len(doomed), "ids": [t.id for t in doomed[:100]]}

    def _requeue(self, body: dict[str, Any], who: Principal) -> dict[str, Any]:
        ids = body.get("ids")  # checked against the schema with the rest of the MANAGE body
        if not ids:
            raise ProtocolError("bad-field", "field 'MANAGE.ids' is required by 'requeue'")
        done: dict[str, str] = {}
        unknown, refused = [], []
        for task_id in ids:
            task = self.host.find_final(task_id)
            if task is None:
                unknown.append(task_id)
            elif not who.may_act_for(task.project) or task.state == State.DONE:
                refused.append(task_id)
            else:
                done[task_id] = self.host.run_again(task, who.name).id
        return {"requeued": done, "unknown": unknown, "refused": refused}

    def _schedule_add(self, body: dict[str, Any], who: Principal) -> dict[str, Any]:
        project = self._project_filter(body, who) or "default"
        if not who.may_act_for(project):
            raise ProtocolError("forbidden", f"identity {who.name!r} may not act for project {project!r}")
        return self.scheduler.add(body, project, who.name).public()

    def _schedule_list(self, body: dict[str, Any], who: Principal) -> list[dict[str, Any]]:
        project = self._project_filter(body, who)
        return sorted((s.public() for s in self.scheduler.visible(who.may_act_for)
                       if project is None or s.project == project), key=lambda s: (s["project"], s["name"]))

    def _schedule_remove(self, body: dict[str, Any], who: Principal) -> dict[str, Any]:
        name = P.checked_text(body.get("name"), "name", MAX_NAME_BYTES)
        project = self._project_filter(body, who) or "default"
        return {"removed": self.scheduler.remove(name, project)}
