"""LearnedRouter: choose among capable agents by predicted duration, from the routing model.

Plugs into the broker's :class:`bus.routing.Router` seam.  Predictions are cached per
(kind, agent, payload-size bucket) and dropped when a new model version appears, so
the dispatch path costs a dict lookup.  It falls back to least-loaded while there is
no model, or while any capable agent has too few outcomes for the kind (the model
would be guessing; least-loaded also explores).  When the best agent for a task is
busy and every free one is predicted ``hold_factor`` times slower, it holds the task
(returns None): the broker keeps it queued until the better agent has credit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

from bus.outcomes import payload_features
from bus.routing import LeastLoaded, Router

if TYPE_CHECKING:
    from bus.broker import AgentRecord, Broker
    from bus.task import Task

    from .network import Network

#: routing_model.MODEL_NAME, repeated here so the broker imports no numpy until a
#: model exists (routing_model and network load with the first model).
MODEL_NAME = "router"


class LearnedRouter(Router):
    learns = True  # the broker schedules periodic retraining for routers that learn

    def __init__(self, memory: Any, refresh: float = 5.0, min_pair_samples: int = 5,
                 hold_factor: float = 2.0) -> None:
        self.memory = memory
        self.refresh = refresh
        self.min_pair_samples = min_pair_samples
        self.hold_factor = hold_factor
        self.fallback = LeastLoaded()
        self.broker: Broker | None = None
        self.model: Network | None = None
        self.version = 0
        self.pairs: dict[str, int] = {}
        self._cache: dict[tuple[str, str, int], float] = {}
        self._next_check = 0.0
        self.stats = {"learned": 0, "fallback": 0, "held": 0}

    def bind(self, broker: "Broker") -> None:
        self.broker = broker

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.refresh
        latest = self.memory.get("neural", f"{MODEL_NAME}/latest")
        if not latest or int(latest) == self.version:
            return
        entry = self.memory.get("neural", f"{MODEL_NAME}@{int(latest)}")
        if entry is None:
            return
        from .network import Network
        self.model = Network.loads(entry["fann"])
        self.pairs = entry.get("meta", {}).get("pairs", {})
        self.version = int(latest)
        self._cache.clear()

    def predict(self, kind: str, agent: str, features: list[float]) -> float:
        """Expected seconds to a success: predicted duration over predicted success probability."""
        key = (kind, agent, int(features[0]))
        expected = self._cache.get(key)
        if expected is None:
            from . import routing_model as R
            out = self.model.run(R.encode(kind, agent, features))
            success = min(1.0, max(float(out[1]), 0.05)) if len(out) > 1 else 1.0
            expected = R.from_target(float(out[0])) / success
            self._cache[key] = expected
        return expected

    def choose(self, task: "Task", candidates: Sequence["AgentRecord"]) -> "AgentRecord | None":
        self._maybe_reload()
        capable = self.broker.by_kind.get(task.kind, ()) if self.broker is not None else candidates
        if self.model is None or any(self.pairs.get(f"{task.kind}|{a.name}", 0) < self.min_pair_samples
                                     for a in capable):
            self.stats["fallback"] += 1
            return self.fallback.choose(task, candidates)
        features = payload_features(task.payload)
        predicted = {a.name: self.predict(task.kind, a.name, features) for a in capable}
        best_free = min(candidates, key=lambda a: predicted[a.name])
        if predicted[best_free.name] > self.hold_factor * min(predicted.values()) + 1e-4:
            self.stats["held"] += 1
            return None
        self.stats["learned"] += 1
        return best_free
