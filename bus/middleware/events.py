"""task.* events: what subscribers (``orchflow events``, the IDE, workflows' watchers)
hear of each task's life.  Bodies are built only for topics someone subscribed to."""

from __future__ import annotations

import time
from typing import Any

from ..agent_record import AgentRecord
from ..lifecycle import LifecycleHost, Middleware
from ..task import Task


class TaskEvents(Middleware):
    def attach(self, host: LifecycleHost) -> None:
        self.host = host

    def _publish(self, topic: str, task: Task, **extra: Any) -> None:
        if self.host.events_wanted(topic):
            body = {"id": task.id, "kind": task.kind, "project": task.project, "state": task.state,
                    "attempts": task.attempts, "ts": time.time()}
            body.update({k: v for k, v in extra.items() if v is not None})
            self.host.publish_event(topic, body)

    def submitted(self, task: Task) -> None:
        self._publish("task.queued", task)

    def dispatched(self, task: Task, agent: AgentRecord) -> None:
        self._publish("task.started", task, agent=agent.name)

    def retried(self, task: Task, reason: str, delay: float) -> None:
        self._publish("task.retried", task, reason=reason, delay=round(delay, 3))

    def finished(self, task: Task) -> None:
        self._publish("task." + task.state, task, error=task.error)
