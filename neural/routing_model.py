"""The routing model: a small FANN network predicting how long a task takes on an agent.

Input: the task kind and the agent name, each hashed into a one-hot of
:data:`BUCKETS`, plus the payload features of :func:`bus.outcomes.payload_features`.
Outputs: log10 of the expected milliseconds scaled by 1/4 (1 ms -> 0, 10 s -> 1), and
the probability the task succeeds there.
Trained in the neural pool from the outcome records every finished task leaves, and
stored as model ``router`` in the registry, one version per retraining.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from .data import TrainingData
from .errors import NeuralError
from .network import LAYER, RPROP, Network

MODEL_NAME = "router"
BUCKETS = 8
INPUTS = 2 * BUCKETS + 2
OUTCOMES = "routing:outcomes"


def _bucket(text: str) -> int:
    return zlib.crc32(text.encode()) % BUCKETS


def encode(kind: str, agent: str, features: list[float]) -> np.ndarray:
    x = np.zeros(INPUTS)
    x[_bucket(kind)] = 1.0
    x[BUCKETS + _bucket(agent)] = 1.0
    x[2 * BUCKETS:] = [f / 10.0 for f in features[:2]]
    return x


def to_target(seconds: float) -> float:
    return math.log10(max(seconds, 0.0) * 1000.0 + 1.0) / 4.0


def from_target(value: float) -> float:
    return max(0.0, (10.0 ** (value * 4.0) - 1.0) / 1000.0)


OUTPUTS = 2  # duration, success


def new_model(seed: int = 0) -> Network:
    net = Network.create_standard(INPUTS, 12, OUTPUTS, seed=seed)
    net.set_activation(5, layer=1)   # sigmoid symmetric hidden layer
    net.set_activation(0, layer=2)   # linear output: a duration, not a class
    net.set(train_error_function=0)  # plain error: the TANH error function assumes outputs in -1..1
    net.randomize_weights(-0.3, 0.3, seed=seed)
    return net


def training_data(records: list[dict[str, Any]]) -> tuple[TrainingData, dict[str, int]]:
    rows = [r for r in records if isinstance(r.get("seconds"), (int, float)) and "kind" in r and "agent" in r]
    if len(rows) < 20:
        raise NeuralError(f"only {len(rows)} outcome records; need at least 20 to train the router")
    X = np.array([encode(r["kind"], r["agent"], r["features"]) for r in rows])
    Y = np.array([[to_target(r["seconds"]), 1.0 if r.get("success") else 0.0] for r in rows])
    pairs: dict[str, int] = {}
    for r in rows:
        key = f"{r['kind']}|{r['agent']}"
        pairs[key] = pairs.get(key, 0) + 1
    return TrainingData(X, Y), pairs


def train(base: Network | None, records: list[dict[str, Any]], epochs: int) -> tuple[Network, dict[str, Any]]:
    """Continue training ``base`` (incremental) or a new model on the given records."""
    data, pairs = training_data(records)
    usable = (base is not None and base.num_input == INPUTS and base.num_output == OUTPUTS
              and base.network_type == LAYER)
    net = base if usable else new_model()
    net.training_algorithm = RPROP
    net.train(data, epochs, 0.0)
    out = net.run(data.inputs)
    predicted = np.array([from_target(v) for v in out[:, 0]])
    actual = np.array([from_target(v) for v in data.outputs[:, 0]])
    mae_log = float(np.mean(np.abs(np.log10(predicted * 1000 + 1) - np.log10(actual * 1000 + 1))))
    success_accuracy = float(np.mean((out[:, 1] >= 0.5) == (data.outputs[:, 1] >= 0.5)))
    return net, {"samples": data.num_data, "pairs": pairs, "mae_log10_ms": round(mae_log, 4),
                 "median_ratio": round(float(np.median((predicted + 1e-4) / (actual + 1e-4))), 3),
                 "success_accuracy": round(success_accuracy, 4)}
