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

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Sequence

from bus.outcomes import payload_features
from bus.routing import LeastLoaded, Router

if TYPE_CHECKING:
    from bus.agent_record import AgentRecord
    from bus.broker import Broker
    from bus.task import Task

    from .network import Network

#: routing_model.MODEL_NAME, repeated here so the broker imports no numpy until a
#: model exists (routing_model and network load with the first model).
MODEL_NAME = "router"
log = logging.getLogger("orchflow.router")


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
        try:
            latest = self.memory.get("neural", f"{MODEL_NAME}/latest")
            if not isinstance(latest, (int, str)) or isinstance(latest, bool) or not latest:
                return
            version = int(latest)
            if version == self.version:
                return
            entry = self.memory.get("neural", f"{MODEL_NAME}@{version}")
            if entry is None:
                return
            model, pairs = self._validated(entry)
        except Exception as exc:  # noqa: BLE001 - any client can store a model named router
            self.stats["bad_model"] = self.stats.get("bad_model", 0) + 1
            self.model, self.pairs, self._cache = None, {}, {}
            log.error("routing model unusable, routing least-loaded: %s: %s", type(exc).__name__, exc)
            return
        self.model, self.pairs, self.version = model, pairs, version
        self._cache.clear()

    @staticmethod
    def _validated(entry: Any) -> tuple["Network", dict[str, int]]:
        """The network and the pair counts of a stored model, or ValueError: a model
        the router cannot use is refused whole, at load, not at dispatch."""
        from . import routing_model as R
        from .network import Network
        if not isinstance(entry, dict) or not isinstance(entry.get("fann"), (str, bytes)):
            raise ValueError("model entry has no 'fann' text")
        meta = entry.get("meta") or {}
        pairs = meta.get("pairs", {}) if isinstance(meta, dict) else None
        if not isinstance(pairs, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                                  for k, v in pairs.items()):
            raise ValueError("meta 'pairs' must map 'kind|agent' to counts")
        model = Network.loads(entry["fann"])
        if model.num_input != R.INPUTS or model.num_output < 1:
            raise ValueError(f"network has {model.num_input} inputs and {model.num_output} outputs, "
                             f"the router needs {R.INPUTS} and at least 1")
        return model, pairs

    def predict(self, kind: str, agent: str, features: list[float]) -> float:
        """Expected seconds to a success: predicted duration over predicted success probability."""
        key = (kind, agent, int(features[0]))
        expected = self._cache.get(key)
        if expected is None:
            from . import routing_model as R
            out = self.model.run(R.encode(kind, agent, features))
            success = min(1.0, max(float(out[1]), 0.05)) if len(out) > 1 else 1.0
            expected = R.from_target(float(out[0])) / success
            if not math.isfinite(expected):
                raise ValueError(f"model predicted {expected} for {kind!r} on {agent!r}")
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
