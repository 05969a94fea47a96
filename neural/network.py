"""A FANN 2.2 network in numpy: same file format, same outputs, same training steps.

Internally each non-input layer is a dense weight matrix over the contiguous range
of neurons it may read from (the previous layer for standard and sparse nets, all
earlier neurons for shortcut nets), with a mask for connections a sparse net lacks.
One matrix product per layer then serves a single input or a batch of thousands.
FANN's flat (neuron, connection) lists are kept only as the mapping used to read
and write files, so a file round-trips unchanged.

Where libfann computes with C ``float`` (its training parameters, the MSE
accumulator, batch epsilon) this code rounds to float32 at the same points: that is
what makes epoch-by-epoch MSE and weights match libfann's.

The package is split by concern as libfann's sources are: this file is fann.c
(structure, creation, parameters, weights) and fann_io.c (through neural/fannfile.py);
running is neural/inference.py, training neural/training.py (fann_train.c), scaling
neural/scaling.py, data neural/data.py (fann_train_data.c), cascade neural/cascade.py
(fann_cascade.c).  :class:`Network` is those parts assembled over one state.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import cascade, fannfile
from .activation import Activation
from .data import TrainingData
# The enumerations stay importable from here (neural/__init__.py, pool, routing_model use them).
from .definitions import (BATCH, DEFAULT_HEADER, ERROR_LINEAR, ERROR_TANH, INCREMENTAL, LAYER,  # noqa: F401
                          QUICKPROP, RPROP, SARPROP, SARPROP_DEFAULTS, SHORTCUT, STOP_BIT, STOP_MSE, Layer, _f32, f32)
from .errors import NeuralError
from .inference import Inference
from .scaling import Scaling
from .training import Training

__all__ = ["BATCH", "ERROR_LINEAR", "ERROR_TANH", "INCREMENTAL", "LAYER", "QUICKPROP", "RPROP", "SARPROP",
           "SHORTCUT", "STOP_BIT", "STOP_MSE", "Network"]


class Network(Inference, Training, Scaling):
    """See the module docstring; construct with :meth:`create_standard`, :meth:`load`, ..."""

    def __init__(self, ff: fannfile.FannFile) -> None:
        self.header = dict(ff.header)
        # libfann keeps scaling parameters in C float arrays
        self.scale = {k: [f32(v) for v in vals] for k, vals in ff.scale.items()}
        self.params = dict(SARPROP_DEFAULTS)
        self.sizes: list[int] = list(self.header["layer_sizes"])
        self.network_type = int(self.header["network_type"])
        self.connection_rate = float(self.header["connection_rate"])
        self.total = sum(self.sizes)
        firsts = np.cumsum([0] + self.sizes[:-1])
        self.first = [int(f) for f in firsts]
        self.num_input = self.sizes[0] - 1
        has_bias = [True] + [self.network_type == LAYER] * (len(self.sizes) - 1)
        self.bias_cols = [self.first[i] + self.sizes[i] - 1 for i in range(len(self.sizes)) if has_bias[i]]
        self.num_output = self.sizes[-1] - (1 if has_bias[-1] else 0)
        neurons = ff.neurons
        offsets = np.cumsum([0] + [n for n, _, _ in neurons])
        self._conn_src = np.array([c for c, _ in ff.connections], dtype=np.int64)
        weights = np.array([w for _, w in ff.connections], dtype=np.float64)
        self._conn_layer = np.empty(len(weights), dtype=np.int64)
        self._conn_row = np.empty(len(weights), dtype=np.int64)
        self._conn_col = np.empty(len(weights), dtype=np.int64)
        self._neuron_meta = [(a, s) for _, a, s in neurons]
        self.layers: list[Layer] = []
        for li in range(1, len(self.sizes)):
            n0 = self.first[li]
            n1 = n0 + self.sizes[li] - (1 if has_bias[li] else 0)
            if any(neurons[n][0] == 0 for n in range(n0, n1)):
                raise NeuralError(f"layer {li} has a neuron without inputs where one is computed")
            c0, c1 = int(offsets[n0]), int(offsets[n1])
            srcs = self._conn_src[c0:c1]
            if len(srcs) == 0 or srcs.max() >= n0:
                raise NeuralError(f"layer {li}: a connection reads a neuron that is not before it")
            s0 = self.first[li - 1] if self.network_type == LAYER else 0
            s0 = min(s0, int(srcs.min()))
            s1 = n0
            W = np.zeros((n1 - n0, s1 - s0))
            mask = np.zeros(W.shape, dtype=bool)
            for n in range(n0, n1):
                for c in range(int(offsets[n]), int(offsets[n + 1])):
                    row, col = n - n0, int(self._conn_src[c]) - s0
                    if mask[row, col]:
                        raise NeuralError(f"neuron {n} is connected to neuron {col + s0} twice")
                    W[row, col] = weights[c]
                    mask[row, col] = True
                    self._conn_layer[c], self._conn_row[c], self._conn_col[c] = li - 1, row, col
            act = np.array([neurons[n][1] for n in range(n0, n1)], dtype=np.int64)
            steep = np.array([neurons[n][2] for n in range(n0, n1)], dtype=np.float64)
            self.layers.append(Layer(n0, n1, s0, s1, W, None if mask.all() else mask, act, steep))
        self._offsets = offsets
        self._plan = None
        self._infer = None
        self.reset_training()

    # ------------------------------------------------------------------ construction

    @classmethod
    def _build(cls, sizes: list[int], network_type: int, connection_rate: float, rng: np.random.Generator,
               **header: Any) -> "Network":
        if len(sizes) < 2 or any(int(s) <= 0 for s in sizes):
            raise NeuralError(f"layer sizes must be >= 2 positive integers, got {sizes}")
        h = dict(DEFAULT_HEADER, **header)
        bias = network_type == LAYER
        layer_sizes = [sizes[0] + 1] + [s + (1 if bias else 0) for s in sizes[1:]]
        h.update(num_layers=len(sizes), layer_sizes=layer_sizes, network_type=network_type,
                 connection_rate=connection_rate)
        neurons, connections = [], []
        first = np.cumsum([0] + layer_sizes[:-1])
        for li, size in enumerate(layer_sizes):
            computed = size - (1 if (li == 0 or bias) else 0)
            for k in range(size):
                if li == 0 or k >= computed:
                    neurons.append((0, 0, 0.0))
                    continue
                if network_type == SHORTCUT:
                    srcs = list(range(int(first[li])))
                else:
                    prev = list(range(int(first[li - 1]), int(first[li - 1] + layer_sizes[li - 1])))
                    srcs = prev
                    if connection_rate < 1:
                        keep = max(1, int(round(connection_rate * len(prev))))
                        srcs = sorted(rng.choice(prev[:-1], size=min(keep, len(prev) - 1), replace=False).tolist())
                        srcs.append(prev[-1])  # always keep the bias
                neurons.append((len(srcs), int(Activation.SIGMOID_STEPWISE), 0.5))
                connections.extend((s, float(rng.uniform(-0.1, 0.1))) for s in srcs)
        return cls(fannfile.FannFile(h, neurons, connections))

    @classmethod
    def create_standard(cls, *layers: int, seed: int | None = None) -> "Network":
        return cls._build(list(layers), LAYER, 1.0, np.random.default_rng(seed))

    @classmethod
    def create_sparse(cls, connection_rate: float, *layers: int, seed: int | None = None) -> "Network":
        if not 0 < connection_rate <= 1:
            raise NeuralError("connection_rate must be in (0, 1]")
        return cls._build(list(layers), LAYER, float(connection_rate), np.random.default_rng(seed))

    @classmethod
    def create_shortcut(cls, *layers: int, seed: int | None = None) -> "Network":
        return cls._build(list(layers), SHORTCUT, 1.0, np.random.default_rng(seed))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Network":
        with open(path, encoding="ascii", errors="strict") as f:
            return cls(fannfile.parse(f.read()))

    @classmethod
    def loads(cls, text: str) -> "Network":
        return cls(fannfile.parse(text))

    def to_fann(self) -> fannfile.FannFile:
        neurons = []
        for n in range(self.total):
            count = int(self._offsets[n + 1] - self._offsets[n])
            act, steep = self._neuron_meta[n]
            neurons.append((count, int(act), float(steep)))
        for layer in self.layers:  # activation/steepness may have been changed by setters
            for k, n in enumerate(range(layer.n0, layer.n1)):
                neurons[n] = (neurons[n][0], int(layer.act[k]), float(layer.steep[k]))
        weights = [float(self.layers[li].W[r, c]) for li, r, c in zip(self._conn_layer, self._conn_row, self._conn_col)]
        return fannfile.FannFile(self.header, neurons, list(zip(self._conn_src.tolist(), weights)), self.scale)

    def save(self, path: str | os.PathLike) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(fannfile.render(self.to_fann()))
        os.replace(tmp, path)

    def dumps(self) -> str:
        return fannfile.render(self.to_fann())

    # ------------------------------------------------------------------ parameters

    @property
    def training_algorithm(self) -> int:
        return int(self.header["training_algorithm"])

    @training_algorithm.setter
    def training_algorithm(self, value: int) -> None:
        self.header["training_algorithm"] = int(value)
        self.reset_training()

    def set(self, **params: Any) -> None:
        """Set header parameters by FANN name (learning_rate=..., rprop_delta_max=..., ...)."""
        for key, value in params.items():
            if key in self.params:
                self.params[key] = value
            elif key in self.header and key not in ("layer_sizes", "num_layers", "network_type", "connection_rate"):
                self.header[key] = value
            else:
                raise NeuralError(f"unknown or read-only parameter {key!r}")

    def set_activation(self, function: int, layer: int | None = None, neuron: int | None = None,
                       steepness: float | None = None) -> None:
        """Per network (layer=None), per layer, or per neuron; layer 1 is the first hidden layer."""
        targets = self.layers if layer is None else [self._layer(layer)]
        for lay in targets:
            idx = slice(None) if neuron is None else neuron
            lay.act[idx] = int(function)
            if steepness is not None:
                lay.steep[idx] = steepness
        self.changed()

    def set_steepness(self, steepness: float, layer: int | None = None, neuron: int | None = None) -> None:
        targets = self.layers if layer is None else [self._layer(layer)]
        for lay in targets:
            lay.steep[slice(None) if neuron is None else neuron] = steepness
        self.changed()

    def __getstate__(self) -> dict[str, Any]:
        """All but the per-thread run buffers (threading.local does not pickle; they
        are rebuilt on demand), so networks copy and pickle as before."""
        state = self.__dict__.copy()
        state.pop("_workspace", None)
        return state

    def changed(self) -> None:
        """Weights, activations or steepnesses changed: drop what was derived from them."""
        self._plan = None
        self._infer = None
        for lay in self.layers:
            lay._groups = None

    def _layer(self, layer: int) -> Layer:
        if not 1 <= layer <= len(self.layers):
            raise NeuralError(f"layer {layer} out of range 1..{len(self.layers)}")
        return self.layers[layer - 1]

    @property
    def weights(self) -> np.ndarray:
        """All weights in FANN's connection order."""
        return np.array([self.layers[li].W[r, c] for li, r, c in zip(self._conn_layer, self._conn_row, self._conn_col)])

    def fann_rand(self, low: float, high: float) -> float:
        """FANN's fann_rand macro, in C float arithmetic, from the glibc rand() replica."""
        lo, hi = _f32(low), _f32(high)
        return float(lo + _f32(_f32(hi - lo) * _f32(self.glibc_rand.rand())) / _f32(2147483648.0))

    def _set_weights_in_order(self, values: list[float]) -> None:
        for value, li, r, c in zip(values, self._conn_layer, self._conn_row, self._conn_col):
            self.layers[li].W[r, c] = value
        self.changed()
        self.reset_training()

    def randomize_weights(self, low: float = -0.1, high: float = 0.1, seed: int | None = None) -> None:
        """fann_randomize_weights: uniform in [low, high) in FANN's connection order.

        With ``seed`` the draws come from glibc's rand() after srand(seed), so the
        weights equal libfann's after ``srand(seed); fann_randomize_weights(...)``.
        """
        if seed is not None:
            self.seed_rand(seed)
        self._set_weights_in_order([self.fann_rand(low, high) for _ in range(len(self._conn_src))])

    def init_weights(self, data: TrainingData, seed: int | None = None) -> None:
        """fann_init_weights (Widrow + Nguyen): bias connections in +-s, others in [0, s),
        s = (0.7 * hidden)^(1/inputs) / (largest - smallest input)."""
        self.check_data(data)
        if seed is not None:
            self.seed_rand(seed)
        smallest, largest = float(data.inputs.min()), float(data.inputs.max())
        hidden = self.total - (self.num_input + self.num_output + len(self.sizes))
        scale = float(_f32((0.7 * hidden) ** (1.0 / self.num_input) / (largest - smallest)))
        bias_of = {}
        for li in range(1, len(self.sizes)):
            prev = li - 1 if self.network_type == LAYER else 0
            bias_of[li - 1] = self.first[prev] + self.sizes[prev] - 1
        values = [self.fann_rand(-scale, scale) if src == bias_of[li] else self.fann_rand(0.0, scale)
                  for src, li in zip(self._conn_src.tolist(), self._conn_layer.tolist())]
        self._set_weights_in_order(values)

    def _output_cols(self) -> slice:
        last = self.layers[-1]
        return slice(last.n0, last.n0 + self.num_output)

    # ------------------------------------------------------------------ cascade

    def rebuild(self, ff: fannfile.FannFile) -> None:
        """Take a new structure (cascade installed a neuron), keeping parameters and rand() state."""
        params, glibc, epoch = self.params, getattr(self, "_glibc", None), self.sarprop_epoch
        self.__dict__.update(Network(ff).__dict__)
        self.params, self.sarprop_epoch = params, epoch
        if glibc is not None:
            self._glibc = glibc

    def cascade_train(self, data: TrainingData, max_neurons: int, desired_error: float = 0.0,
                      callback: Any = None) -> float:
        """Cascade2 (fann_cascadetrain_on_data) on a shortcut network; returns the final MSE."""
        return cascade.cascade_train(self, data, max_neurons, desired_error, callback)
