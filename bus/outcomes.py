"""Outcome records: what learned routing learns from.

Every task that reaches a final state after running on an agent leaves a record
in the shared store: its kind, features of its payload, the agent, how long it
took from dispatch to answer, and whether it succeeded.  The broker buffers them
and writes each loop turn's batch in one transaction after the journal commit,
so recording costs one LMDB write per turn, not per task.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from .protocol import pack

NAMESPACE = "routing:outcomes"
#: Outcome records expire after a week (the memory sweep removes them): routing
#: learns from recent behaviour, and the store must not grow without bound.
TTL = 7 * 24 * 3600.0


class OutcomeSink(Protocol):
    def put_many(self, namespace: str, items: list[tuple[str, Any]], ttl: float | None = None) -> None: ...


def payload_features(payload: Any) -> list[float]:
    """Cheap, generic features: encoded size and a numeric magnitude when there is one."""
    size = len(pack(payload)) if payload is not None else 0
    number = 0.0
    if isinstance(payload, (int, float)) and not isinstance(payload, bool):
        number = float(payload)
    elif isinstance(payload, dict):
        number = float(sum(v for v in payload.values() if isinstance(v, (int, float)) and not isinstance(v, bool)))
    return [round(math.log1p(size), 4), round(math.copysign(math.log1p(abs(number)), number), 4)]


class OutcomeRecorder:
    def __init__(self, sink: OutcomeSink) -> None:
        self.sink = sink
        self.pending: list[tuple[str, Any]] = []
        self.recorded = 0

    def record(self, task_id: str, kind: str, payload: Any, agent: str, seconds: float, success: bool) -> None:
        now = time.time()
        self.pending.append((f"{now:017.6f}-{task_id}", {
            "kind": kind, "features": payload_features(payload), "agent": agent, "seconds": round(seconds, 6),
            "success": success, "ts": now}))

    def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            self.sink.put_many(NAMESPACE, batch, ttl=TTL)
            self.recorded += len(batch)
