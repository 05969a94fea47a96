"""Workflows: DAGs of tasks the broker runs under a strategy, durably.

A workflow is held by the broker as a task record of kind ``workflow`` (so RESULT,
FETCH, STATUS, CANCEL and the journal all apply to it unchanged) plus a
:class:`Workflow` with the step states.  Each step runs as an ordinary task with id
``<workflow>/<step>`` (``#2``, ``#3`` ... for re-runs after a failure); its TASK entry
carries ``parents``: the results of its dependencies.  The workflow record is
journaled at every step transition, in the same group commit as the step's own
task record, so a broker restarted from its journal resumes exactly where it was.

Strategies: ``parallel`` submits every ready step; ``sequential`` one step at a time
in topological order; ``adaptive`` lets as many ready steps run as there is free
credit on agents able to run them (no queue built up behind busy agents).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from . import retry as retry_policy
from .protocol import State, StepSpec, TaskSpec, WorkflowSpec
from .journal import Journal
from .task import Task


class WorkflowHost(Protocol):
    """What the workflow engine needs of the broker: a narrow interface, none of its
    internals, so the two never import each other."""

    tasks: dict[str, Task]
    journal: Journal

    def queue_step(self, task: Task) -> None:
        """Journal a step's task, queue it, publish task.queued."""

    def finish_task(self, task: Task, state: str, result: Any = None, error: str | None = None) -> None: ...

    def free_credit(self, kinds: set[str]) -> int:
        """Credit left across the agents serving any of ``kinds``."""

    def count(self, counter: str) -> None: ...

    def publish_event(self, topic: str, body: dict[str, Any]) -> None: ...

PENDING, ACTIVE = "pending", "active"
WORKFLOW_KIND = "workflow"


class Workflow:
    def __init__(self, spec: WorkflowSpec, record: Task) -> None:
        self.spec = spec
        self.record = record
        self.state: dict[str, str] = {name: PENDING for name in spec.order}
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.runs: dict[str, int] = {name: 0 for name in spec.order}
        self.task_of: dict[str, str] = {}

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        spec = self.spec
        steps = [{"name": s.name, "kind": s.task.kind, "payload": s.task.payload, "deps": s.deps,
                  "priority": s.task.priority, "max_retries": s.task.max_retries, "retries": s.retries,
                  "retry": s.task.retry.to_field()}
                 for s in (spec.steps[n] for n in spec.order)]
        return {"strategy": spec.strategy, "steps": steps, "state": self.state, "results": self.results,
                "errors": self.errors, "runs": self.runs, "task_of": self.task_of}

    @classmethod
    def restore(cls, record: Task) -> "Workflow":
        snap = record.payload
        steps = {}
        for s in snap["steps"]:
            task = TaskSpec(None, s["kind"], s["payload"], record.project, s["priority"], None, s["max_retries"],
                            retry=retry_policy.from_field(s.get("retry"), s["max_retries"]))
            steps[s["name"]] = StepSpec(s["name"], task, list(s["deps"]), s["retries"])
        spec = WorkflowSpec(record.id, snap["strategy"], record.project, steps, [s["name"] for s in snap["steps"]])
        wf = cls(spec, record)
        wf.state.update(snap["state"])
        wf.results.update(snap["results"])
        wf.errors.update(snap["errors"])
        wf.runs.update(snap["runs"])
        wf.task_of.update(snap["task_of"])
        return wf

    def public(self) -> dict[str, Any]:
        return {"state": self.record.state, "strategy": self.spec.strategy, "steps": dict(self.state)}


