"""Learned routing's half of the task life: an outcome record per task an agent
answered (bus/outcomes.py writes them, one transaction per loop turn, after the
journal commit), and a periodic ``neural.train_router`` task that retrains the
routing model from them when enough new ones arrived and an agent serves it."""

from __future__ import annotations

import time

from ..agent_record import AgentRecord
from ..lifecycle import LifecycleHost, Middleware
from ..outcomes import OutcomeRecorder
from ..task import Task

RETRAIN_KIND = "neural.train_router"


class OutcomeRecording(Middleware):
    def __init__(self, recorder: OutcomeRecorder, retrain_interval: float = 30.0, retrain_min_outcomes: int = 50,
                 learns: bool = False) -> None:
        self.recorder = recorder
        self.retrain_interval = retrain_interval
        self.retrain_min_outcomes = retrain_min_outcomes
        self.learns = learns  # whether the router uses what is recorded (else no retraining)
        self._dispatched: dict[str, tuple[float, str]] = {}  # task id -> (dispatch time, agent name)
        self._trained_at = 0
        self._next_retrain = time.monotonic() + retrain_interval

    def attach(self, host: LifecycleHost) -> None:
        self.host = host

    def dispatched(self, task: Task, agent: AgentRecord) -> None:
        self._dispatched[task.id] = (time.monotonic(), agent.name)

    def answered(self, task: Task, agent: AgentRecord, ok: bool) -> None:
        started = self._dispatched.pop(task.id, None)
        if started is not None:
            self.recorder.record(task.id, task.kind, task.payload, started[1], time.monotonic() - started[0], ok)

    def agent_gone(self, agent: AgentRecord, reason: str, clean: bool) -> None:
        for task_id in agent.inflight:  # a lost agent's tasks teach nothing
            self._dispatched.pop(task_id, None)

    def finished(self, task: Task) -> None:
        self._dispatched.pop(task.id, None)  # cancelled or expired while running

    def committed(self, seconds: float, records: int) -> None:
        self.recorder.flush()

    def tick(self, now_m: float) -> None:
        if not self.learns or now_m < self._next_retrain:
            return
        self._next_retrain = now_m + self.retrain_interval
        fresh = self.recorder.recorded - self._trained_at
        if fresh < self.retrain_min_outcomes or not self.host.serves(RETRAIN_KIND) or self.host.has_live(RETRAIN_KIND):
            return
        self._trained_at = self.recorder.recorded
        self.host.submit_internal(RETRAIN_KIND, {"epochs": 200, "max_records": 5000}, 3)