class WorkflowEngine:
    """The broker's part that creates, advances, finishes and restores workflows."""

    def __init__(self, host: WorkflowHost) -> None:
        self.host = host
        self.workflows: dict[str, Workflow] = {}
        self.step_of: dict[str, tuple[Workflow, str]] = {}

    def create(self, spec: WorkflowSpec, wf_id: str, identity: bytes, owner: str | None = None) -> Workflow:
        record = Task(wf_id, WORKFLOW_KIND, None, spec.project, 5, None, 0, time.time())
        record.owner = owner
        record.state = State.RUNNING
        record.watchers.append(identity)
        wf = Workflow(spec, record)
        self.workflows[wf_id] = wf
        self.host.tasks[wf_id] = record
        self.host.count("workflows")
        self.host.publish_event("workflow.started", {"id": wf_id, "strategy": spec.strategy,
                                                         "steps": len(spec.order), "project": spec.project})
        self.advance(wf)
        return wf

    def _save(self, wf: Workflow) -> None:
        wf.record.payload = wf.snapshot()
        self.host.journal.write(wf.record)

    def _step_event(self, wf: Workflow, name: str, state: str, **extra: Any) -> None:
        self.host.publish_event("workflow.step", {"id": wf.record.id, "step": name, "state": state, **extra})

    def _capacity_for(self, kinds: set[str]) -> int:
        return self.host.free_credit(kinds)

    def advance(self, wf: Workflow) -> None:
        """Fail steps whose dependencies failed, start ready steps per the strategy, finish if all final."""
        changed = True
        while changed:  # propagate failures transitively
            changed = False
            for name in wf.spec.order:
                if wf.state[name] != PENDING:
                    continue
                failed = [d for d in wf.spec.steps[name].deps if wf.state[d] in (State.FAILED, State.CANCELLED)]
                if failed:
                    cause = wf.errors.get(failed[0], wf.state[failed[0]])
                    wf.state[name] = State.FAILED
                    wf.errors[name] = f"dependency {failed[0]!r} {wf.state[failed[0]]}: {cause}"
                    self._step_event(wf, name, State.FAILED, error=wf.errors[name])
                    changed = True
        ready = [n for n in wf.spec.order if wf.state[n] == PENDING
                 and all(wf.state[d] == State.DONE for d in wf.spec.steps[n].deps)]
        active = sum(1 for s in wf.state.values() if s == ACTIVE)
        if wf.spec.strategy == "sequential":
            ready = ready[:1] if active == 0 else []
        elif wf.spec.strategy == "adaptive" and ready:
            room = max(1, self._capacity_for({wf.spec.steps[n].task.kind for n in ready})) - active
            ready = ready[:max(room, 1 if active == 0 else 0)]
        for name in ready:
            self._start_step(wf, name)
        if all(s in State.FINAL for s in wf.state.values()):
            self._finish(wf)
        else:
            self._save(wf)

    def _start_step(self, wf: Workflow, name: str) -> None:
        step = wf.spec.steps[name]
        wf.runs[name] += 1
        task_id = f"{wf.record.id}/{name}" + (f"#{wf.runs[name]}" if wf.runs[name] > 1 else "")
        task = Task.from_spec(step.task, task_id, time.time())
        task.project = wf.spec.project
        task.owner = wf.record.owner
        task.parents = {d: wf.results.get(d) for d in step.deps}
        wf.state[name] = ACTIVE
        wf.task_of[name] = task_id
        self.step_of[task_id] = (wf, name)
        self.host.queue_step(task)
        self._step_event(wf, name, "started", task=task_id)

    def on_task_final(self, task: Task) -> None:
        """Called by the broker whenever a task reaches a final state."""
        hit = self.step_of.pop(task.id, None)
        if hit is None:
            return
        wf, name = hit
        if wf.record.state in State.FINAL or wf.state.get(name) != ACTIVE:
            return
        if task.state == State.DONE:
            wf.state[name] = State.DONE
            wf.results[name] = task.result
        elif task.state != State.CANCELLED and wf.runs[name] <= wf.spec.steps[name].retries:
            wf.state[name] = PENDING  # re-run per the step's retry policy; "retrying" says so
            self._step_event(wf, name, "retrying", error=task.error)
        else:
            wf.state[name] = task.state
            wf.errors[name] = task.error or task.state
            self._step_event(wf, name, wf.state[name])
        self.advance(wf)

    def cancel(self, wf: Workflow) -> None:
        """Pending steps first, then the running ones: cancelling a running step advances
        the workflow at once, and a dependent still pending then would fail ('dependency
        cancelled') and turn the whole workflow 'failed' depending on step order."""
        for name, state in wf.state.items():
            if state == PENDING:
                wf.state[name] = State.CANCELLED
        for name in [n for n, state in wf.state.items() if state == ACTIVE]:
            task = self.host.tasks.get(wf.task_of.get(name, ""))
            if task is not None:
                self.host.finish_task(task, State.CANCELLED, error="workflow cancelled")

    def _finish(self, wf: Workflow) -> None:
        self.workflows.pop(wf.record.id, None)
        wf.record.payload = wf.snapshot()
        failed = [n for n in wf.spec.order if wf.state[n] != State.DONE]
        if not failed:
            self.host.finish_task(wf.record, State.DONE, result=dict(wf.results))
        else:
            state = State.CANCELLED if all(wf.state[n] == State.CANCELLED for n in failed) else State.FAILED
            first = next((n for n in failed if wf.state[n] != State.CANCELLED), failed[0])
            self.host.finish_task(wf.record, state, result=dict(wf.results),
                                error=f"step {first!r} {wf.state[first]}: {wf.errors.get(first, '')}")
        self.host.publish_event(f"workflow.{wf.record.state}", {"id": wf.record.id, "steps": dict(wf.state)})

    def forget(self, wf_id: str) -> None:
        """Drop a workflow whose restore failed part way (its record is quarantined)."""
        self.workflows.pop(wf_id, None)
        for task_id in [t for t, (wf, _) in self.step_of.items() if wf.record.id == wf_id]:
            del self.step_of[task_id]

    def restore(self, record: Task) -> None:
        """After a restart: rebuild the workflow, reconcile its steps with their task records."""
        wf = Workflow.restore(record)
        record.state = State.RUNNING
        self.workflows[record.id] = wf
        self.host.tasks[record.id] = record
        for name, state in wf.state.items():
            if state != ACTIVE:
                continue
            task_id = wf.task_of[name]
            live = self.host.tasks.get(task_id)
            if live is not None:  # replayed and queued again
                self.step_of[task_id] = (wf, name)
                continue
            rec = self.host.journal.lookup(task_id)
            if rec is not None and rec.get("state") in State.FINAL:
                self.step_of[task_id] = (wf, name)
                self.on_task_final(Task.from_record(rec))
            else:  # never made it to the journal: start it again
                wf.state[name] = PENDING
        if wf.record.state not in State.FINAL:
            self.advance(wf)
